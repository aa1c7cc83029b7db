// Package files takes massive point loads from files: CSV files uploaded
// over REST or dropped in an inbox folder become batches that are stored,
// checksummed, validated line by line and then posted to the ledger in
// chunks, resumably, with a result file of one row per input line.
//
// The format is described in contracts/bulk-points.md.
package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// Options configures a Service.
type Options struct {
	// DataDir is where stored files go (under batches/).
	DataDir string
	// InboxDir is the folder watched for dropped files, one sub-folder per
	// program; empty means DataDir/inbox.
	InboxDir string
	// InboxPoll is how often the inbox is looked at; zero means 5s.
	InboxPoll time.Duration
	// InboxQuiet is how long a file whose last line has no line end yet
	// must stay unchanged before it is taken; zero means a minute.
	InboxQuiet time.Duration
	// ApprovalPoints is the total of points (credits plus debits) above which
	// a batch needs a second person's approval; zero disables approvals.
	ApprovalPoints int64
	// ChunkSize is how many lines go to the ledger per transaction; zero
	// means 2000.
	ChunkSize int
	// Workers is how many ledger transactions run at once, each on its own
	// members; zero means 2. A chunk of the file is ChunkSize × Workers lines.
	Workers int
	// Source names the authenticated caller of a request; the gateway's
	// rest.CallerSource. Nil names every caller "unknown".
	Source func(r *http.Request) string
	// WriteError answers a request with the problem document of err; the
	// gateway's. Nil writes a plain problem document.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
}

// Service stores, validates and posts batch files.
type Service struct {
	ledger  *postgres.Ledger
	log     *slog.Logger
	opt     Options
	dir     string
	now     func() time.Time
	mu      sync.Mutex
	running map[string]bool
	// postAfter holds, by batch id, who asked to post a batch while this
	// process validated it: the post starts when the validation ends.
	postAfter map[string]string
	wg        sync.WaitGroup
	// validateAttempts is how many times a validation that the database or
	// the stored file cut short is tried before it is given up (the batch
	// is then received again, with the reason); validateBackoff is the
	// pause after the first attempt, doubled after each next one.
	validateAttempts int
	validateBackoff  time.Duration
	// validating has a slot per validation that may run at once: each holds
	// a database connection (see postgres.BatchValidation) and a core.
	validating chan struct{}
	// bg is the context background work (validation, posting) runs in.
	bg context.Context
	// doneWatch holds, by path, the inbox files moved to done/ lately, as
	// they were then: one a writer goes on writing to (it kept the file
	// open through the moves) goes back to the inbox. Guarded by mu.
	doneWatch map[string]watchedFile
	// afterChunk, when set (tests), runs after every part of a chunk
	// committed and before the batch's progress mark moves past it.
	afterChunk func(ctx context.Context, done int64)
	// beforeCommit, when set (tests), runs in each part's ledger transaction
	// just before it commits; an error rolls the part back.
	beforeCommit func(ctx context.Context, lines []core.BatchLine) error
}

// New returns a Service on the ledger. Background work stops when ctx ends.
func New(ctx context.Context, ledger *postgres.Ledger, log *slog.Logger, opt Options) *Service {
	if opt.InboxDir == "" {
		opt.InboxDir = filepath.Join(opt.DataDir, "inbox")
	}
	if opt.InboxQuiet <= 0 {
		opt.InboxQuiet = time.Minute
	}
	if opt.InboxPoll <= 0 {
		opt.InboxPoll = 5 * time.Second
	}
	if opt.ChunkSize <= 0 {
		opt.ChunkSize = 2000
	}
	if opt.Workers <= 0 {
		opt.Workers = 2
	}
	return &Service{ledger: ledger, log: log, opt: opt, dir: filepath.Join(opt.DataDir, "batches"),
		now: time.Now, running: map[string]bool{}, postAfter: map[string]string{}, bg: ctx,
		validateAttempts: 5, validateBackoff: time.Second,
		validating: make(chan struct{}, maxValidations)}
}

// Wait blocks until the background work started so far has stopped.
func (s *Service) Wait() { s.wg.Wait() }

