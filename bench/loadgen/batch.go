package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// batchTally counts the events of scenario c by their item status.
type batchTally struct {
	committed, accepted, unknown, refused atomic.Int64
}

// batchItemAnswer is the part of an item of the batch answer the
// generator reads.
type batchItemAnswer struct {
	Index  int `json:"index"`
	Status int `json:"status"`
}

// batchScenario is scenario c (and batch-wide, with more clients): clients
// each send batches of -batch-size accrual events through POST
// /v1/programs/{p}/events/batches, back to back, for the duration; their
// txn ids start with prefix.
func (r *runner) batchScenario(ctx context.Context, res *result, clients int,
	prefix string) error {
	res.What = "accruals through REST in batches, closed loop"
	res.Settings = map[string]any{"duration": r.o.duration.String(),
		"clients": clients, "events_per_request": r.o.batchSize,
		"members": r.o.members, "points_per_event": pointsPerEvent}
	stop, err := r.startProfile(res)
	if err != nil {
		return err
	}
	defer stop()

	w := &writer{}
	t := &batchTally{}
	k0 := r.c.scrape(ctx)
	cpu0 := r.sampleCPU(ctx)
	start := time.Now()
	deadline := start.Add(r.o.duration)
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Go(func() {
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				st, d := r.sendBatch(ctx, fmt.Sprintf("%s-%d-%d-", prefix, cl, seq), t)
				w.note(st, d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()

	done := int(t.committed.Load() + t.accepted.Load())
	res.Figures = map[string]any{
		"elapsed_s":            elapsed.Seconds(),
		"events_per_s":         perSecond(done, elapsed),
		"committed_per_s":      perSecond(int(t.committed.Load()), elapsed),
		"events_201":           t.committed.Load(),
		"events_202":           t.accepted.Load(),
		"events_refused":       t.refused.Load(),
		"events_unanswered":    t.unknown.Load(),
		"requests_200":         len(w.lat),
		"requests_202":         len(w.lat202),
		"other_request_status": statusCounts(w.other),
		"latency_200":          summarise(w.lat),
		"latency_202":          summarise(w.lat202),
		"core":                 r.c.scrape(ctx).since(k0),
		"cpu":                  r.cpuSince(ctx, cpu0, done),
		"target_events_per_s":  25000,
	}
	return nil
}

// sendBatch sends one batch of events named prefix+i to random members and
// counts each event's outcome. Like a careful client it sends the whole
// request again after a transport error or a 5xx, and the events the bus
// did not confirm (item status 503) again, with the same txn ids, at most
// three times. It returns the last request status and the time from the
// first attempt.
func (r *runner) sendBatch(ctx context.Context, prefix string, t *batchTally) (int,
	time.Duration) {
	path := "/v1/programs/" + r.program + "/events/batches"
	members := make([]int, r.o.batchSize)
	for i := range members {
		members[i] = rand.IntN(r.o.members)
	}
	todo := make([]int, r.o.batchSize) // events without a final answer yet
	for i := range todo {
		todo[i] = i
	}

	start := time.Now()
	status := 0
	for attempt := 0; attempt < 4 && len(todo) > 0; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		body := batchBody(prefix, todo, members)
		st, raw, err := r.c.do(context.WithoutCancel(ctx), http.MethodPost, path, "", body)
		if err != nil {
			st = 0
		}
		status = st
		if st == 0 || st >= 500 {
			continue // nothing answered: the whole request again
		}
		if st != http.StatusOK && st != http.StatusAccepted {
			t.refused.Add(int64(len(todo))) // the request itself was refused
			return st, time.Since(start)
		}
		// Nothing to send again: the answer's counts say it all, read
		// without the items (most of the answer).
		if n, ok := answerCounts(raw); ok && n.Failed == 0 &&
			n.Committed+n.Pending+n.Refused == len(todo) {
			t.committed.Add(int64(n.Committed))
			r.acct.committed.Add(int64(n.Committed))
			t.accepted.Add(int64(n.Pending))
			r.acct.accepted.Add(int64(n.Pending))
			t.refused.Add(int64(n.Refused))
			todo = nil
			break
		}
		var a struct {
			Items []batchItemAnswer `json:"items"`
		}
		if err := json.Unmarshal(raw, &a); err != nil || len(a.Items) != len(todo) {
			continue
		}
		var again []int
		for k, it := range a.Items {
			switch {
			case it.Status == http.StatusCreated:
				t.committed.Add(1)
				r.acct.committed.Add(1)
			case it.Status == http.StatusAccepted:
				t.accepted.Add(1)
				r.acct.accepted.Add(1)
			case it.Status >= 500:
				again = append(again, todo[k])
			default:
				t.refused.Add(1)
			}
		}
		todo = again
	}
	t.unknown.Add(int64(len(todo)))
	r.acct.unknown.Add(int64(len(todo)))
	return status, time.Since(start)
}

// batchCounts are the counts that open a batch answer.
type batchCounts struct {
	Committed, Pending, Refused, Failed int
}

// answerCounts reads the four counts of a batch answer, stopping at its
// items; ok is false when one of them is missing before the items or named
// twice, or the answer is not such an object.
func answerCounts(raw []byte) (n batchCounts, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return n, false
	}
	seen := map[*int]bool{}
	all := func() bool { return len(seen) == 4 }
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return n, false
		}
		var into *int
		switch tok {
		case "committed":
			into = &n.Committed
		case "pending":
			into = &n.Pending
		case "refused":
			into = &n.Refused
		case "failed":
			into = &n.Failed
		case "items":
			return n, all()
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return n, false
			}
			continue
		}
		if seen[into] || dec.Decode(into) != nil {
			return n, false
		}
		seen[into] = true
	}
	return n, all()
}

// batchBody writes {"events":[...]} for the events numbered in idx.
func batchBody(prefix string, idx, members []int) []byte {
	var b strings.Builder
	b.Grow(len(idx) * 90)
	b.WriteString(`{"events":[`)
	for k, i := range idx {
		if k > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"member":"`)
		b.WriteString(memberRef(members[i]))
		b.WriteString(`","txn_id":"`)
		b.WriteString(prefix)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`","type":"purchase","amount":"10"}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}
