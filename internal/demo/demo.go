// Package demo loads IBM's telecom customer sample into a running Puntos
// through its REST gateway: one program, a member per subscriber, and each
// subscriber's monthly bill payments, back-dated month by month over their
// tenure. Every write carries an idempotency key derived from the data
// alone, so running the demo again adds nothing.
//
// The demo is a plain HTTP client: it knows the gateway's routes and JSON
// bodies, not the core's types, exactly as an operator's billing system
// would.
package demo

import (
	"bytes"
	"context"
	_ "embed" // the telecom sample
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "time/tzdata" // bill dates must not depend on the machine's zoneinfo
)

// telcoCSV is data/Telco-Customer-Churn.csv; data/PROVENANCE.md says where
// it comes from.
//
//go:embed data/Telco-Customer-Churn.csv
var telcoCSV []byte

// TimeZone is the zone the demo program runs in and its bills are dated in.
const TimeZone = "America/Santiago"

// DefaultAsOf is the day whose month holds every subscriber's latest bill.
// It is fixed, not today, so that a later run sends identical requests.
const DefaultAsOf = "2026-11-05"

// billDay and billHour place each monthly bill: the 5th at noon, local time.
// Noon keeps the date the same whatever daylight saving does.
const (
	billDay  = 5
	billHour = 12
)

// maxRetries is how often a request that may succeed later (5xx, 429,
// transport errors) is sent again, with the same Idempotency-Key.
const maxRetries = 5

// firstBackoff is the pause before the first retry; it doubles each time.
// A variable so that tests can shorten it.
var firstBackoff = 200 * time.Millisecond

// pollFor bounds how long the demo waits, at the end, for writes the
// gateway accepted with 202 but had not applied yet.
const pollFor = 2 * time.Minute

// Options configures a demo run.
type Options struct {
	// BaseURL is the gateway, e.g. http://127.0.0.1:8080. The demo sends
	// requests to this host only and follows no redirects.
	BaseURL string
	// APIKey authenticates the demo as a client system.
	APIKey string
	// Program is the code of the program to create and load; default "telco".
	Program string
	// Workers is how many subscribers are loaded at once; default 16.
	Workers int
	// AsOf places the latest bill: day 5 of AsOf's month in TimeZone.
	// Zero means DefaultAsOf.
	AsOf time.Time
	// Out receives the progress lines and the summary; nil discards them.
	Out io.Writer
	// Data replaces the embedded telecom sample when set (tests use a few
	// rows). It must have the same header names.
	Data io.Reader
}

// Summary is what a run did. Counts of members and events are of answers
// the gateway gave to this run.
type Summary struct {
	// Subscribers is the number of valid CSV rows.
	Subscribers int
	// MembersNew were enrolled by this run; MembersExisting were enrolled
	// before (the gateway replayed the earlier answer).
	MembersNew, MembersExisting int
	// EventsSent is the number of bill-payment events sent.
	EventsSent int
	// EventsNew were applied by this run; EventsReplayed had been applied
	// before.
	EventsNew, EventsReplayed int
	// Pending were accepted (202) but not yet applied when the run ended.
	Pending int
	// Rejected counts refusals by reason: CSV rows that failed validation
	// and writes the gateway or the ledger refused (4xx).
	Rejected map[string]int
	// Failed counts writes that never got an answer (5xx or transport
	// errors after every retry), by the last reason.
	Failed map[string]int
	// Skipped is the number of events not sent because their member could
	// not be enrolled.
	Skipped int
	// PointsNew is the points credited by this run's new events;
	// PointsReplayed is what the replayed events had credited before.
	PointsNew, PointsReplayed int64
	// LedgerPoints is available plus pending points of the LedgerMembers
	// members this run touched, read after the load; LedgerUnread members
	// could not be read.
	LedgerPoints                int64
	LedgerMembers, LedgerUnread int
	// CutOff events and MembersCutOff sign-ups were on their way when the
	// run stopped: each may or may not have been applied, and a later run,
	// sending them again with the same ids, tells which (as a replay or as
	// new).
	CutOff, MembersCutOff int
	// Stopped is set when the run ended early (interrupted, or the gateway
	// stopped answering): the ledger was not read, and what is pending was
	// not asked about.
	Stopped bool
	// Elapsed is the whole run; SendElapsed the enrolment and event phase.
	Elapsed, SendElapsed time.Duration
}

// RejectedTotal is the number of refusals of every reason.
func (s Summary) RejectedTotal() int { return sumCounts(s.Rejected) }

// FailedTotal is the number of writes that never got an answer.
func (s Summary) FailedTotal() int { return sumCounts(s.Failed) }

