package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// busSource is the source of the commands scenario bus publishes, as an
// API key's name would be for a gateway.
const busSource = "bench-bus"

// busScenario is the bus half of the batch row: clients publish
// batches of -batch-size accrual commands straight onto the command stream
// (natsbus.PublishCommands, what the REST batch route calls), without HTTP
// or waiting for results, for the duration; then the generator waits for
// the ledger to hold them all. It needs the platform in this process.
func (r *runner) busScenario(ctx context.Context, res *result) (bool, error) {
	if r.target.bus == nil {
		fmt.Fprintln(r.out, "bus: skipped: it publishes to the platform's own bus, which "+
			"only an in-process run has")
		return false, nil
	}
	res.What = "accruals published onto the bus in batches, then applied by core"
	res.Settings = map[string]any{"duration": r.o.duration.String(),
		"clients": r.o.batchClients, "commands_per_publish": r.o.batchSize,
		"members": r.o.members, "points_per_event": pointsPerEvent}
	stop, err := r.startProfile(res)
	if err != nil {
		return false, err
	}
	defer stop()

	var p0, d0 int64
	if err := r.target.pool.QueryRow(ctx, countAccruals, r.program).Scan(&p0, &d0); err != nil {
		return false, fmt.Errorf("count postings: %w", err)
	}
	k0 := r.c.scrape(ctx)
	cpu0 := r.sampleCPU(ctx)
	var stored, unknown atomic.Int64
	start := time.Now()
	deadline := start.Add(r.o.duration)
	var wg sync.WaitGroup
	for cl := range r.o.batchClients {
		wg.Go(func() {
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				ok, lost := r.publishBatch(ctx, fmt.Sprintf("e-%d-%d-", cl, seq))
				stored.Add(int64(ok))
				unknown.Add(int64(lost))
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	r.acct.accepted.Add(stored.Load())
	r.acct.unknown.Add(unknown.Load())

	// Applied: until core has applied every stored command (two minutes at
	// most), as its own counter tells; counting the program's postings
	// instead would take PostgreSQL's CPU from core while it works. The
	// postings are counted at the end (and waited for there, should the
	// counter not be readable).
	for time.Since(start) < published+2*time.Minute && ctx.Err() == nil {
		k := r.c.scrape(ctx)
		if k.commands == 0 || k.commands-k0.commands >= float64(stored.Load()) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	applied := time.Since(start)
	stop()
	used := r.cpuSince(ctx, cpu0, int(stored.Load()))
	// The counter also counts a command applied twice over (a redelivery
	// answered as a replay): the postings have the last word, and when they
	// are short the wait goes on.
	var posted, distinct int64
	for again := false; ; again = true {
		if err := r.target.pool.QueryRow(ctx, countAccruals, r.program).Scan(&posted,
			&distinct); err != nil {
			return false, fmt.Errorf("count postings: %w", err)
		}
		if again {
			applied = time.Since(start)
		}
		if posted-p0 >= stored.Load() || time.Since(start) > published+2*time.Minute {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}

	res.Figures = map[string]any{
		"publish_s":           published.Seconds(),
		"applied_s":           applied.Seconds(),
		"commands_stored":     stored.Load(),
		"commands_unanswered": unknown.Load(),
		"commands_applied":    posted - p0,
		"stored_per_s":        perSecond(int(stored.Load()), published),
		"applied_per_s":       perSecond(int(posted-p0), applied),
		"core":                r.c.scrape(ctx).since(k0),
		"cpu":                 used,
		"target_events_per_s": 25000,
	}
	return true, nil
}

// publishBatch publishes one batch of accrual commands named prefix+i to
// random members, publishing again (the same commands, so de-duplicated)
// those the server did not confirm, at most three times. It returns how
// many were confirmed stored and how many were not.
func (r *runner) publishBatch(ctx context.Context, prefix string) (stored, lost int) {
	payload, _ := json.Marshal(core.Accrue{EventType: "purchase", Amount: "10"})
	now := time.Now().UTC()
	todo := make([]bus.Command, r.o.batchSize)
	for i := range todo {
		c := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: core.KindAccrue,
			Source: busSource, TxnID: fmt.Sprintf("%s%d", prefix, i), Program: r.program,
			Member: memberRef(rand.IntN(r.o.members)), Payload: payload, ReceivedAt: now}
		c.Seal() // no occurrence time given: the digest leaves it out, as the gateway's
		c.OccurredAt = now
		todo[i] = c
	}
	for attempt := 0; attempt < 4 && len(todo) > 0; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		_, errs := r.target.bus.PublishCommands(context.WithoutCancel(ctx), todo)
		var again []bus.Command
		for i, err := range errs {
			if err != nil {
				again = append(again, todo[i])
			} else {
				stored++
			}
		}
		todo = again
	}
	return stored, len(todo)
}