// Intake describes a file being received.
type Intake struct {
	Program    string
	FileName   string
	Format     Format
	UploadedBy string
	Source     string // the API key's source of a REST upload
	Channel    string // rest or inbox
	// Complete, when set, is asked once the whole body is read and before
	// the batch is made: an error refuses the file, and nothing is kept
	// (an inbox file that changed while it was read, a form with a second
	// file).
	Complete func() error
}

// Receive stores the file read from body under the data directory, with
// its SHA-256, and makes it a batch. The same bytes received again for the
// same program and read the same way (charset, date pattern) are the same
// batch: created is false and the stored file of the first delivery is
// kept; if that batch's validation was cut short and nobody validates it
// now, it is validated again (and, for an inbox batch, posted). The same
// bytes declared otherwise are a new batch. Errors: not_found (program),
// invalid.
func (s *Service) Receive(ctx context.Context, in Intake, body io.Reader) (*core.Batch,
	bool, error) {
	b, created, err := s.receive(ctx, in, body)
	if err == nil && !created && unvalidated(b) {
		s.validateThenMaybePost(b, b.Channel == "inbox", b.UploadedBy)
	}
	return b, created, err
}

// unvalidated reports whether a batch is still to be validated.
func unvalidated(b *core.Batch) bool {
	return b.Status == core.BatchReceived || b.Status == core.BatchValidating
}

// readErr remembers the error its reader gave, apart from the writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// head keeps the first bytes written to it.
type head struct{ b []byte }