func sumCounts(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// Subscriber is one valid row of the sample.
type Subscriber struct {
	// Line is the row's line number in the file (the header is line 1).
	Line int
	// CustomerID is the subscriber's reference, the member's customer_ref.
	CustomerID string
	// Tenure is how many months the subscriber has been billed.
	Tenure int
	// MonthlyCharges is the monthly bill, a decimal string as written.
	MonthlyCharges string
	// TotalCharges is what billing has charged so far, exactly as written:
	// it may be blank (" ") for subscribers with tenure 0.
	TotalCharges string
	// Attributes are what the rules read of the member (contract, payment
	// method, plan, segments), when the file has those columns.
	Attributes *Attributes
}

// BlankTotal reports whether TotalCharges is blank.
func (s Subscriber) BlankTotal() bool { return strings.TrimSpace(s.TotalCharges) == "" }

// RowError is a CSV row the demo refuses to send.
type RowError struct {
	Line   int
	Field  string
	Reason string
}

func (e RowError) Error() string {
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Reason)
}

// Column names the demo reads, matched against the header.
const (
	colCustomerID     = "customerID"
	colTenure         = "tenure"
	colMonthlyCharges = "MonthlyCharges"
	colTotalCharges   = "TotalCharges"
)

// maxTenure bounds a row's tenure: a hundred years of monthly bills.
const maxTenure = 1200

var decimalRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// ParseSubscribers reads the sample: a header row naming the columns, then
// one subscriber a row. Columns are found by name (case-insensitive), in any
// order. Rows that fail validation come back as RowErrors and the others
// still parse; an error return means the file itself cannot be used.
func ParseSubscribers(r io.Reader) ([]Subscriber, []RowError, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true

	// The header: find the four columns by name.
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("read header: %w", err)
	}
	idx := map[string]int{colCustomerID: -1, colTenure: -1, colMonthlyCharges: -1,
		colTotalCharges: -1}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		for name := range idx {
			if strings.EqualFold(h, name) && idx[name] < 0 {
				idx[name] = i
			}
		}
	}
	var missing []string
	for _, name := range []string{colCustomerID, colTenure, colMonthlyCharges, colTotalCharges} {
		if idx[name] < 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("header: no column named %s", strings.Join(missing, ", "))
	}
	cr.FieldsPerRecord = len(header)
	cols := map[string]int{}
	for i, h := range header {
		cols[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	rules, _ := loadRuleSet()

	// The rows: validate each, remember where every customerID was first seen.
	var subs []Subscriber
	var bad []RowError
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			bad = append(bad, RowError{Line: pe.Line, Field: "row", Reason: pe.Err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read rows: %w", err)
		}
		line, _ := cr.FieldPos(0)
		s, rerr := parseRow(rec, idx, line)
		if rerr == nil && rules != nil {
			s.Attributes = rules.attributesOf(rec, cols)
		}
		if rerr == nil {
			if first, dup := seen[s.CustomerID]; dup {
				rerr = &RowError{Line: line, Field: colCustomerID,
					Reason: fmt.Sprintf("%q repeats line %d", s.CustomerID, first)}
			}
		}
		if rerr != nil {
			bad = append(bad, *rerr)
			continue
		}
		seen[s.CustomerID] = line
		subs = append(subs, s)
	}
	return subs, bad, nil
}

// parseRow validates one record.
func parseRow(rec []string, idx map[string]int, line int) (Subscriber, *RowError) {
	fail := func(field, format string, args ...any) (Subscriber, *RowError) {
		return Subscriber{}, &RowError{Line: line, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	s := Subscriber{Line: line,
		CustomerID:     strings.TrimSpace(rec[idx[colCustomerID]]),
		MonthlyCharges: strings.TrimSpace(rec[idx[colMonthlyCharges]]),
		TotalCharges:   rec[idx[colTotalCharges]],
	}
	if s.CustomerID == "" {
		return fail(colCustomerID, "is empty")
	}
	if len(s.CustomerID) > 128 || strings.ContainsFunc(s.CustomerID, func(r rune) bool {
		return r < 0x20 || r == 0x7f
	}) {
		return fail(colCustomerID, "must be 1-128 printable characters")
	}
	tenure := strings.TrimSpace(rec[idx[colTenure]])
	n, err := strconv.Atoi(tenure)
	if err != nil || n < 0 || n > maxTenure {
		return fail(colTenure, "must be a whole number of months from 0 to %d, got %q",
			maxTenure, tenure)
	}
	s.Tenure = n
	if !decimalRE.MatchString(s.MonthlyCharges) {
		return fail(colMonthlyCharges, "must be a decimal amount such as 29.85, got %q",
			s.MonthlyCharges)
	}
	if t := strings.TrimSpace(s.TotalCharges); t != "" && !decimalRE.MatchString(t) {
		return fail(colTotalCharges, "must be blank or a decimal amount, got %q", t)
	}
	return s, nil
}

// Bill is one bill-payment event to send for a subscriber.
type Bill struct {
	// Month is the month of tenure, 1 for the first; 0 for the single bill
	// of a subscriber with no tenure yet.
	Month int
	// Key is the Idempotency-Key: it depends on the subscriber and the
	// month number only, never on the date, so re-runs are stable.
	Key string
	// Amount is the amount paid, as the CSV wrote it.
	Amount string
	// OccurredAt is when the bill was paid.
	OccurredAt time.Time
}

// Bills derives a subscriber's bill payments. Month k of a tenure of n
// months was paid n-k months before AsOf's month, on day 5 at noon in loc;
// the latest falls in AsOf's own month. A subscriber with tenure 0 gets one
// bill in AsOf's month for TotalCharges, what billing has charged so far,
// which is blank in the sample: the gateway is left to judge it.
func Bills(s Subscriber, asOf time.Time, loc *time.Location) []Bill {
	if s.Tenure == 0 {
		return []Bill{{Month: 0, Key: billKey(s.CustomerID, 0), Amount: s.TotalCharges,
			OccurredAt: billDate(asOf, 0, loc)}}
	}
	bills := make([]Bill, 0, s.Tenure)
	for k := 1; k <= s.Tenure; k++ {
		bills = append(bills, Bill{Month: k, Key: billKey(s.CustomerID, k),
			Amount: s.MonthlyCharges, OccurredAt: billDate(asOf, s.Tenure-k, loc)})
	}
	return bills
}

func billKey(customerID string, month int) string {
	return fmt.Sprintf("bill-%s-m%02d", customerID, month)
}

// billDate is the bill date monthsBack months before asOf's month.
func billDate(asOf time.Time, monthsBack int, loc *time.Location) time.Time {
	y, m, _ := asOf.In(loc).Date()
	return time.Date(y, m-time.Month(monthsBack), billDay, billHour, 0, 0, 0, loc)
}

// Location is the demo's time zone.
func Location() (*time.Location, error) {
	loc, err := time.LoadLocation(TimeZone)
	if err != nil {
		return nil, fmt.Errorf("load time zone %s: %w", TimeZone, err)
	}
	return loc, nil
}

// ParseAsOf reads a date (2026-11-05, midnight in TimeZone) or an RFC 3339
// timestamp.
func ParseAsOf(s string) (time.Time, error) {
	loc, err := Location()
	if err != nil {
		return time.Time{}, err
	}
	s = strings.TrimSpace(s)
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (2006-01-02) nor an RFC 3339 "+
			"timestamp", s)
	}
	return t, nil
}

// Request bodies, in the gateway's JSON.
type programBody struct {
	Name            string `json:"name"`
	Currency        string `json:"currency"`
	TimeZone        string `json:"time_zone"`
	PointsPerUnit   string `json:"points_per_unit"`
	AccrualRounding string `json:"accrual_rounding"`
	ExpiryUnit      string `json:"expiry_unit"`
	ExpiryLength    int    `json:"expiry_length"`
	ExpiryRound     string `json:"expiry_round"`
}

type enrollBody struct {
	CustomerRef string      `json:"customer_ref"`
	Channel     string      `json:"channel"`
	Attributes  *Attributes `json:"attributes,omitempty"`
}

// batchEvent is one bill in a request to the batch accrual route; its
// txn_id is the key the bill would have as an Idempotency-Key, so a demo
// run replays what an earlier one sent, whichever route that one used.
type batchEvent struct {
	Member     string `json:"member"`
	TxnID      string `json:"txn_id"`
	Type       string `json:"type"`
	Amount     string `json:"amount"`
	OccurredAt string `json:"occurred_at"`
}

// demoProgram is the program the demo loads into: dollars, one point per
// whole dollar rounded down, points expiring 24 months on, at month end.
var demoProgram = programBody{Name: "Telco demo", Currency: "USD", TimeZone: TimeZone,
	PointsPerUnit: "1", AccrualRounding: "down", ExpiryUnit: "months", ExpiryLength: 24,
	ExpiryRound: "month"}

// programKey is the Idempotency-Key of the program definition; change it
// with the definition.
const programKey = "demo-program-v1"

// Run loads the sample into the gateway at opt.BaseURL and prints a summary
// to opt.Out. It returns an error when the run cannot start or the program
// cannot be defined; refusals of single rows and events are counted in the
// Summary, not returned. When ctx ends, Run stops sending, prints what it
// did and returns ctx's error.
func Run(ctx context.Context, opt Options) (Summary, error) {
	start := time.Now()
	sum := Summary{Rejected: map[string]int{}, Failed: map[string]int{}}

	// Options and their defaults.
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	if opt.Program == "" {
		opt.Program = "telco"
	}
	if opt.Workers <= 0 {
		opt.Workers = 16
	}
	base, err := url.Parse(strings.TrimRight(opt.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return sum, fmt.Errorf("base url: %q is not an http(s) URL", opt.BaseURL)
	}
	loc, err := Location()
	if err != nil {
		return sum, err
	}
	if opt.AsOf.IsZero() {
		if opt.AsOf, err = ParseAsOf(DefaultAsOf); err != nil {
			return sum, err
		}
	}
	if last := billDate(opt.AsOf, 0, loc); last.After(time.Now()) {
		return sum, fmt.Errorf("as of %s: the latest bills would be dated %s, in the future",
			opt.AsOf.Format(time.DateOnly), last.Format(time.RFC3339))
	}

	// The subscribers.
	data := opt.Data
	if data == nil {
		data = bytes.NewReader(telcoCSV)
	}
	subs, bad, err := ParseSubscribers(data)
	if err != nil {
		return sum, fmt.Errorf("telecom sample: %w", err)
	}
	sum.Subscribers = len(subs)
	for _, e := range bad {
		sum.Rejected["CSV "+e.Error()]++
	}
	// The client stops the whole run when the gateway stops answering.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	c := newClient(base.String(), opt.APIKey, opt.Workers)
	c.stop, c.giveUpAfter = stop, int64(max(2*opt.Workers, 10))
	fmt.Fprintf(opt.Out, "Loading %s subscribers into program %q at %s: %d workers, latest "+
		"bills on %s.\n", group(int64(len(subs))), opt.Program, base.Redacted(), opt.Workers,
		billDate(opt.AsOf, 0, loc).Format(time.RFC3339))

	// The program, before any member.
	if err := defineProgram(ctx, c, opt.Program, opt.Out); err != nil {
		return sum, err
	}
	rs, err := loadRuleSet()
	if err != nil {
		return sum, err
	}
	if err := defineRules(ctx, c, opt.Program, rs, opt.Out); err != nil {
		return sum, err
	}

	// Members and their bills, one subscriber at a time per worker.
	sendStart := time.Now()
	tallies, touched := load(ctx, c, opt, subs, loc)
	for _, t := range tallies {
		sum.merge(&t.Summary)
	}
	sum.SendElapsed = time.Since(sendStart)

	// Writes still in flight: ask for their results, a bounded while.
	var waiting []pendingWrite
	for _, t := range tallies {
		waiting = append(waiting, t.pending...)
	}
	if len(waiting) > 0 && ctx.Err() == nil {
		fmt.Fprintf(opt.Out, "Waiting up to %s for %s writes accepted but not yet applied.\n",
			pollFor, group(int64(len(waiting))))
		waiting = resolvePending(ctx, c, waiting, opt.Workers, &sum)
	}
	sum.Pending = len(waiting)

	// What the ledger now holds for the members touched.
	if ctx.Err() == nil {
		ledgerTotals(ctx, c, opt.Program, touched, opt.Workers, &sum)
	} else {
		sum.Stopped = true
	}
	sum.Elapsed = time.Since(start)
	sum.Print(opt.Out)
	return sum, context.Cause(ctx)
}

// defineProgram creates or updates the demo program and waits until the
// ledger has it.
func defineProgram(ctx context.Context, c *client, program string, out io.Writer) error {
	path := "/v1/programs/" + url.PathEscape(program)
	a := c.write(ctx, http.MethodPut, path, programKey, demoProgram)
	if a.verdict == pending {
		a = c.await(ctx, a.txn, pollFor)
	}
	switch a.verdict {
	case applied:
		fmt.Fprintf(out, "Program %s: defined.\n", program)
		return nil
	case replayed:
		fmt.Fprintf(out, "Program %s: already defined by an earlier run.\n", program)
		return nil
	case rejected:
		// A refusal as a conflict may still leave a usable program: say so
		// and go on only if the program exists.
		if a.status == http.StatusConflict {
			if code, err := c.get(ctx, path, nil); err == nil && code == http.StatusOK {
				fmt.Fprintf(out, "Program %s: exists; its definition was not sent again (%s).\n",
					program, a.reason)
				return nil
			}
		}
		return fmt.Errorf("define program %s: refused: %s", program, a.reason)
	case pending:
		return fmt.Errorf("define program %s: not applied within %s", program, pollFor)
	}
	return fmt.Errorf("define program %s: %s", program, a.reason)
}

// tally is one worker's share of the counts.
type tally struct {
	Summary
	pending []pendingWrite
}

// pendingWrite is a write answered 202: its result is asked for later.
type pendingWrite struct {
	txn   string
	event bool
}

// load enrolls the subscribers and sends their bills over opt.Workers
// workers, each taking one subscriber at a time. It returns the workers'
// counts and the members whose balance is worth reading.
func load(ctx context.Context, c *client, opt Options, subs []Subscriber,
	loc *time.Location) ([]tally, []string) {
	jobs := make(chan Subscriber)
	tallies := make([]tally, opt.Workers)
	touched := make([][]string, opt.Workers)
	var done atomic.Int64
	var wg sync.WaitGroup
	for w := range opt.Workers {
		t := &tallies[w]
		t.Rejected, t.Failed = map[string]int{}, map[string]int{}
		wg.Go(func() {
			for s := range jobs {
				if loadOne(ctx, c, opt.Program, s, opt.AsOf, loc, t) {
					touched[w] = append(touched[w], s.CustomerID)
				}
				done.Add(1)
			}
		})
	}

	// Progress every few seconds: a full load takes minutes.
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		began := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := c.requests.Load()
				fmt.Fprintf(opt.Out, "  %s of %s subscribers, %s requests, %s requests/s\n",
					group(done.Load()), group(int64(len(subs))), group(n),
					group(int64(float64(n)/time.Since(began).Seconds())))
			}
		}
	})

	// Longest tenures first: a subscriber's bills go one after another, so
	// a long one started last would leave one worker running alone.
	order := slices.Clone(subs)
	slices.SortStableFunc(order, func(a, b Subscriber) int { return b.Tenure - a.Tenure })

	sent := 0
