package conversion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// Options configures a Worker. Zero values take the defaults named.
type Options struct {
	// Interval is how often the outbox is polled (2s).
	Interval time.Duration
	// Batch is how many conversions one step takes (10). Those of one
	// external program are delivered one after the other, each program's
	// beside the others', so Batch deliveries with all their retries
	// should fit in Lease.
	Batch int
	// Slow is how long an unclear delivery may take before the step stops
	// delivering to that external program (5s): a program that hangs costs
	// one delivery per step, not one per conversion, and the conversions
	// left are claimed again after RetryMin. Under Run, the other programs'
	// conversions are claimed and delivered meanwhile, and none more of the
	// hanging program's until its delivery ends.
	Slow time.Duration
	// Lease is how long a claimed conversion is left alone by other
	// workers (15m), and how long a crashed worker's conversions wait.
	Lease time.Duration
	// RetryMin and RetryMax bound the wait before a conversion whose
	// outcome was unclear is delivered again (30s doubling up to 1h).
	RetryMin, RetryMax time.Duration
	// ReconcileEvery is how often Run reconciles (10m); ReconcileAfter is
	// how old a pending conversion must be before its status is asked
	// (15m); ReconcileWindow is how far back settled ones are checked (48h).
	ReconcileEvery, ReconcileAfter, ReconcileWindow time.Duration
	// HoldRenewal is how far ahead of now the hold of a pending conversion
	// is kept valid (60 days): every attempt and every reconciliation
	// pushes its expiry to now+HoldRenewal when less is left. A conversion
	// pending longer than the ledger's longest hold (90 days) keeps its
	// points held as long as some worker runs within each HoldRenewal.
	HoldRenewal time.Duration
	// FileDir is the folder of the file flavour: each external program
	// exchanges files under FileDir/<program>/<external>/{out,in}.
	FileDir string
	// HTTP tunes the calls of the HTTP flavour.
	HTTP HTTPOptions
	// Clock gives the time; tests set it.
	Clock func() time.Time
	// Partner overrides how a partner is reached (tests); by default the
	// flavour of the external program decides.
	Partner func(program string, ext *core.ExternalProgram) (Partner, error)
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Interval, 2*time.Second)
	def(&o.Lease, 15*time.Minute)
	def(&o.RetryMin, 30*time.Second)
	def(&o.RetryMax, time.Hour)
	def(&o.Slow, 5*time.Second)
	def(&o.ReconcileEvery, 10*time.Minute)
	def(&o.ReconcileAfter, 15*time.Minute)
	def(&o.ReconcileWindow, 48*time.Hour)
	def(&o.HoldRenewal, 60*24*time.Hour)
	if o.Batch <= 0 {
		o.Batch = 10
	}
	if o.FileDir == "" {
		o.FileDir = filepath.Join(".data", "conversions")
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
}

// Worker settles pending conversions: it delivers them to the other
// programs and captures or releases their holds.
//
// Holds and their settlement are ledger commands applied with
// Ledger.ApplyBatch directly, with source "conversion" and transaction ids
// derived from the conversion id: a second capture of the same conversion
// is a replay that changes nothing, so a crash at any point is repaired by
// doing the step again. The bus is not involved: the worker needs the
// ledger's answer before it marks the conversion settled, and the member's
// row lock orders the capture with whatever the member's partition applies
// meanwhile.
type Worker struct {
	ledger *postgres.Ledger
	log    *slog.Logger
	opt    Options

	// busy are the external programs (program and external code, as
	// busyKey) that deliveries started by Run are still working on: the
	// next claims leave their conversions alone.
	mu   sync.Mutex
	busy map[[2]string]bool
}

// New returns a Worker on ledger.
func New(ledger *postgres.Ledger, log *slog.Logger, opt Options) *Worker {
	opt.defaults()
	return &Worker{ledger: ledger, log: log, opt: opt, busy: map[[2]string]bool{}}
}

// Run settles conversions until ctx ends, reconciling now and then. It
// returns nil when ctx ends.
func Run(ctx context.Context, ledger *postgres.Ledger, log *slog.Logger, opt Options) error {
	w := New(ledger, log, opt)
	return w.Run(ctx)
}

