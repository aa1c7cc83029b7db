package files

import (
	"context"
	"errors"
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
// left alone), and, when its last line has no line end, for InboxQuiet (a
// writer paused inside a line). Taking it first moves it to inbox/<program>/working/, so
// that the file read is the file moved on, whatever is dropped under its
// name meanwhile (a new file of that name is another file, taken by a later
// poll). From there it is stored as a batch, validated, and moved to
// inbox/<program>/done/ or, when it cannot be read at all, to
// inbox/<program>/failed/ with a note beside it saying why. A valid batch
// that needs no approval is then posted. A file left in working/ (the
// process stopped, or the database failed) is taken again by the next poll:
// the same bytes are the same batch, which goes on where it stopped.
//
// File-name conventions: a name containing ".latin1." (or ".latin-1.",
// ".iso-8859-1.") declares Latin-1, ".cp1252." declares Windows-1252;
// otherwise UTF-8. Dates in inbox files are ISO 8601. Names starting with a
// dot or ending in .part or .tmp are ignored.

// workingDir is the sub-folder of a program's inbox folder where the files
// being taken are.
const workingDir = "working"

type fileState struct {
	size int64
	mod  time.Time
	// since is when the file was first seen with this size and time, and
	// told whether the log said it waits for its last line end.
	since time.Time
	told  bool
}

// same reports whether two looks at a file found it unchanged.
func (a fileState) same(b fileState) bool {
	return a.size == b.size && a.mod.Equal(b.mod)
}

// watchedFile is a file moved to done/, as it was then, watched until.
type watchedFile struct {
	state fileState
	until time.Time
}

// inboxWatch is how long a file moved to done/ is watched for growth: a
// writer that paused at a line end for longer than a poll and goes on
// within it has the whole file taken again.
const inboxWatch = 10 * time.Minute

// watchDone looks once at the files moved to done/ lately: one that
// changed since goes back to the inbox, where it is taken again whole as a
// new batch (its lines loaded already are replays).
func (s *Service) watchDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for path, w := range s.doneWatch {
		info, err := os.Stat(path)
		switch {
		case err != nil || now.After(w.until):
			delete(s.doneWatch, path)
		case info.Size() != w.state.size || !info.ModTime().Equal(w.state.mod):
			delete(s.doneWatch, path)
			done := filepath.Dir(path)
			s.log.Warn("Inbox file written to after it was loaded: back in the inbox, to be "+
				"taken again whole (lines loaded already are replays)", "file", path,
				"size_bytes_loaded", w.state.size, "size_bytes_now", info.Size())
			s.putBack(done, filepath.Dir(done), filepath.Base(path))
		}
	}
}

// errChanged refuses an inbox file that changed while it was read.
var errChanged = errors.New("the file changed while it was read")

// endsLine reports whether the file's last byte ends a line: a file cut
// short while it is written most often ends inside a line, and a line cut
// there reads as another line (1500 points read as 15).
func endsLine(path string, size int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], size-1); err != nil {
		return false
	}
	return b[0] == '\n' || b[0] == '\r'
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
	s.watchDone()
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
		// Files taken before and not finished: the process stopped, or the
		// database failed.
		if left, err := os.ReadDir(filepath.Join(dir, workingDir)); err == nil {
			for _, e := range left {
				if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
					continue
				}
				if ctx.Err() != nil {
					return
				}
				s.takeWorkingFile(ctx, p.Name(), dir, e.Name())
			}
		}
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
			now := fileState{size: info.Size(), mod: info.ModTime(), since: time.Now()}
			prev, ok := seen[path]
			if !ok || !prev.same(now) {
				seen[path] = now
				continue
			}
			// Unchanged for a poll, but its last line has no line end: a
			// writer that paused mid-line. Such a file is taken only once
			// it has stayed so for InboxQuiet.
			if now.size > 0 && !endsLine(path, now.size) &&
				now.since.Sub(prev.since) < s.opt.InboxQuiet {
				if !prev.told {
					prev.told = true
					seen[path] = prev
					s.log.Info("Inbox file waits for the line end of its last line",
						"file", path, "taken_after", s.opt.InboxQuiet)
				}
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

// takeInboxFile takes the file name of the program's inbox folder dir: it
// moves it to the working sub-folder, then loads it from there.
func (s *Service) takeInboxFile(ctx context.Context, program, dir, name string) {
	work := filepath.Join(dir, workingDir)
	if err := os.MkdirAll(work, 0o750); err != nil {
		s.log.Error("Inbox folder not made", "dir", work, "error", err)
		return
	}
	target := s.freeName(work, name)
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(work, target)); err != nil {
		if !os.IsNotExist(err) { // gone: taken by another process, or removed
			s.log.Error("Inbox file not taken", "file", filepath.Join(dir, name),
				"error", err)
		}
		return
	}
	s.takeWorkingFile(ctx, program, dir, target)
}