feed:
	for _, s := range order {
		select {
		case jobs <- s:
			sent++
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	for _, s := range order[sent:] {
		tallies[0].Skipped += max(s.Tenure, 1)
	}
	close(stop)
	pwg.Wait()

	var all []string
	for _, t := range touched {
		all = append(all, t...)
	}
	return tallies, all
}

// loadOne enrolls one subscriber, then sends their bills in order. It
// reports whether the member may exist afterwards.
func loadOne(ctx context.Context, c *client, program string, s Subscriber, asOf time.Time,
	loc *time.Location, t *tally) bool {
	members := "/v1/programs/" + url.PathEscape(program) + "/members"
	bills := Bills(s, asOf, loc)

	// Enrolment. A conflict may mean the member is there already, so their
	// bills are still sent (and judged one by one); other refusals and
	// failures skip them.
	a := c.write(ctx, http.MethodPost, members, "enroll-"+s.CustomerID,
		enrollBody{CustomerRef: s.CustomerID, Channel: "demo", Attributes: s.Attributes})
	t.add(a, false)
	if (a.verdict == rejected && a.status != http.StatusConflict) || a.verdict == failed {
		t.Skipped += len(bills)
		return false
	}

	// The bills, oldest first, in one batch request: a subscriber has at
	// most a few dozen, well under the route's 500.
	if ctx.Err() != nil {
		t.Skipped += len(bills)
		return true
	}
	events := make([]batchEvent, len(bills))
	for i, b := range bills {
		events[i] = batchEvent{Member: s.CustomerID, TxnID: b.Key, Type: "bill_paid",
			Amount: b.Amount, OccurredAt: b.OccurredAt.Format(time.RFC3339)}
	}
	t.EventsSent += len(events)
	for _, a := range c.writeBatch(ctx, "/v1/programs/"+url.PathEscape(program)+
		"/events/batches", events) {
		t.add(a, true)
	}
	return true
}

// add counts one answer: an enrolment's or, when event is set, a bill's.
// A pending answer is kept to be asked about later.
func (t *tally) add(a answer, event bool) {
	if a.verdict == pending {
		t.pending = append(t.pending, pendingWrite{txn: a.txn, event: event})
		return
	}
	t.Summary.count(a, event)
}

// count adds one settled answer to s.
func (s *Summary) count(a answer, event bool) {
	what := "enrollment: "
	if event {
		what = "bill_paid event: "
	}
	switch {
	case a.verdict == rejected:
		s.Rejected[what+a.reason]++
	case a.verdict == failed:
		s.Failed[what+a.reason]++
	case a.verdict == cutOff && event:
		s.CutOff++
	case a.verdict == cutOff:
		s.MembersCutOff++
	case event && a.verdict == applied:
		s.EventsNew++
		s.PointsNew += a.points
	case event && a.verdict == replayed:
		s.EventsReplayed++
		s.PointsReplayed += a.points
	case a.verdict == applied:
		s.MembersNew++
	case a.verdict == replayed:
		s.MembersExisting++
	}
}

// merge adds o's counts to s.
func (s *Summary) merge(o *Summary) {
	s.MembersNew += o.MembersNew
	s.MembersExisting += o.MembersExisting
	s.EventsSent += o.EventsSent
	s.EventsNew += o.EventsNew
	s.EventsReplayed += o.EventsReplayed
	s.Skipped += o.Skipped
	s.PointsNew += o.PointsNew
	s.PointsReplayed += o.PointsReplayed
	s.CutOff += o.CutOff
	s.MembersCutOff += o.MembersCutOff
	for k, v := range o.Rejected {
		s.Rejected[k] += v
	}
	for k, v := range o.Failed {
		s.Failed[k] += v
	}
}

// resolvePending asks for the results of writes answered 202 until each is
// done or pollFor has passed, and counts them. It returns those still
// pending.
func resolvePending(ctx context.Context, c *client, waiting []pendingWrite, workers int,
	sum *Summary) []pendingWrite {
	var mu sync.Mutex
	var still []pendingWrite
	jobs := make(chan pendingWrite)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range jobs {
				a := c.await(ctx, p.txn, pollFor)
				mu.Lock()
				if a.verdict == pending {
					still = append(still, p)
				} else {
					sum.count(a, p.event)
				}
				mu.Unlock()
			}
		})
	}
	for _, p := range waiting {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	return still
}