func (h *head) Write(p []byte) (int, error) {
	if n := 3 - len(h.b); n > 0 {
		h.b = append(h.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

func (s *Service) receive(ctx context.Context, in Intake, body io.Reader) (*core.Batch,
	bool, error) {
	if _, err := s.ledger.Program(ctx, in.Program); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return nil, false, fmt.Errorf("batch directory: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".incoming-*")
	if err != nil {
		return nil, false, fmt.Errorf("create stored file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h, start := sha256.New(), &head{}
	src := &readErr{r: body}
	size, err := io.Copy(io.MultiWriter(tmp, h, start), src)
	if errors.Is(src.err, io.ErrUnexpectedEOF) {
		// The sender stopped before the end it announced: a body cut
		// short, nothing to keep.
		return nil, false, core.Errorf(core.Invalid, "file", "the upload ended before the "+
			"whole file arrived (%d bytes came); send it again", size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("store file: %w", err)
	}
	if in.Complete != nil {
		if err := in.Complete(); err != nil {
			return nil, false, err
		}
	}
	if size == 0 {
		return nil, false, core.Errorf(core.Invalid, "file", "is empty")
	}
	charset := in.Format.Charset
	if bytes.Equal(start.b, bom) {
		// Read as UTF-8 whatever was declared: the same reading as without
		// the declaration, so the same batch.
		charset = UTF8
	}

	id := uuid.Must(uuid.NewV7()).String()
	b := &core.Batch{ID: id, Program: in.Program, Checksum: hex.EncodeToString(h.Sum(nil)),
		FileName: plainFileName(in.FileName), Path: filepath.Join(s.dir, id+".csv"),
		Size: size, Charset: charset, DateFormat: in.Format.DateFormat,
		UploadedBy: in.UploadedBy, UploadedSource: in.Source, Channel: in.Channel,
		CreatedAt: s.now().UTC()}
	if b.FileName == "." || b.FileName == "/" {
		b.FileName = ""
	}
	if err := os.Rename(tmp.Name(), b.Path); err != nil {
		return nil, false, fmt.Errorf("store file: %w", err)
	}
	stored, created, err := s.ledger.CreateBatch(ctx, b)
	if err != nil || !created {
		_ = os.Remove(b.Path)
	}
	if err != nil {
		return nil, false, err
	}
	if created {
		s.log.Info("Batch received", "batch_id", stored.ID, "program", stored.Program,
			"sha256", stored.Checksum, "size_bytes", stored.Size, "channel", stored.Channel,
			"charset", stored.Charset, "date_format", stored.DateFormat)
	} else {
		s.log.Info("Batch received again", "batch_id", stored.ID, "program", stored.Program,
			"sha256", stored.Checksum, "channel", in.Channel, "status", stored.Status)
	}
	return stored, created, nil
}

// validateChunk is how many lines are stored per COPY while validating.
const validateChunk = 5000

// maxValidations is how many validations one process runs at once; the
// others wait for a turn.
const maxValidations = 4

// Validate reads the batch's stored file as a stream and checks every line;
// nothing is posted. It ends with the batch validated (each line valid or
// invalid with its field and reason) or, when the file cannot be read at
// all, failed. A batch validated already is validated again from the
// start. Errors: conflict (the batch is being validated by another process,
// or is posting or posted: its lines hold their outcomes).
func (s *Service) Validate(ctx context.Context, b *core.Batch) (*core.Batch, error) {
	lock, err := s.ledger.LockValidation(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	return s.validateLocked(ctx, b, lock, false)
}

// validateLocked validates a batch under its validation lock. When
// onlyUnfinished is set, a batch that is no longer received or validating
// (another process validated it meanwhile) is returned as it is.
func (s *Service) validateLocked(ctx context.Context, b *core.Batch,
	lock *postgres.BatchValidation, onlyUnfinished bool) (*core.Batch, error) {
	cur, err := lock.Batch(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case onlyUnfinished && !unvalidated(cur):
		return cur, nil
	case cur.Status == core.BatchPosting || cur.Status == core.BatchPosted:
		return nil, core.Errorf(core.Conflict, "batch", "is %s; its lines are not validated "+
			"again", cur.Status)
	}
	b = cur
	if err := lock.Start(ctx); err != nil {
		return nil, err
	}
	fail := func(err error) (*core.Batch, error) {
		if de, ok := core.AsError(err); ok {
			if ferr := lock.Fail(ctx, de.Error()); ferr != nil {
				return nil, ferr
			}
			s.log.Warn("Batch refused", "batch_id", b.ID, "program", b.Program,
				"error", de.Error())
			return lock.Batch(ctx)
		}
		return nil, err
	}
	prog, err := s.ledger.Program(ctx, b.Program)
	if err != nil {
		return fail(err)
	}
	loc, err := time.LoadLocation(prog.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("program time zone: %w", err)
	}
	f, err := ParseFormat(b.Charset, b.DateFormat)
	if err != nil {
		return fail(err)
	}
	file, err := os.Open(b.Path)
	if err != nil {
		return nil, fmt.Errorf("open stored file: %w", err)
	}
	defer file.Close()
	rd, err := newReader(file, f, loc, s.now())
	if err != nil {
		return fail(err)
	}

	start := time.Now()
	buf := make([]core.BatchLine, 0, validateChunk)
	var n int64
	for {
		x, err := rd.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		buf = append(buf, x)
		n++
		if len(buf) == validateChunk {
			if err := lock.AddLines(ctx, buf); err != nil {
				return nil, err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if err := lock.AddLines(ctx, buf); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		return fail(core.Errorf(core.Invalid, "file", "has a header but no lines"))
	}
	out, err := lock.Finish(ctx, s.opt.ApprovalPoints)
	if err != nil {
		return nil, err
	}
	s.log.Info("Batch validated", "batch_id", b.ID, "program", b.Program, "lines", out.Lines,
		"valid_lines", out.Valid, "invalid_lines", out.Invalid, "credit_points", out.Credit,
		"debit_points", out.Debit, "needs_approval", out.NeedsApproval,
		"seconds", time.Since(start).Seconds())
	return out, nil
}

// errElsewhere says that a batch is being validated by another process
// (or another goroutine of this one), which will see it through.
var errElsewhere = errors.New("the batch is being validated elsewhere")

// validateClaimed validates a batch that is still to be validated, with
// this process's claim on it held by the caller. An attempt that the
// database or the stored file cuts short is tried again after a pause, up
// to validateAttempts times; then the batch is given back as received, its
// error saying why, and waits for the file to be sent again, a post, or a
// restart. Errors: errElsewhere when another process validates it now.
func (s *Service) validateClaimed(ctx context.Context, b *core.Batch) (*core.Batch, error) {
	for attempt := 1; ; attempt++ {
		v, err := s.validateOnce(ctx, b)
		if err == nil || errors.Is(err, errElsewhere) {
			return v, err
		}
		if ctx.Err() != nil {
			// The process stops: the batch is resumed when it starts again.
			return nil, err
		}
		if attempt >= s.validateAttempts {
			s.abandon(ctx, b, attempt, err)
			return nil, err
		}
		pause := s.validateBackoff << (attempt - 1)
		s.log.Warn("Batch validation retried", "batch_id", b.ID, "program", b.Program,
			"attempt", attempt, "pause_seconds", pause.Seconds(), "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// validateOnce is one attempt of validateClaimed, in one of the process's
// validation slots and under the batch's validation lock.
func (s *Service) validateOnce(ctx context.Context, b *core.Batch) (*core.Batch, error) {
	select {
	case s.validating <- struct{}{}:
		defer func() { <-s.validating }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	lock, err := s.ledger.LockValidation(ctx, b.ID)
	if core.KindOf(err) == core.Conflict {
		return nil, errElsewhere
	}
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	return s.validateLocked(ctx, b, lock, true)
}

// abandon gives a batch whose validation failed attempts times back as
// received, its error saying so, unless another process validates it now.
func (s *Service) abandon(ctx context.Context, b *core.Batch, attempts int, cause error) {
	s.log.Error("Batch validation given up", "batch_id", b.ID, "program", b.Program,
		"attempts", attempts, "error", cause)
	lock, err := s.ledger.LockValidation(ctx, b.ID)
	if err != nil {
		s.log.Error("Batch validation not marked as given up", "batch_id", b.ID,
			"error", err)
		return
	}
	defer lock.Release()
	what := "the database failed"
	var pe *fs.PathError
	if errors.As(cause, &pe) {
		what = "the stored file could not be read"
	}
	reason := fmt.Sprintf("validation was cut short %d times (%s, last at %s) and is "+
		"not running: send the file again, or ask to post the batch, to validate it again",
		attempts, what, s.now().UTC().Format(time.RFC3339))
	if err := lock.Abandon(ctx, reason); err != nil {
		s.log.Error("Batch validation not marked as given up", "batch_id", b.ID,
			"error", err)
	}
}

// claim marks a step of a batch ("validate:ID", "post:ID") as being worked
// on by this process; false when it already is.
func (s *Service) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[id] {
		return false
	}
	s.running[id] = true
	return true
}

func (s *Service) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, id)
}

// Source of the ledger commands of file lines: the transaction id column
// is unique per program, across files.
func lineSource(program string) string { return "file:" + program }

// command turns a valid line into its ledger command. Positive points are a
// points.credit (with the line's expiry); negative points a points.adjust,
// whose actor is the batch. The digest covers what the line asks for, not
// the batch it came in, so the same line in another file is a replay.
func command(b *core.Batch, x *core.BatchLine) (bus.Command, error) {
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Source: lineSource(b.Program),
		TxnID: x.TxnID, Program: b.Program, Member: x.Member, Actor: "batch:" + b.ID,
		Channel: "file", ReceivedAt: time.Now().UTC()}
	var payload any
	if x.Points > 0 {
		cmd.Kind = core.KindCredit
		payload = core.Credit{Points: x.Points, Reason: x.Reason, ExpiresAt: x.ExpiresAt}
	} else {
		cmd.Kind = core.KindAdjust
		payload = core.Adjust{Points: x.Points, Reason: x.Reason}
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return bus.Command{}, err
	}
	cmd.Payload = body
	if x.EffectiveAt != nil {
		cmd.OccurredAt = x.EffectiveAt.UTC()
	}
	cmd.Seal()
	if cmd.OccurredAt.IsZero() {
		cmd.OccurredAt = b.CreatedAt.UTC()
	}
	return cmd, nil
}

// Post applies every valid line of a validated batch to the ledger, in
// chunks, and records each line's outcome and the batch's counts in the
// same ledger transaction as the line itself. Started again after a stop (a
// crash, a cancelled ctx), it goes on after the last chunk it finished; the
// lines of an unfinished chunk that a committed transaction already settled
// are no longer pending, so no line is posted twice.
// Errors: conflict (not validated, awaiting approval, already running).
func (s *Service) Post(ctx context.Context, b *core.Batch, actor string) (*core.Batch, error) {
	if !s.claim("post:" + b.ID) {
		return nil, core.Errorf(core.Conflict, "batch", "is being posted")
	}
	defer s.release("post:" + b.ID)
	b, err := s.ledger.StartPosting(ctx, b.ID, actor)
	if err != nil {
		return nil, err
	}
	s.log.Info("Batch posting", "batch_id", b.ID, "program", b.Program,
		"valid_lines", b.Valid, "from_line", b.PostedThrough+1)

	start, startDone := time.Now(), b.Done()
	lastLog := start
	after := b.PostedThrough
	for {
		lines, err := s.ledger.PendingLines(ctx, b.ID, after, s.opt.ChunkSize*s.opt.Workers)
		if err != nil {
			return nil, err
		}
		if len(lines) == 0 {
			break
		}
		if err := s.postChunk(ctx, b, lines); err != nil {
			return nil, err
		}
		after = lines[len(lines)-1].Line
		b.PostedThrough = after
		for _, x := range lines {
			if x.Status == core.LinePosted {
				b.Posted++
				if x.Replayed {
					b.Replayed++
				}
			} else {
				b.Rejected++
			}
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			s.log.Info("Batch progress", "batch_id", b.ID, "lines_done", b.Done(),
				"valid_lines", b.Valid, "lines_per_second",
				rate(b.Done()-startDone, time.Since(start)), "errors",
				b.Invalid+b.Rejected)
		}
	}
	out, err := s.ledger.FinishPosting(ctx, b.ID, s.now().UTC())
	if err != nil {
		return nil, err
	}
	s.log.Info("Batch posted", "batch_id", b.ID, "program", b.Program,
		"posted_lines", out.Posted, "replayed_lines", out.Replayed, "rejected_lines", out.Rejected,
		"invalid_lines", out.Invalid, "lines_per_second",
		rate(out.Done()-startDone, time.Since(start)))
	return out, nil
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()*10)) / 10
}

// postChunk applies one chunk of lines and records the outcome of each
// line. The lines are split by member over the workers, each part in file
// order and in one ledger transaction of its own that also records its
// lines' outcomes; as no two parts share a member, they neither wait on each
// other nor change one member's order. Once every part committed, the
// batch's progress mark moves past the chunk.
func (s *Service) postChunk(ctx context.Context, b *core.Batch, lines []core.BatchLine) error {
	parts := make([][]int, s.opt.Workers) // indexes into lines
	cmds := make([]bus.Command, len(lines))
	for i := range lines {
		c, err := command(b, &lines[i])
		if err != nil {
			return err
		}
		cmds[i] = c
		p := 0
		if s.opt.Workers > 1 {
			p = bus.Partition(b.Program, lines[i].Member, s.opt.Workers)
		}
		parts[p] = append(parts[p], i)
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for p, idx := range parts {
		if len(idx) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := &postgres.BulkChunk{BatchID: b.ID,
				Lines:    make([]core.BatchLine, len(idx)),
				Commands: make([]bus.Command, len(idx))}
			for j, i := range idx {
				part.Lines[j], part.Commands[j] = lines[i], cmds[i]
			}
			if s.beforeCommit != nil {
				part.BeforeCommit = func(ctx context.Context) error {
					return s.beforeCommit(ctx, part.Lines)
				}
			}
			if err := s.apply(ctx, b, part); err != nil {
				errs[p] = err
				return
			}
			for j, i := range idx {
				lines[i] = part.Lines[j]
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply lines %d-%d: %w", lines[0].Line, lines[len(lines)-1].Line, err)
	}
	if s.afterChunk != nil {
		s.afterChunk(ctx, b.Done()+int64(len(lines)))
	}
	return s.ledger.MarkPostedThrough(ctx, b.ID, lines[len(lines)-1].Line)
}

// apply runs one part's ledger transaction, retrying it when the database
// aborted it for a reason that a retry can cure.
func (s *Service) apply(ctx context.Context, b *core.Batch, part *postgres.BulkChunk) error {
	for attempt := 1; ; attempt++ {
		err := s.ledger.PostBatchLines(ctx, part)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt == 5 || !retryable(err) {
			return err
		}
		s.log.Warn("Batch chunk retried", "batch_id", b.ID, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 100 * time.Millisecond):
		}
	}
}

// retryable reports whether the database aborted a transaction that may
// simply be tried again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40P01" || pe.Code == "40001"
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}

// start runs fn on the batch in the background, unless the service stops.
func (s *Service) start(name string, b *core.Batch, fn func(ctx context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(s.bg); err != nil && s.bg.Err() == nil {
			s.log.Error("Batch work stopped", "step", name, "batch_id", b.ID, "error", err)
		}
	}()
}

// claimValidation claims the validation of a batch in this process. When
// this process validates it already, false is returned and, when post is
// set, the batch is posted on behalf of actor once that validation ends.
func (s *Service) claimValidation(id string, post bool, actor string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running["validate:"+id] {
		if post {
			s.postAfter[id] = actor
		}
		return false
	}
	s.running["validate:"+id] = true
	return true
}

// endValidation releases the claim on a batch's validation and returns
// who asked to post it meanwhile, if anyone did.
func (s *Service) endValidation(id string) (actor string, post bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, "validate:"+id)
	actor, post = s.postAfter[id]
	delete(s.postAfter, id)
	return actor, post
}

// validateThenMaybePost validates a batch in the background; when post is
// set (or someone asks to post it meanwhile) and no approval is needed, it
// then posts it. A batch this process validates already is left to that
// validation.
func (s *Service) validateThenMaybePost(b *core.Batch, post bool, actor string) {
	if s.claimValidation(b.ID, post, actor) {
		s.validateClaimedThenMaybePost(b, post, actor)
	}
}

// validateClaimedThenMaybePost is validateThenMaybePost with the claim
// taken already.
func (s *Service) validateClaimedThenMaybePost(b *core.Batch, post bool, actor string) {
	s.start("validate", b, func(ctx context.Context) error {
		v, err := s.validateClaimed(ctx, b)
		if a, asked := s.endValidation(b.ID); asked {
			post, actor = true, a
		}
		if errors.Is(err, errElsewhere) {
			if post {
				s.log.Warn("Batch not posted: another process validates it; post it once "+
					"validated", "batch_id", b.ID)
			}
			return nil
		}
		if err != nil || !post || v.Status != core.BatchValidated ||
			(v.NeedsApproval && v.ApprovedBy == "") {
			return err
		}
		_, err = s.Post(ctx, v, actor)
		return err
	})
}

// Resume picks up, in the background, what a stopped process left: batches
// received or validating are validated again from the start (unless
// another process is validating them now), batches posting go on from
// their last recorded line.
func (s *Service) Resume(ctx context.Context) error {
	bs, err := s.ledger.UnfinishedBatches(ctx)
	if err != nil {
		return err
	}
	for _, b := range bs {
		s.log.Info("Batch resumed", "batch_id", b.ID, "status", b.Status)
		if b.Status == core.BatchPosting {
			b := b
			s.start("post", b, func(ctx context.Context) error {
				_, err := s.Post(ctx, b, b.PostedBy)
				return err
			})
			continue
		}
		s.validateThenMaybePost(b, b.Channel == "inbox", b.UploadedBy)
	}
	return nil
}

// PostApprovedInbox starts posting an inbox batch once it is approved: a
// file dropped in the inbox is posted without anyone asking, and one that
// waited for a second person is posted as soon as that person approved it,
// by them. A batch uploaded otherwise waits to be posted, as before.
func (s *Service) PostApprovedInbox(b *core.Batch) {
	if b.Channel != "inbox" || b.ApprovedBy == "" {
		return
	}
	if err := s.StartPost(b, b.ApprovedBy); err != nil {
		s.log.Warn("Approved inbox batch not posted", "batch_id", b.ID, "error", err)
	}
}

// plainFileName is the name a batch keeps of its file: the last element of
// the name given, as text the database can hold. Names come from uploads
// and from the inbox folder, where a legacy system may write them in
// Latin-1: bytes that are not UTF-8 and control characters read as U+FFFD,
// and the name is cut to 255 characters. The file itself is kept by the
// batch's id, so the name only tells people which file it was.
func plainFileName(name string) string {
	name = strings.ToValidUTF8(filepath.Base(name), "\uFFFD")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, name)
	if r := []rune(name); len(r) > 255 {
		name = string(r[:255])
	}
	return name
}