// takeWorkingFile loads the file name of the working sub-folder of the
// program's inbox folder dir, and moves it to done/ or failed/ when its
// batch is validated (or refused); when the database failed, it is left
// where it is for the next poll.
func (s *Service) takeWorkingFile(ctx context.Context, program, dir, name string) {
	work := filepath.Join(dir, workingDir)
	path := filepath.Join(work, name)
	log := s.log.With("file", path, "program", program)
	f, err := os.Open(path)
	if err != nil {
		log.Warn("Inbox file unreadable", "error", err)
		return
	}
	read, err := f.Stat()
	if err != nil {
		f.Close()
		log.Warn("Inbox file unreadable", "error", err)
		return
	}
	// A writer still at it (one that paused longer than a poll) changes the
	// file as it is read, or after: either way what was read is not the
	// file, and the file goes back to the inbox to be taken whole.
	changed := func() bool {
		now, err := os.Stat(path)
		return err == nil && (now.Size() != read.Size() || !now.ModTime().Equal(read.ModTime()))
	}
	format, _ := ParseFormat(inboxCharset(name), "")
	b, created, err := s.receive(ctx, Intake{Program: program, FileName: name,
		Format: format, UploadedBy: "inbox", Channel: "inbox",
		Complete: func() error {
			if changed() {
				return errChanged
			}
			return nil
		}}, f)
	f.Close()
	if errors.Is(err, errChanged) {
		log.Warn("Inbox file changed while it was read: put back in the inbox, to be " +
			"taken once it stays unchanged")
		s.putBack(work, dir, name)
		return
	}
	if err != nil {
		if de, ok := core.AsError(err); ok {
			log.Warn("Inbox file refused", "error", de.Error())
			s.moveInbox(work, dir, name, "failed", de.Error())
		} else {
			// Our fault (database down): left in working/ for the next poll.
			log.Error("Inbox file not taken", "error", err)
		}
		return
	}
	if !created {
		log.Info("Inbox file is a batch already received", "batch_id", b.ID,
			"status", b.Status)
	}
	postBy := "inbox"
	if unvalidated(b) {
		if !s.claimValidation(b.ID, false, "") {
			// This process validates it already (resumed), and posts it.
			s.moveInbox(work, dir, name, "done", "")
			return
		}
		v, err := s.validateClaimed(ctx, b)
		if actor, asked := s.endValidation(b.ID); asked {
			postBy = actor
		}
		switch {
		case errors.Is(err, errElsewhere):
			// Another process validates it, and posts it: an inbox batch.
			s.moveInbox(work, dir, name, "done", "")
			return
		case err != nil:
			// The batch is received again, with the reason; the file stays in
			// working/ and the next poll tries again.
			log.Error("Inbox batch not validated", "batch_id", b.ID, "error", err)
			return
		}
		b = v
	}
	if b.Status == core.BatchFailed {
		s.moveInbox(work, dir, name, "failed", b.Error)
		return
	}
	// A validated inbox batch is posted unless it awaits an approval; one
	// found validated here was left so by a process that stopped before
	// posting it.
	if b.Channel == "inbox" && b.Status == core.BatchValidated {
		if b.NeedsApproval && b.ApprovedBy == "" {
			log.Info("Inbox batch awaits approval", "batch_id", b.ID)
		} else {
			v := b
			s.start("post", v, func(ctx context.Context) error {
				_, err := s.Post(ctx, v, postBy)
				return err
			})
		}
	}
	if changed() {
		// Written to after it was read: the batch holds the lines read, and
		// the whole file, taken again as a new batch once it stays
		// unchanged, posts the rest (its first lines are replays).
		log.Warn("Inbox file changed after it was read: its batch holds what was read, "+
			"and the file goes back to the inbox to be taken again whole", "batch_id", b.ID,
			"size_bytes_read", read.Size())
		s.putBack(work, dir, name)
		return
	}
	s.moveInbox(work, dir, name, "done", "")
}

// putBack moves a taken file from the folder from back to the program's
// inbox folder dir, under a free name, where the polls watch it again.
func (s *Service) putBack(from, dir, name string) {
	if err := os.Rename(filepath.Join(from, name),
		filepath.Join(dir, s.freeName(dir, name))); err != nil {
		s.log.Error("Inbox file not put back", "file", filepath.Join(from, name), "error", err)
	}
}

// freeName is name, or name with a time suffix when dir holds that name.
func (s *Service) freeName(dir, name string) string {
	if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
		return name
	}
	return fmt.Sprintf("%s.%s", name, s.now().UTC().Format("20060102T150405.000000000"))
}

// moveInbox moves a taken file from the folder from to the done or failed
// sub-folder of the program's inbox folder dir, with a note beside a
// failed one. A name already there gets a time suffix.
func (s *Service) moveInbox(from, dir, name, to, note string) {
	dest := filepath.Join(dir, to)
	if err := os.MkdirAll(dest, 0o750); err != nil {
		s.log.Error("Inbox folder not made", "dir", dest, "error", err)
		return
	}
	target := filepath.Join(dest, s.freeName(dest, name))
	if err := os.Rename(filepath.Join(from, name), target); err != nil {
		s.log.Error("Inbox file not moved", "file", filepath.Join(from, name), "error", err)
		return
	}
	if note != "" {
		_ = os.WriteFile(target+".error.txt", []byte(note+"\n"), 0o640)
	}
	if to == "done" {
		if info, err := os.Stat(target); err == nil {
			s.mu.Lock()
			if s.doneWatch == nil {
				s.doneWatch = map[string]watchedFile{}
			}
			s.doneWatch[target] = watchedFile{state: fileState{size: info.Size(),
				mod: info.ModTime()}, until: time.Now().Add(max(inboxWatch, s.opt.InboxQuiet))}
			s.mu.Unlock()
		}
	}
}