// Run is the worker's loop; see the package function Run. Reconciliation
// runs beside the deliveries, in a loop of its own: it asks the other
// programs about up to a thousand conversions, and one that hangs would
// otherwise hold up every delivery until it is done.
//
// Nor does Run wait for a step's deliveries before the next claim: a
// program that hangs holds up only its own conversions, which the claims
// leave alone until its delivery ends.
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.reconcileLoop(ctx) })
	for {
		n, err := w.step(ctx, &wg)
		if err != nil && ctx.Err() == nil {
			w.log.Error("Conversion step failed", "error", err)
		}
		if n == w.opt.Batch && err == nil {
			continue
		}
		if !w.sleep(ctx, w.opt.Interval) {
			return nil
		}
	}
}

// reconcileLoop reconciles every ReconcileEvery until ctx ends, the first
// time at once.
func (w *Worker) reconcileLoop(ctx context.Context) {
	for {
		start := w.opt.Clock()
		if _, err := w.Reconcile(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("Conversion reconciliation failed", "error", err)
		}
		// The worker's clock may be a test's: wait on the interval as it
		// counts, checking it as often as deliveries are.
		for w.opt.Clock().Sub(start) < w.opt.ReconcileEvery {
			if !w.sleep(ctx, min(w.opt.Interval, w.opt.ReconcileEvery)) {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func (w *Worker) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// partners caches the partners of one pass, by program and external code.
type partners struct {
	w   *Worker
	mu  sync.Mutex
	got map[string]partnerEntry
}

type partnerEntry struct {
	p   Partner
	err error
}

func (w *Worker) partners() *partners {
	return &partners{w: w, got: map[string]partnerEntry{}}
}

func (ps *partners) get(ctx context.Context, program, external string) (Partner, error) {
	key := program + "\x00" + external
	ps.mu.Lock()
	e, ok := ps.got[key]
	ps.mu.Unlock()
	if ok {
		return e.p, e.err
	}
	ext, err := ps.w.ledger.PartnerConfig(ctx, program, external)
	if err != nil {
		e.err = err
	} else {
		e.p, e.err = ps.w.partnerOf(program, ext)
	}
	ps.mu.Lock()
	ps.got[key] = e
	ps.mu.Unlock()
	return e.p, e.err
}

// partnerOf reaches ext in its flavour.
func (w *Worker) partnerOf(program string, ext *core.ExternalProgram) (Partner, error) {
	if w.opt.Partner != nil {
		return w.opt.Partner(program, ext)
	}
	switch ext.Flavour {
	case core.FlavourHTTP:
		return NewHTTPPartner(ext.Endpoint, ext.Credentials, w.opt.HTTP), nil
	case core.FlavourFile:
		if !safeName(program) || !safeName(ext.Code) {
			return nil, fmt.Errorf("external program %s/%s: not a folder name", program, ext.Code)
		}
		return NewFilePartner(filepath.Join(w.opt.FileDir, program, ext.Code), ext.Code,
			w.opt.Clock), nil
	}
	return nil, fmt.Errorf("external program %s/%s: unknown flavour %q", program, ext.Code,
		ext.Flavour)
}

func request(c core.Conversion) Request {
	return Request{TxnID: c.TxnID, Program: c.Program, External: c.External,
		MemberID: c.AccountID, Amount: c.Amount, Points: int64(c.Points),
		RequestedAt: c.RequestedAt}
}

// Step delivers the conversions that are due and settles those that got a
// clear answer. It returns how many it took.
func (w *Worker) Step(ctx context.Context) (int, error) {
	return w.step(ctx, nil)
}

// step is Step. With into set, it returns once the conversions are claimed,
// their deliveries left running in into (their failures logged), and the
// external programs they go to busy until each one's are done.
func (w *Worker) step(ctx context.Context, into *sync.WaitGroup) (int, error) {
	now := w.opt.Clock()
	var progs, exts []string
	w.mu.Lock()
	for k := range w.busy {
		progs, exts = append(progs, k[0]), append(exts, k[1])
	}
	w.mu.Unlock()
	due, err := w.ledger.ClaimConversionsExcept(ctx, now, w.opt.Lease, w.opt.Batch, progs,
		exts)
	if err != nil {
		return 0, err
	}
	// One external program's conversions go one after the other, in the
	// order claimed; the programs go side by side, so that one that hangs
	// does not hold up the others.
	order, byExternal := groupByExternal(due)
	ps := w.partners()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		if into != nil {
			if ctx.Err() == nil {
				w.log.Error("Conversion delivery failed", "error", err)
			}
			return
		}
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	if into == nil {
		into = &wg
	} else {
		w.mu.Lock()
		for _, key := range order {
			w.busy[key] = true
		}
		w.mu.Unlock()
	}
	for _, key := range order {
		into.Go(func() {
			defer func() {
				w.mu.Lock()
				delete(w.busy, key)
				w.mu.Unlock()
			}()
			list := byExternal[key]
			for i, c := range list {
				if ctx.Err() != nil {
					// What was claimed and not delivered waits for its
					// lease to end.
					fail(ctx.Err())
					return
				}
				slow, err := w.attempt(ctx, ps, c)
				if err != nil {
					fail(fmt.Errorf("conversion %s: %w", c.ID, err))
				}
				if slow && i+1 < len(list) {
					w.putBack(ctx, list[i+1:])
					return
				}
			}
		})
	}
	wg.Wait() // the deliveries of Step; none when Run gave into
	if ctx.Err() != nil {
		return len(due), ctx.Err()
	}
	return len(due), errors.Join(errs...)
}

// groupByExternal splits list by external program (program and external
// code), keeping its order within each and the order in which the programs
// first appear.
func groupByExternal(list []core.Conversion) ([][2]string, map[[2]string][]core.Conversion) {
	var order [][2]string
	groups := map[[2]string][]core.Conversion{}
	for _, c := range list {
		key := [2]string{c.Program, c.External}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], c)
	}
	return order, groups
}

// putBack gives back the claims of conversions a step did not deliver,
// their program having just left one unanswered for Slow or longer: they
// are claimed again after RetryMin, their attempt not counted.
func (w *Worker) putBack(ctx context.Context, list []core.Conversion) {
	at := w.opt.Clock().Add(w.opt.RetryMin)
	for _, c := range list {
		if err := w.ledger.UnclaimConversion(ctx, c.ID, at); err != nil {
			w.log.Error("Conversion claim not given back; it waits for its lease",
				"conversion_id", c.ID, "error", err)
		}
	}
	w.log.Warn("External program slow to answer; its other conversions wait for the next "+
		"step", "program", list[0].Program, "external", list[0].External, "waiting", len(list))
}

// attempt delivers one claimed conversion and acts on the answer. slow
// tells that the answer was unclear and took Slow or longer.
func (w *Worker) attempt(ctx context.Context, ps *partners, c core.Conversion) (slow bool,
	err error) {
	if _, err := w.ledger.RenewConversionHold(ctx, c.ID,
		w.opt.Clock().Add(w.opt.HoldRenewal)); err != nil {
		return false, err
	}
	p, err := ps.get(ctx, c.Program, c.External)
	if err != nil {
		w.log.Error("External program unusable; conversion stays pending",
			"conversion_id", c.ID, "program", c.Program, "external", c.External, "error", err)
		return false, w.ledger.RetryConversion(ctx, c.ID, err.Error(), w.next(c.Attempts))
	}
	start := time.Now()
	a := p.Deliver(ctx, request(c))
	if ctx.Err() != nil {
		// Stopping: whatever the answer, the lease brings it back.
		return false, ctx.Err()
	}
	slow = a.Outcome == Unclear && time.Since(start) >= w.opt.Slow
	return slow, w.settle(ctx, c, a)
}

// next is when a conversion attempted n times is delivered again.
func (w *Worker) next(n int) time.Time {
	d := w.opt.RetryMin
	for i := 1; i < n && d < w.opt.RetryMax; i++ {
		d *= 2
	}
	return w.opt.Clock().Add(min(d, w.opt.RetryMax))
}

// settle acts on an answer about a pending conversion: capture, release,
// or try again later.
func (w *Worker) settle(ctx context.Context, c core.Conversion, a Answer) error {
	log := w.log.With("conversion_id", c.ID, "program", c.Program, "external", c.External,
		"attempts", c.Attempts)
	// What the other program calls the credit or the refusal is kept as a
	// person may type one (resolve): printable, at most 200 bytes. An
	// answer left with none is not the answer the protocol asks for.
	a.Reference, a.Code = partnerReference(a.Reference), partnerReference(a.Code)
	switch {
	case a.Outcome == Confirmed && a.Reference == "":
		a = Answer{Detail: "confirmed without a printable reference"}
	case a.Outcome == Refused && a.Code == "":
		a = Answer{Detail: "refused without a printable code"}
	}
	switch a.Outcome {
	case Confirmed:
		// A hold settled behind the conversion's back (it ran out with no
		// worker renewing it) cannot be captured: the conversion stays
		// pending and each attempt logs it at Error until a person settles
		// it (POST .../conversions/{id}/resolve).
		if err := w.apply(ctx, c, core.KindCapture, core.ConversionCaptureTxn(c.ID),
			core.Capture{HoldTxnID: c.HoldTxnID}); err != nil {
			log.Error("Confirmed conversion not captured; it stays pending", "error", err)
			return w.ledger.RetryConversion(ctx, c.ID, "capture: "+err.Error(),
				w.next(c.Attempts))
		}
		if _, err := w.ledger.FinishConversion(ctx, c.ID, core.ConversionConfirmed,
			a.Reference, "", w.opt.Clock()); err != nil {
			return err
		}
		log.Info("Conversion confirmed", "reference", a.Reference)
	case Refused:
		if err := w.apply(ctx, c, core.KindRelease, core.ConversionReleaseTxn(c.ID),
			core.Release{HoldTxnID: c.HoldTxnID}); err != nil {
			log.Error("Refused conversion not released; it stays pending", "error", err)
			return w.ledger.RetryConversion(ctx, c.ID, "release: "+err.Error(),
				w.next(c.Attempts))
		}
		if _, err := w.ledger.FinishConversion(ctx, c.ID, core.ConversionRefused, "", a.Code,
			w.opt.Clock()); err != nil {
			return err
		}
		log.Info("Conversion refused", "code", a.Code)
	default:
		next := w.next(c.Attempts)
		log.Warn("Conversion outcome unclear; it will be delivered again",
			"outcome", a.Outcome.String(), "detail", a.Detail, "next_attempt_at", next)
		return w.ledger.RetryConversion(ctx, c.ID, a.Outcome.String()+": "+a.Detail, next)
	}
	return nil
}

// apply runs one settling command on the conversion's hold. A replay of a
// command already applied answers its first result, so this is safe to
// repeat. A refusal comes back as an error.
func (w *Worker) apply(ctx context.Context, c core.Conversion, kind, txn string,
	payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind,
		Source: core.SourceConversion, TxnID: txn, Program: c.Program, Member: c.Member,
		Payload: body}
	cmd.Seal()
	now := w.opt.Clock().UTC()
	cmd.OccurredAt, cmd.ReceivedAt = now, now
	out, err := w.ledger.ApplyBatch(ctx, []bus.Command{cmd})
	if err != nil {
		return err
	}
	if r := out[0].Result; r.Status != bus.StatusOK {
		msg := "refused"
		if r.Error != nil {
			msg = r.Error.Kind + ": " + r.Error.Message
		}
		return fmt.Errorf("%s %s: %s", kind, txn, msg)
	}
	return nil
}

// Mismatch is a conversion on which we and the other program disagree.
type Mismatch struct {
	Conversion string `json:"conversion_id"`
	External   string `json:"external"`
	Ours       string `json:"ours"`
	Theirs     string `json:"theirs"`
}

// ReconcileReport is what one reconciliation found.
type ReconcileReport struct {
	Checked    int        `json:"checked"`
	Resolved   int        `json:"resolved"`
	Mismatches []Mismatch `json:"mismatches,omitempty"`
}

// Reconcile asks the other programs about our conversions that have been
// pending for a while and those settled recently. A pending one that they
// confirmed or refused is settled as they say. A settled one that they
// answer otherwise (a refusal they credited, a confirmation with another
// reference or that they deny) is a mismatch: logged at Error and
// reported, never changed without a person.
func (w *Worker) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	now := w.opt.Clock()
	list, err := w.ledger.ConversionsToReconcile(ctx, now.Add(-w.opt.ReconcileAfter),
		now.Add(-w.opt.ReconcileWindow), 1000)
	if err != nil {
		return rep, err
	}
	// As in Step, each external program's conversions are asked about one
	// after the other and the programs side by side; a program whose
	// answer about one stays unclear for Slow or longer is asked nothing
	// more this time.
	order, byExternal := groupByExternal(list)
	ps := w.partners()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, key := range order {
		wg.Go(func() {
			for _, c := range byExternal[key] {
				if ctx.Err() != nil {
					return
				}
				r, slow, err := w.reconcileOne(ctx, ps, c, now)
				mu.Lock()
				rep.Checked += r.Checked
				rep.Resolved += r.Resolved
				rep.Mismatches = append(rep.Mismatches, r.Mismatches...)
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				if slow {
					w.log.Warn("External program slow to answer about a conversion; its "+
						"others are asked at the next reconciliation", "program", c.Program,
						"external", c.External)
					return
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, errors.Join(errs...)
}

// reconcileOne is Reconcile for one conversion; slow tells that the other
// program's answer was unclear and took Slow or longer.
func (w *Worker) reconcileOne(ctx context.Context, ps *partners, c core.Conversion,
	now time.Time) (rep ReconcileReport, slow bool, err error) {
	p, err := ps.get(ctx, c.Program, c.External)
	if err != nil {
		return rep, false, fmt.Errorf("conversion %s: %w", c.ID, err)
	}
	until := now.Add(w.opt.Lease)
	if c.Status == core.ConversionPending {
		// Claimed while the other program is asked and the answer
		// settled, so that a person does not resolve it meanwhile; one
		// a worker is delivering, or settled since, is left alone.
		claimed, err := w.ledger.ClaimConversion(ctx, c.ID, now, until)
		if err != nil || !claimed {
			return rep, false, err
		}
	}
	rep.Checked++
	start := time.Now()
	a := p.Status(ctx, request(c))
	slow = a.Outcome == Unclear && time.Since(start) >= w.opt.Slow
	var errs []error
	switch c.Status {
	case core.ConversionPending:
		if _, err := w.ledger.RenewConversionHold(ctx, c.ID,
			now.Add(w.opt.HoldRenewal)); err != nil {
			return rep, slow, err
		}
		if a.Outcome != Confirmed && a.Outcome != Refused {
			return rep, slow, w.ledger.EndClaim(ctx, c.ID, until)
		}
		if err := w.settle(ctx, c, a); err != nil {
			return rep, slow, fmt.Errorf("conversion %s: %w", c.ID, err)
		}
		rep.Resolved++
	case core.ConversionConfirmed:
		if a.Outcome == Unclear && !a.Contradicts {
			return rep, slow, nil
		}
		if a.Outcome != Confirmed || partnerReference(a.Reference) != c.Reference {
			rep.Mismatches = append(rep.Mismatches, w.mismatch(ctx, c, a, now, &errs))
		}
	case core.ConversionRefused:
		if a.Outcome == Confirmed || a.Contradicts {
			rep.Mismatches = append(rep.Mismatches, w.mismatch(ctx, c, a, now, &errs))
		}
	}
	return rep, slow, errors.Join(errs...)
}

// partnerWords is a reference or code the other program sent, as the
// member's page and the REST reads show it: control and formatting
// characters (escape sequences, bidi overrides, zero-width spaces) dropped
// and at most 100 characters kept.
func partnerWords(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			continue
		}
		if n == 100 {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// partnerReference is a reference or code the other program sent, as a
// conversion keeps it: control and formatting characters dropped, as
// partnerWords does, and at most 200 bytes of whole characters kept, the
// most a person's resolution may give.
func partnerReference(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > 200 {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mismatch logs a conversion the other program answers otherwise than we
// settled it and records the dispute on the conversion, where the back
// office and /metrics show it.
func (w *Worker) mismatch(ctx context.Context, c core.Conversion, a Answer, now time.Time,
	errs *[]error) Mismatch {
	m := Mismatch{Conversion: c.ID, External: c.External, Ours: c.Status,
		Theirs: a.Outcome.String()}
	if a.Contradicts {
		m.Theirs = "contradictory"
	}
	w.log.Error("Conversion differs from the partner's answer; a person must look",
		"conversion_id", c.ID, "program", c.Program, "external", c.External,
		"ours", c.Status, "ours_reference", c.Reference, "theirs", m.Theirs,
		"theirs_reference", partnerWords(a.Reference), "theirs_code", partnerWords(a.Code))
	theirs := "the other program answers " + m.Theirs
	if a.Reference != "" {
		theirs += " (reference " + partnerWords(a.Reference) + ")"
	}
	if a.Code != "" {
		theirs += " (code " + partnerWords(a.Code) + ")"
	}
	if a.Contradicts {
		theirs = "the other program's answers contradict each other: " + a.Detail
	}
	if err := w.ledger.DisputeConversion(ctx, c.ID, theirs, now); err != nil {
		*errs = append(*errs, err)
	}
	return m
}
