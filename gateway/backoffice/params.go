package backoffice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// paramStore is what the parameter pages need of the ledger: the reads of
// tiers, catalog, partners and external programs. The changes themselves go
// over the bus like every other write. The ledger implements it; with a
// Reader that does not, those pages answer 501.
type paramStore interface {
	Tiers(ctx context.Context, program string) (*core.Tiers, error)
	Rewards(ctx context.Context, program, cursor string, limit int) ([]core.Reward, string,
		error)
	Partners(ctx context.Context, program string) ([]postgres.PartnerView, error)
	ExternalPrograms(ctx context.Context, program string) ([]core.ExternalProgram, error)
}

// params returns the parameter store, or answers 501 and returns nil.
func (s *Server) params(w http.ResponseWriter, r *http.Request, sess *session) paramStore {
	ps, ok := s.read.(paramStore)
	if !ok {
		s.fail(w, r, sess, http.StatusNotImplemented,
			"Parameters cannot be changed from this server.", nil)
		return nil
	}
	return ps
}

// change sends a parameter command of sess's user on the bus, with an audit
// note (action, target), and waits for the ledger as adjustments do. The
// ledger writes the audit entry, with the parameter before and after, in
// the transaction that applies the change, so that both are stored or
// neither. A refusal comes back as a *core.Error; a result with an empty
// Status means the wait ran out: the command is on the bus and will apply.
func (s *Server) change(ctx context.Context, sess *session, kind, program, member string,
	payload any, action, target string) (bus.Result, error) {
	txn := "backoffice-" + strings.ReplaceAll(kind, ".", "-") + "-" + uuid.NewString()
	cmd, err := s.command(kind, program, member, txn, sess.Name, payload)
	if err != nil {
		return bus.Result{}, err
	}
	cmd.Audit = &bus.Audit{Action: action, Target: target}
	res, err := s.send(ctx, cmd)
	if err != nil {
		return res, fmt.Errorf("apply %s: %w", kind, err)
	}
	return res, nil
}

// pending tells whether res is the answer of a wait that ran out.
func pending(res bus.Result) bool { return res.Status == "" }

// problemOf is the message a page shows for a refused change, or "" when
// err is not the user's mistake (the caller then fails with 500).
func problemOf(err error) string {
	ce, ok := core.AsError(err)
	if !ok || ce.Kind == core.Internal {
		return ""
	}
	if ce.Field != "" {
		return "Not saved: " + ce.Field + " " + ce.Message
	}
	return "Not saved: " + ce.Message
}

// form reads the fields of a posted parameter form. The first bad field is
// kept in err, named as the form labels it, and later reads do nothing.
type form struct {
	r   *http.Request
	loc *time.Location
	err error
}

func (f *form) str(name string) string { return strings.TrimSpace(f.r.PostFormValue(name)) }

func (f *form) bool(name string) bool { return f.r.PostFormValue(name) != "" }

func (f *form) fail(name, msg string) {
	if f.err == nil {
		f.err = core.Errorf(core.Invalid, name, "%s", msg)
	}
}

// int reads a whole number; blank is 0.
func (f *form) int(name string) int64 {
	v := f.str(name)
	if v == "" {
		return 0
	}
	n, err := wholeNumber(v)
	if err != nil {
		f.fail(name, err.Error())
	}
	return n
}

// errWhole is wholeNumber's error.
var errWhole = errors.New("must be a whole number; thousands may be grouped " +
	"as 1,500 or 1.500")

// wholeNumber reads a whole number as people type one: digits, perhaps a
// minus, and perhaps thousands grouped by commas or by dots (1,500 or
// 1.500, as Chile writes it), one kind only and always three digits to a
// group. Anything else is refused rather than guessed at: "1,50" was read
// as 150 and "1.5" is not a whole number of points.
func wholeNumber(v string) (int64, error) {
	digits := strings.TrimPrefix(v, "-")
	for _, sep := range []string{",", "."} {
		if !strings.Contains(digits, sep) {
			continue
		}
		groups := strings.Split(digits, sep)
		if len(groups[0]) == 0 || len(groups[0]) > 3 {
			return 0, errWhole
		}
		for _, g := range groups[1:] {
			if len(g) != 3 {
				return 0, errWhole
			}
		}
		digits = strings.Join(groups, "")
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, errWhole
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, errWhole
	}
	if strings.HasPrefix(v, "-") {
		n = -n
	}
	return n, nil
}

