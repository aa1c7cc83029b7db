package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// pointsPerEvent is what one benchmark accrual earns: an amount of 10 at
// one point per unit.
const pointsPerEvent = 10

var accrualBody = []byte(`{"type":"purchase","amount":"10"}`)

// accounting counts the accruals answered over the whole run, to compare
// with the ledger at the end.
type accounting struct {
	committed atomic.Int64 // 201: committed in PostgreSQL before the answer
	accepted  atomic.Int64 // 202: held by the bus, committed later
	unknown   atomic.Int64 // no answer after retries: may or may not be posted
}

// runner runs the scenarios against one target.
type runner struct {
	o       *options
	c       *client
	program string
	acct    *accounting
	target  *target
	stamp   string
	machine machine
	out     io.Writer
	// accrualRate is the throughput scenario a measured, in answers/s.
	accrualRate float64
}

// result is one scenario's JSON file.
type result struct {
	Scenario   string    `json:"scenario"`
	What       string    `json:"what"`
	StartedAt  time.Time `json:"started_at"`
	Machine    machine   `json:"machine"`
	LoadBefore loadNote  `json:"load_before"`
	LoadAfter  loadNote  `json:"load_after"`
	// StealPercent is the share of the CPU time the hypervisor took away
	// during the scenario (-1: unknown).
	StealPercent float64        `json:"steal_percent"`
	Platform     map[string]any `json:"platform"`
	Settings     map[string]any `json:"settings"`
	Figures      map[string]any `json:"figures"`
	Check        check          `json:"ledger_check"`
	Profile      string         `json:"cpu_profile,omitempty"`
	Skipped      string         `json:"skipped,omitempty"`
}

// writer counts one kind of request's answers and times those that count.
type writer struct {
	mu     sync.Mutex
	lat    []time.Duration // requests answered with the status that counts
	lat202 []time.Duration
	other  map[int]int // other statuses; 0 is a transport error
}

func (w *writer) note(status int, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch status {
	case http.StatusCreated, http.StatusOK:
		w.lat = append(w.lat, d)
	case http.StatusAccepted:
		w.lat202 = append(w.lat202, d)
	default:
		if w.other == nil {
			w.other = map[int]int{}
		}
		w.other[status]++
	}
}

// accrue sends one accrual, retrying with the same Idempotency-Key when no
// answer came or the platform was unavailable, as a careful client would.
// It returns the last status and the time from the first attempt.
func (r *runner) accrue(ctx context.Context, txn string) (int, time.Duration) {
	path := "/v1/programs/" + r.program + "/members/" + memberRef(rand.IntN(r.o.members)) +
		"/events"
	start := time.Now()
	status := 0
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		st, _, err := r.c.do(context.WithoutCancel(ctx), http.MethodPost, path, txn, accrualBody)
		if err != nil {
			st = 0
		}
		status = st
		if st != 0 && st != http.StatusServiceUnavailable && st < 500 {
			break
		}
	}
	switch status {
	case http.StatusCreated:
		r.acct.committed.Add(1)
	case http.StatusAccepted:
		r.acct.accepted.Add(1)
	case 0, http.StatusServiceUnavailable, http.StatusInternalServerError:
		r.acct.unknown.Add(1)
	}
	return status, time.Since(start)
}