// ledgerTotals reads the balance of every member touched and adds up their
// available and pending points.
func ledgerTotals(ctx context.Context, c *client, program string, members []string,
	workers int, sum *Summary) {
	var total atomic.Int64
	var read, unread atomic.Int64
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for m := range jobs {
				var b struct {
					Balance struct {
						Available int64 `json:"available"`
						Pending   int64 `json:"pending"`
					} `json:"balance"`
				}
				code, err := c.get(ctx, "/v1/programs/"+url.PathEscape(program)+"/members/"+
					url.PathEscape(m)+"/balance", &b)
				if err != nil || code != http.StatusOK {
					unread.Add(1)
					continue
				}
				read.Add(1)
				total.Add(b.Balance.Available + b.Balance.Pending)
			}
		})
	}
	for _, m := range members {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	sum.LedgerPoints = total.Load()
	sum.LedgerMembers, sum.LedgerUnread = int(read.Load()), int(unread.Load())
}

// Print writes the summary for a person to read.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "\nMembers enrolled:  %s new, %s already there\n", group(int64(s.MembersNew)),
		group(int64(s.MembersExisting)))
	if s.MembersCutOff > 0 {
		fmt.Fprintf(w, "Sign-ups cut off:  %s (on their way when the run stopped: made or "+
			"not, the next run tells)\n", group(int64(s.MembersCutOff)))
	}
	fmt.Fprintf(w, "Events sent:       %s\n", group(int64(s.EventsSent)))
	fmt.Fprintf(w, "Events accepted:   %s new, %s already applied (replay)\n",
		group(int64(s.EventsNew)), group(int64(s.EventsReplayed)))
	fmt.Fprintf(w, "Still pending:     %s\n", group(int64(s.Pending)))
	fmt.Fprintf(w, "Rejected:          %s\n", group(int64(s.RejectedTotal())))
	printCounts(w, s.Rejected)
	fmt.Fprintf(w, "Failed:            %s\n", group(int64(s.FailedTotal())))
	printCounts(w, s.Failed)
	if s.CutOff > 0 {
		fmt.Fprintf(w, "Events cut off:    %s (on their way when the run stopped: applied or "+
			"not, the next run tells)\n", group(int64(s.CutOff)))
	}
	if s.Skipped > 0 {
		fmt.Fprintf(w, "Events not sent:   %s (member not enrolled, or interrupted)\n",
			group(int64(s.Skipped)))
	}
	fmt.Fprintf(w, "Points credited by this run:  %s (replays had credited %s before)\n",
		group(s.PointsNew), group(s.PointsReplayed))
	switch {
	case s.Stopped:
		fmt.Fprintln(w, "Points on the ledger:         not read: the run stopped early. What "+
			"was applied is kept; run it again to send the rest (nothing is credited twice).")
	default:
		fmt.Fprintf(w, "Points on the ledger:         %s available + pending, over %s members",
			group(s.LedgerPoints), group(int64(s.LedgerMembers)))
		if s.LedgerUnread > 0 {
			fmt.Fprintf(w, " (%s members could not be read)", group(int64(s.LedgerUnread)))
		}
		fmt.Fprintln(w)
	}
	rate := 0.0
	if secs := s.SendElapsed.Seconds(); secs > 0 {
		rate = float64(s.EventsSent) / secs
	}
	fmt.Fprintf(w, "Time taken:        %s (sending %s, %s events/s)\n",
		s.Elapsed.Round(time.Millisecond), s.SendElapsed.Round(time.Millisecond),
		group(int64(rate)))
}