// optInt reads a whole number; blank is nil (no limit).
func (f *form) optInt(name string) *int64 {
	if f.str(name) == "" {
		return nil
	}
	n := f.int(name)
	return &n
}

// time reads a local date and time (as a datetime-local input sends it, or
// a date alone for midnight) in the program's zone; blank is nil.
func (f *form) time(name string) *time.Time {
	v := f.str(name)
	if v == "" {
		return nil
	}
	// The field unchanged keeps the instant the form was drawn from (its
	// seconds, and which of a repeated hour it was): the input shows
	// minutes in the program's zone only.
	if was, err := time.Parse(time.RFC3339Nano, f.str(name+"_was")); err == nil &&
		localInput(&was, f.loc) == v {
		t := was.UTC()
		return &t
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			// A time the clocks skip is the first instant after the gap.
			t = core.LocalTime(t, f.loc).UTC()
			return &t
		}
	}
	if d, err := time.Parse(time.DateOnly, v); err == nil {
		// The day's first instant, also when a change of clocks skips
		// its midnight.
		t := core.StartOfDay(d.Year(), d.Month(), d.Day(), f.loc).UTC()
		return &t
	}
	f.fail(name, "must be a date and time such as 2026-03-01T00:00")
	return nil
}

// list reads a comma-separated list, dropping blanks.
func (f *form) list(name string) []string {
	var out []string
	for _, p := range strings.Split(f.str(name), ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// zoneOf is a program's time zone, UTC when it cannot be read.
func (s *Server) zoneOf(ctx context.Context, program string) *time.Location {
	if p, err := s.read.Program(ctx, program); err == nil {
		if loc, err := time.LoadLocation(p.TimeZone); err == nil {
			return loc
		}
	}
	return time.UTC
}

// paramPage starts a parameter page: the store, and the program it shows
// with the codes of all programs. It answers the request itself and
// returns ok false when it cannot go on.
func (s *Server) paramPage(w http.ResponseWriter, r *http.Request, sess *session) (
	ps paramStore, program string, programs []string, ok bool) {
	if ps = s.params(w, r, sess); ps == nil {
		return nil, "", nil, false
	}
	program, programs, ok = s.pageProgram(w, r, sess)
	return ps, program, programs, ok
}

// pageProgram is the program a page shows, with the codes of all programs:
// the one of a refused post, or the one asked for, or the first. It answers
// 500 itself and returns ok false when the codes cannot be read.
func (s *Server) pageProgram(w http.ResponseWriter, r *http.Request, sess *session) (
	program string, programs []string, ok bool) {
	programs, err := s.programCodes(r.Context())
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return "", nil, false
	}
	program = mux.Vars(r)["program"]
	if program == "" {
		program = r.URL.Query().Get("program")
	}
	if program == "" && len(programs) > 0 {
		program = programs[0]
	}
	return program, programs, true
}

// edit is one parameter change posted from a page.
type edit struct {
	kind, program, member string
	payload               any
	// action and target are what the audit log records.
	action, target string
	// page and done are where a success goes back to and the notice it shows.
	page, done string
}

// save applies e unless err (a bad field or a failed check) refuses it
// already. A success goes back to the page of the program with its notice
// (or, when the ledger has not answered in time, the notice that the change
// will apply); a refusal shows the page again through again, with the form
// refilled.
func (s *Server) save(w http.ResponseWriter, r *http.Request, sess *session,
	err error, e edit, again func(status int, problem string)) {
	var res bus.Result
	if err == nil {
		res, err = s.change(r.Context(), sess, e.kind, e.program, e.member, e.payload,
			e.action, e.target)
	}
	if err != nil {
		s.refused(w, r, sess, err, again)
		return
	}
	done := e.done
	if pending(res) {
		done = "pending"
	}
	redirect(w, r, e.page, url.Values{"program": {e.program}}, done)
}

// check returns the form's first bad field, or else what validate finds.
func (f *form) check(validate func() error) error {
	if f.err != nil {
		return f.err
	}
	return validate()
}

// instantOf writes t exactly, for a form's hidden *_was field beside the
// datetime-local input localInput fills; empty for nil.
func instantOf(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// localInput writes t in loc as a datetime-local input wants it.
func localInput(t *time.Time, loc *time.Location) string {
	if t == nil {
		return ""
	}
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02T15:04")
}