func (r *runner) scenario(ctx context.Context, name string) (*result, error) {
	res := &result{Scenario: name, StartedAt: time.Now().UTC(), Machine: r.machine,
		Platform: r.target.config, LoadBefore: describeLoad()}
	var err error
	switch name {
	case "accrual":
		res.Scenario = "accrual-rest"
		err = r.accrualScenario(ctx, res)
	case "balance":
		res.Scenario = "balance-rest"
		err = r.balanceScenario(ctx, res)
	case "batch":
		res.Scenario = "batch-rest"
		err = r.batchScenario(ctx, res, r.o.batchClients, "c")
	case "batch-wide":
		res.Scenario = "batch-rest-wide"
		err = r.batchScenario(ctx, res, r.o.batchWide, "cw")
	case "soap":
		res.Scenario = "accrual-soap"
		err = r.soapScenario(ctx, res, r.o.soapClients, "d")
	case "soap-wide":
		res.Scenario = "accrual-soap-wide"
		err = r.soapScenario(ctx, res, r.o.wideClients, "w")
	case "bus":
		res.Scenario = "batch-bus"
		ran, berr := r.busScenario(ctx, res)
		if berr == nil && !ran {
			return nil, nil
		}
		err = berr
	default:
		return nil, fmt.Errorf("unknown scenario %q (want accrual, balance, batch, "+
			"batch-wide, soap, soap-wide or bus)", name)
	}
	if err != nil {
		return nil, err
	}
	if r.o.tiers {
		res.Settings["tiers"] = true
	}
	res.LoadAfter = describeLoad()
	res.StealPercent = res.LoadAfter.StealSince(res.LoadBefore)
	res.Check, err = r.checkLedger(ctx)
	if err != nil {
		return nil, err
	}
	r.report(res)
	return res, r.save(res)
}

// accrualScenario is scenario a: clients each send one accrual per request,
// back to back, for the duration.
func (r *runner) accrualScenario(ctx context.Context, res *result) error {
	res.What = "accruals through REST, one event per request, closed loop"
	res.Settings = map[string]any{"duration": r.o.duration.String(), "clients": r.o.clients,
		"members": r.o.members, "points_per_event": pointsPerEvent}

	stop, err := r.startProfile(res)
	if err != nil {
		return err
	}
	defer stop()

	w := &writer{}
	k0 := r.c.scrape(ctx)
	cpu0 := r.sampleCPU(ctx)
	start := time.Now()
	deadline := start.Add(r.o.duration)
	var wg sync.WaitGroup
	for cl := range r.o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				st, d := r.accrue(ctx, fmt.Sprintf("a-%d-%d", cl, seq))
				w.note(st, d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()

	answered := len(w.lat) + len(w.lat202)
	r.accrualRate = float64(answered) / elapsed.Seconds()
	res.Figures = map[string]any{
		"cpu":                 r.cpuSince(ctx, cpu0, answered),
		"elapsed_s":           elapsed.Seconds(),
		"answered_per_s":      perSecond(answered, elapsed),
		"committed_per_s":     perSecond(len(w.lat), elapsed),
		"answers_201":         len(w.lat),
		"answers_202":         len(w.lat202),
		"other_answers":       statusCounts(w.other),
		"latency_201":         summarise(w.lat),
		"latency_202":         summarise(w.lat202),
		"core":                r.c.scrape(ctx).since(k0),
		"target_events_per_s": 10000,
		"target_p99_ms":       50,
	}
	return nil
}

// startProfile writes a CPU profile of the scenario next to its results,
// for an in-process run with -profile. The function it returns stops the
// profile and closes the file; calling it again does nothing.
func (r *runner) startProfile(res *result) (func(), error) {
	if !r.target.inProcess || !r.o.profile {
		return func() {}, nil
	}
	path := filepath.Join(r.o.out, r.stamp+"-"+res.Scenario+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("profile: %w", err)
	}
	res.Profile = path
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}, nil
}