// printCounts lists reasons by count, most frequent first, at most 20.
func printCounts(w io.Writer, m map[string]int) {
	reasons := make([]string, 0, len(m))
	for r := range m {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if m[reasons[i]] != m[reasons[j]] {
			return m[reasons[i]] > m[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	for i, r := range reasons {
		if i == 20 {
			fmt.Fprintf(w, "  %8s  (%d more reasons)\n", "", len(reasons)-i)
			break
		}
		fmt.Fprintf(w, "  %8s  %s\n", group(int64(m[r])), r)
	}
}

// group writes n with thousands separators: 227,990.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// verdict is what one write came to.
type verdict int

const (
	applied  verdict = iota // 201: applied now
	replayed                // 201 with Idempotent-Replayed: applied by an earlier request
	pending                 // 202: accepted, not applied yet
	rejected                // 4xx: refused; nothing changed
	failed                  // no answer after every retry
	cutOff                  // on its way when the run stopped: applied or not, a later run tells
)

// answer is the outcome of one write.
type answer struct {
	verdict verdict
	status  int
	points  int64
	reason  string // why it was rejected or failed: the problem's detail
	txn     string // for pending
	body    []byte // the answer's body, read by the batch route's caller
}

// client talks to one gateway.
type client struct {
	http     *http.Client
	base     string
	key      string
	requests atomic.Int64

	// After giveUpAfter requests in a row got no answer (each after all its
	// retries), the client calls stop: the gateway is gone, and the rest
	// of the run would only pile up failures.
	streak      atomic.Int64
	giveUpAfter int64
	stop        context.CancelCauseFunc
}

// errGaveUp is the cause a run stops with when the gateway stops
// answering.
var errGaveUp = errors.New("the gateway stopped answering")

// interrupted reports whether ctx ended because the run was stopped from
// outside (Ctrl-C), not because it gave up on the gateway.
func interrupted(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errGaveUp)
}

// settle notes whether a request got an answer in the end.
func (c *client) settle(ctx context.Context, answered bool, why string) {
	if answered {
		c.streak.Store(0)
		return
	}
	if ctx.Err() != nil || c.stop == nil {
		return
	}
	if n := c.streak.Add(1); n == c.giveUpAfter {
		c.stop(fmt.Errorf("%w: %d requests in a row failed after %d retries each; last: %s",
			errGaveUp, n, maxRetries, why))
	}
}

func newClient(base, key string, workers int) *client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // never through a proxy: the gateway only
		DialContext:           dialer.DialContext,
		MaxIdleConns:          workers,
		MaxIdleConnsPerHost:   workers,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &client{base: base, key: key, http: &http.Client{Transport: tr,
		Timeout: time.Minute,
		// Redirects are answered, not followed: traffic stays on base.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
}

// result is the gateway's answer to an applied write, and the body of
// GET /v1/commands/{txn}.
type result struct {
	Status   string `json:"status"`
	Replayed bool   `json:"replayed"`
	Error    *struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"error"`
	Data struct {
		Points int64 `json:"points"`
	} `json:"data"`
}

// problem is the part of a problem document the demo reads.
type problem struct {
	Detail string `json:"detail"`
}

// write sends one write with its Idempotency-Key, retrying what may succeed
// later with the same key.
func (c *client) write(ctx context.Context, method, path, key string, body any) answer {
	payload, err := json.Marshal(body)
	if err != nil {
		return answer{verdict: failed, reason: "encode body: " + err.Error()}
	}
	var last answer
	for attempt := 0; attempt <= maxRetries; attempt++ {
		if attempt > 0 && !sleep(ctx, backoff(attempt)) {
			break
		}
		last = c.writeOnce(ctx, method, path, key, payload)
		if last.verdict != failed {
			c.settle(ctx, true, "")
			return last
		}
	}
	if interrupted(ctx) {
		// The write may have reached the ledger before the run stopped.
		return answer{verdict: cutOff, reason: "interrupted: " + context.Cause(ctx).Error()}
	}
	c.settle(ctx, false, last.reason)
	return last
}

func (c *client) writeOnce(ctx context.Context, method, path, key string, payload []byte) answer {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(payload))
	if err != nil {
		return answer{verdict: failed, reason: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.key)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{verdict: failed, reason: transportReason(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_, _ = io.Copy(io.Discard, resp.Body)
	if err != nil {
		return answer{verdict: failed, status: resp.StatusCode, reason: transportReason(err)}
	}

	a := answer{status: resp.StatusCode, body: raw}
	switch code := resp.StatusCode; {
	case code == http.StatusCreated:
		var r result
		if err := json.Unmarshal(raw, &r); err != nil {
			a.verdict, a.reason = failed, "201 with an unreadable body"
			return a
		}
		a.verdict, a.points = applied, r.Data.Points
		if resp.Header.Get("Idempotent-Replayed") == "true" {
			a.verdict = replayed
		}
	case code == http.StatusAccepted:
		var r struct {
			TxnID string `json:"txn_id"`
		}
		_ = json.Unmarshal(raw, &r)
		a.verdict, a.txn = pending, r.TxnID
		if a.txn == "" {
			a.txn = key
		}
	case code >= 400 && code < 500 && code != http.StatusTooManyRequests:
		a.verdict, a.reason = rejected, problemDetail(code, raw)
	default:
		a.verdict, a.reason = failed, problemDetail(code, raw)
	}
	return a
}

// batchAnswer is the part of the batch route's answer the demo reads: one
// item per event, in the order sent, each with the status the single route
// would have given.
type batchAnswer struct {
	Items []struct {
		Index  int     `json:"index"`
		TxnID  string  `json:"txn_id"`
		Status int     `json:"status"`
		Result *result `json:"result"`
		Error  *struct {
			Detail string `json:"detail"`
		} `json:"error"`
	} `json:"items"`
}

// batchPlace is how the batch route names an event's place in a refusal.
var batchPlace = regexp.MustCompile(`^events\[\d+\]\.`)

// writeBatch sends events to the batch route and returns one answer per
// event. Events the bus could not take (an item answered 5xx) and whole
// requests that failed are sent again, the same events with the same ids,
// so nothing is credited twice.
func (c *client) writeBatch(ctx context.Context, path string, events []batchEvent) []answer {
	out := make([]answer, len(events))
	todo := make([]int, len(events)) // indexes into events still without an answer
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; attempt <= maxRetries && len(todo) > 0; attempt++ {
		if attempt > 0 && !sleep(ctx, backoff(attempt)) {
			break
		}
		send := make([]batchEvent, len(todo))
		for i, j := range todo {
			send[i] = events[j]
		}
		payload, err := json.Marshal(map[string]any{"events": send})
		if err != nil {
			for _, j := range todo {
				out[j] = answer{verdict: failed, reason: "encode body: " + err.Error()}
			}
			return out
		}
		whole := c.writeOnce(ctx, http.MethodPost, path, "", payload)
		switch {
		case whole.status == http.StatusOK || whole.status == http.StatusAccepted:
		case whole.verdict == rejected:
			// The gateway refused the request as a whole: every event with it.
			// The reason names the event's field without its place in the
			// request, so that the summary groups refusals by what was wrong.
			whole.reason = batchPlace.ReplaceAllString(whole.reason, "")
			for _, j := range todo {
				out[j] = whole
			}
			c.settle(ctx, true, "")
			return out
		default:
			for _, j := range todo {
				out[j] = answer{verdict: failed, status: whole.status, reason: whole.reason}
			}
			continue
		}
		c.settle(ctx, true, "")
		var ans batchAnswer
		if err := json.Unmarshal(whole.body, &ans); err != nil || len(ans.Items) != len(todo) {
			for _, j := range todo {
				out[j] = answer{verdict: failed, status: whole.status,
					reason: "batch answer unreadable or of the wrong length"}
			}
			continue
		}
		var again []int
		for i, it := range ans.Items {
			j := todo[i]
			out[j] = itemAnswer(it.Status, it.TxnID, it.Result, it.Error)
			if out[j].verdict == failed {
				again = append(again, j)
			}
		}
		todo = again
	}
	if len(todo) > 0 && interrupted(ctx) {
		for _, j := range todo {
			out[j] = answer{verdict: cutOff, reason: "interrupted"}
		}
		return out
	}
	if len(todo) > 0 {
		c.settle(ctx, false, out[todo[0]].reason)
	}
	return out
}

// itemAnswer turns one item of a batch answer into the answer the single
// route would have given.
func itemAnswer(status int, txn string, r *result, perr *struct {
	Detail string `json:"detail"`
}) answer {
	a := answer{status: status}
	switch {
	case status == http.StatusCreated && r != nil:
		a.verdict, a.points = applied, r.Data.Points
		if r.Replayed {
			a.verdict = replayed
		}
	case status == http.StatusAccepted:
		a.verdict, a.txn = pending, txn
	case status >= 400 && status < 500 && status != http.StatusTooManyRequests:
		a.verdict, a.reason = rejected, fmt.Sprintf("HTTP %d", status)
		if perr != nil && perr.Detail != "" {
			a.reason = perr.Detail
		}
	default:
		a.verdict, a.reason = failed, fmt.Sprintf("HTTP %d", status)
		if perr != nil && perr.Detail != "" {
			a.reason = perr.Detail
		}
	}
	return a
}

// await asks for a pending write's result until it is done or wait passes;
// the wait bounds the retries of each question too.
func (c *client) await(ctx context.Context, txn string, wait time.Duration) answer {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		var r result
		code, err := c.get(wctx, "/v1/commands/"+url.PathEscape(txn), &r)
		switch {
		case err != nil && wctx.Err() != nil:
			// The wait ran out, or the run stopped: it stays pending.
			return answer{verdict: pending, txn: txn}
		case err != nil:
			return answer{verdict: failed, reason: err.Error()}
		case code != http.StatusOK:
			return answer{verdict: failed, status: code,
				reason: fmt.Sprintf("status of %s: HTTP %d", txn, code)}
		case r.Status == "ok" && r.Replayed:
			return answer{verdict: replayed, status: code, points: r.Data.Points}
		case r.Status == "ok":
			return answer{verdict: applied, status: code, points: r.Data.Points}
		case r.Status == "rejected":
			reason := "rejected"
			if r.Error != nil {
				reason = r.Error.Message
				if r.Error.Field != "" {
					reason = r.Error.Field + ": " + r.Error.Message
				}
			}
			return answer{verdict: rejected, status: code, reason: reason}
		}
		if !sleep(wctx, pause) {
			return answer{verdict: pending, txn: txn}
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// get reads path into v (when not nil), retrying what may succeed later.
// It returns the final HTTP status.
func (c *client) get(ctx context.Context, path string, v any) (int, error) {
	code, err := c.getOnce(ctx, path, v)
	c.settle(ctx, code != 0, fmt.Sprint(err))
	return code, err
}

func (c *client) getOnce(ctx context.Context, path string, v any) (int, error) {
	var lastErr error
	for attempt := 0; attempt <= maxRetries; attempt++ {
		if attempt > 0 && !sleep(ctx, backoff(attempt)) {
			break
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.key)
		c.requests.Add(1)
		resp, err := c.http.Do(req)
		if err != nil {
			lastErr = errors.New(transportReason(err))
			continue
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case err != nil:
			lastErr = errors.New(transportReason(err))
			continue
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			lastErr = errors.New(problemDetail(resp.StatusCode, raw))
			continue
		case resp.StatusCode == http.StatusOK && v != nil:
			if err := json.Unmarshal(raw, v); err != nil {
				return resp.StatusCode, fmt.Errorf("GET %s: unreadable body: %w", path, err)
			}
		}
		return resp.StatusCode, nil
	}
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	return 0, fmt.Errorf("GET %s: %w", path, lastErr)
}

// problemDetail is a refusal's reason: the problem document's detail, or
// the status and the start of the body when there is none.
func problemDetail(code int, raw []byte) string {
	var p problem
	if err := json.Unmarshal(raw, &p); err == nil && p.Detail != "" {
		return p.Detail
	}
	text := strings.TrimSpace(string(raw))
	if len(text) > 120 {
		text = text[:120] + "..."
	}
	if text == "" {
		return fmt.Sprintf("HTTP %d", code)
	}
	return fmt.Sprintf("HTTP %d: %s", code, text)
}

// transportReason names a transport error without the URL, so that the
// same failure groups under one reason.
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return "transport: " + err.Error()
}

// backoff is the pause before retry attempt n (1-based): doubling from
// firstBackoff, with up to a quarter of jitter so workers do not retry in
// step.
func backoff(n int) time.Duration {
	d := firstBackoff << (n - 1)
	return d + rand.N(d/4+1)
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
