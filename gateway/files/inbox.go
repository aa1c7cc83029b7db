package files

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// The inbox is a folder with one sub-folder per program code. A file
// dropped in inbox/<program>/ is taken once its size and modification time
// have stayed the same for one poll (so that a file still being written is
// left alone), stored as a batch, validated, and moved to
// inbox/<program>/done/ or, when it cannot be read at all, to
// inbox/<program>/failed/ with a note beside it saying why. A valid batch
// that needs no approval is then posted.
//
// File-name conventions: a name containing ".latin1." (or ".latin-1.",
// ".iso-8859-1.") declares Latin-1, ".cp1252." declares Windows-1252;
// otherwise UTF-8. Dates in inbox files are ISO 8601. Names starting with a
// dot or ending in .part or .tmp are ignored.

type fileState struct {
	size int64
	mod  time.Time
}

// RunInbox watches the inbox until ctx ends. It makes the inbox folder if
// there is none, so that whoever drops the first file finds it.
func (s *Service) RunInbox(ctx context.Context) {
	if err := os.MkdirAll(s.opt.InboxDir, 0o750); err != nil {
		s.log.Warn("Inbox not created", "dir", s.opt.InboxDir, "error", err)
	}
	seen := map[string]fileState{}
	t := time.NewTicker(s.opt.InboxPoll)
	defer t.Stop()
	for {
		s.pollInbox(ctx, seen)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollInbox looks at the inbox once: it takes the files that have not
// changed since the previous look recorded in seen, and records the others.
func (s *Service) pollInbox(ctx context.Context, seen map[string]fileState) {
	programs, err := os.ReadDir(s.opt.InboxDir)
	if err != nil {
		if !os.IsNotExist(err) {
			s.log.Warn("Inbox unreadable", "dir", s.opt.InboxDir, "error", err)
		}
		return
	}
	for _, p := range programs {
		if !p.IsDir() || strings.HasPrefix(p.Name(), ".") {
			continue
		}
		dir := filepath.Join(s.opt.InboxDir, p.Name())
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if !e.Type().IsRegular() || strings.HasPrefix(name, ".") ||
				strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".tmp") {
				continue
			}
			path := filepath.Join(dir, name)
			info, err := e.Info()
			if err != nil {
				continue
			}
			now := fileState{size: info.Size(), mod: info.ModTime()}
			if prev, ok := seen[path]; !ok || prev != now {
				seen[path] = now
				continue
			}
			delete(seen, path)
			if ctx.Err() != nil {
				return
			}
			s.takeInboxFile(ctx, p.Name(), dir, name)
		}
	}
}

// inboxCharset reads the charset a file name declares.
func inboxCharset(name string) string {
	n := strings.ToLower(name)
	for _, tag := range []string{".latin1.", ".latin-1.", ".iso-8859-1."} {
		if strings.Contains(n, tag) {
			return Latin1
		}
	}
	if strings.Contains(n, ".cp1252.") {
		return Windows1252
	}
	return UTF8
}

func (s *Service) takeInboxFile(ctx context.Context, program, dir, name string) {
	path := filepath.Join(dir, name)
	log := s.log.With("file", path, "program", program)
	f, err := os.Open(path)
	if err != nil {
		log.Warn("Inbox file unreadable", "error", err)
		return
	}
	format, _ := ParseFormat(inboxCharset(name), "")
	b, created, err := s.Receive(ctx, Intake{Program: program, FileName: name, Format: format,
		UploadedBy: "inbox", Channel: "inbox"}, f)
	f.Close()
	if err != nil {
		if de, ok := core.AsError(err); ok {
			log.Warn("Inbox file refused", "error", de.Error())
			s.moveInbox(dir, name, "failed", de.Error())
		} else {
			// Our fault (database down): left in place for the next poll.
			log.Error("Inbox file not taken", "error", err)
		}
		return
	}
	if !created {
		log.Info("Inbox file is a batch already received", "batch_id", b.ID)
		s.moveInbox(dir, name, "done", "")
		return
	}
	if !s.claim("validate:" + b.ID) {
		return
	}
	v, err := s.Validate(ctx, b)
	s.release("validate:" + b.ID)
	if err != nil {
		// The batch stays received or validating; Resume takes it again.
		log.Error("Inbox batch not validated", "batch_id", b.ID, "error", err)
		s.moveInbox(dir, name, "done", "")
		return
	}
	if v.Status == core.BatchFailed {
		s.moveInbox(dir, name, "failed", v.Error)
		return
	}
	s.moveInbox(dir, name, "done", "")
	if v.NeedsApproval {
		log.Info("Inbox batch awaits approval", "batch_id", b.ID)
		return
	}
	s.start("post", v, func(ctx context.Context) error {
		_, err := s.Post(ctx, v, "inbox")
		return err
	})
}

// moveInbox moves a taken file to the done or failed sub-folder, with a
// note beside a failed one. A name already there gets a time suffix.
func (s *Service) moveInbox(dir, name, to, note string) {
	dest := filepath.Join(dir, to)
	if err := os.MkdirAll(dest, 0o750); err != nil {
		s.log.Error("Inbox folder not made", "dir", dest, "error", err)
		return
	}
	target := filepath.Join(dest, name)
	if _, err := os.Stat(target); err == nil {
		target = fmt.Sprintf("%s.%s", target, s.now().UTC().Format("20060102T150405.000"))
	}
	if err := os.Rename(filepath.Join(dir, name), target); err != nil {
		s.log.Error("Inbox file not moved", "file", name, "error", err)
		return
	}
	if note != "" {
		_ = os.WriteFile(target+".error.txt", []byte(note+"\n"), 0o640)
	}
}