// balanceScenario is scenario b: balance reads at a target rate while
// accruals run at a fixed rate, both open loop.
func (r *runner) balanceScenario(ctx context.Context, res *result) error {
	rate := float64(r.o.accrualRate)
	if rate <= 0 {
		rate = r.accrualRate / 2
	}
	if rate < 1 {
		rate = 100
	}
	res.What = "balance reads through REST at a target rate while accruals run at a fixed rate"
	res.Settings = map[string]any{"duration": r.o.duration.String(), "members": r.o.members,
		"target_reads_per_s": r.o.readRate, "readers": r.o.readers, "read_lots": r.o.readLots,
		"accruals_per_s": rate, "writers": r.o.clients}
	stop, err := r.startProfile(res)
	if err != nil {
		return err
	}
	defer stop()

	start := time.Now()
	deadline := start.Add(r.o.duration)
	reads, writes := &writer{}, &writer{}
	k0 := r.c.scrape(ctx)
	var missedReads, missedWrites atomic.Int64
	var wg sync.WaitGroup

	cpu0 := r.sampleCPU(ctx)

	// Writers: a paced feed of accruals.
	wslots := pace(ctx, float64(rate), deadline, &missedWrites)
	var seq atomic.Int64
	for range r.o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range wslots {
				st, d := r.accrue(ctx, fmt.Sprintf("b-%d", seq.Add(1)))
				writes.note(st, d)
			}
		}()
	}

	// Readers: a paced feed of balance reads.
	query := ""
	if r.o.readLots {
		query = "?lots=true"
	}
	rslots := pace(ctx, float64(r.o.readRate), deadline, &missedReads)
	for range r.o.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rslots {
				path := "/v1/programs/" + r.program + "/members/" +
					memberRef(rand.IntN(r.o.members)) + "/balance" + query
				t0 := time.Now()
				st, _, err := r.c.do(ctx, http.MethodGet, path, "", nil)
				if err != nil {
					st = 0
				}
				reads.note(st, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()

	// CPU per request, reads and accruals alike: with -read-rate 1 this is
	// the CPU of an accrual at a fixed rate, which unlike scenario a does
	// not depend on how fast the machine happens to be.
	requests := len(reads.lat) + len(writes.lat) + len(writes.lat202)
	res.Figures = map[string]any{
		"cpu":                   r.cpuSince(ctx, cpu0, requests),
		"elapsed_s":             elapsed.Seconds(),
		"reads_per_s":           perSecond(len(reads.lat), elapsed),
		"reads_missed":          missedReads.Load(),
		"read_latency_200":      summarise(reads.lat),
		"read_other_answers":    statusCounts(reads.other),
		"accruals_per_s":        perSecond(len(writes.lat)+len(writes.lat202), elapsed),
		"accruals_missed":       missedWrites.Load(),
		"accrual_answers_201":   len(writes.lat),
		"accrual_answers_202":   len(writes.lat202),
		"accrual_latency_201":   summarise(writes.lat),
		"accrual_other_answers": statusCounts(writes.other),
		"core":                  r.c.scrape(ctx).since(k0),
		"target_reads_per_s":    5000,
		"target_read_p99_ms":    2,
	}
	return nil
}

// pace hands out rate slots per second until deadline, each a request to
// send now. A slot no worker is free to take within 100 ms worth of backlog
// is counted in missed instead of piling up: the figures then say the
// target rate was not reached rather than hiding it in the latency.
func pace(ctx context.Context, rate float64, deadline time.Time,
	missed *atomic.Int64) <-chan struct{} {
	backlog := max(1, int(rate/10))
	ch := make(chan struct{}, backlog)
	go func() {
		defer close(ch)
		start := time.Now()
		sent := 0
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for now := range tick.C {
			if now.After(deadline) || ctx.Err() != nil {
				return
			}
			due := int(now.Sub(start).Seconds() * rate)
			for ; sent < due; sent++ {
				select {
				case ch <- struct{}{}:
				default:
					missed.Add(1)
				}
			}
		}
	}()
	return ch
}

func statusCounts(m map[int]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[fmt.Sprint(k)] = v
	}
	return out
}

// save writes res to <out>/<stamp>-<scenario>.json.
func (r *runner) save(res *result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(r.o.out, r.stamp+"-"+res.Scenario+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintf(r.out, "  written to %s\n", path)
	return nil
}

// report prints the scenario's figures.
func (r *runner) report(res *result) {
	fmt.Fprintf(r.out, "%s: %s\n", res.Scenario, res.What)
	fmt.Fprintf(r.out, "  load before %s, after %s (1-minute average, %d CPUs); "+
		"steal %.1f%% of the CPU time\n", res.LoadBefore.Load1, res.LoadAfter.Load1,
		res.Machine.CPUs, res.StealPercent)
	b, _ := json.MarshalIndent(res.Figures, "  ", "  ")
	fmt.Fprintf(r.out, "  %s\n", b)
	verdict := "OK"
	if !res.Check.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(r.out, "  ledger check %s: %s\n", verdict, res.Check.Summary)
}
