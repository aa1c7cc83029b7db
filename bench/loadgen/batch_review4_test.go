package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// answerCounts promises ok false "when one of them is missing before the
// items". A count named twice filled its first form's tally of four
// although "failed" was missing, and the answer was taken as one where
// nothing failed: it counts the four names, not the keys it meets.
func TestReview4AnswerCountsNeedsAllFourNames(t *testing.T) {
	raw := `{"committed":2,"committed":2,"pending":0,"refused":0,` +
		`"items":[{"index":0,"status":201},{"index":1,"status":503}]}`
	if n, ok := answerCounts([]byte(raw)); ok {
		t.Errorf("answerCounts(%s) = %+v, ok; want ok false: \"failed\" is missing, so "+
			"the items must be read (one of them is a 503 to send again)", raw, n)
	}
}

// fakeBatchServer answers the batch route with the answers in turn, and
// keeps the events of each request.
type fakeBatchServer struct {
	mu       sync.Mutex
	answers  []func(events []map[string]string) (int, any)
	requests [][]map[string]string
}

func (f *fakeBatchServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Events []map[string]string `json:"events"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &in)
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, in.Events)
	f.mu.Unlock()
	st, body := f.answers[n](in.Events)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	_ = json.NewEncoder(w).Encode(body)
}

// answer builds a batch answer as the gateway writes it: the four counts,
// from the items' statuses, then the items.
func answer(statuses ...int) map[string]any {
	var c, p, r, f int
	items := []map[string]any{}
	for i, s := range statuses {
		switch {
		case s == 201:
			c++
		case s == 202:
			p++
		case s >= 500:
			f++
		default:
			r++
		}
		items = append(items, map[string]any{"index": i, "status": s})
	}
	return map[string]any{"committed": c, "pending": p, "refused": r, "failed": f,
		"items": items}
}

func newFakeRunner(t *testing.T, f *fakeBatchServer, size int) *runner {
	srv := httptest.NewServer(f) // 127.0.0.1
	t.Cleanup(srv.Close)
	return &runner{o: &options{batchSize: size, members: 50}, c: newClient(srv.URL, "k", 2),
		program: "p", acct: &accounting{}}
}

// A 202 answer with failed items (pinned, passes): the counts are not
// taken alone; the failed events, and they only, are sent again under their
// own txn ids, and every event is counted once.
func TestReview4SendBatchResendsOnlyFailed(t *testing.T) {
	f := &fakeBatchServer{answers: []func([]map[string]string) (int, any){
		func([]map[string]string) (int, any) { return 202, answer(201, 503, 202, 409, 503) },
		func([]map[string]string) (int, any) { return 200, answer(201, 201) },
	}}
	r := newFakeRunner(t, f, 5)
	tally := &batchTally{}
	st, _ := r.sendBatch(context.Background(), "c-0-0-", tally)
	if st != 200 || len(f.requests) != 2 {
		t.Fatalf("status %d after %d requests, want 200 after 2", st, len(f.requests))
	}
	var again []string
	for _, ev := range f.requests[1] {
		again = append(again, ev["txn_id"])
	}
	if fmt.Sprint(again) != "[c-0-0-1 c-0-0-4]" {
		t.Errorf("second request carried %v, want the two failed events [c-0-0-1 c-0-0-4]",
			again)
	}
	got := [4]int64{tally.committed.Load(), tally.accepted.Load(), tally.refused.Load(),
		tally.unknown.Load()}
	if got != [4]int64{3, 1, 1, 0} || r.acct.committed.Load() != 3 ||
		r.acct.accepted.Load() != 1 || r.acct.unknown.Load() != 0 {
		t.Errorf("tally committed/accepted/refused/unknown %v, acct %d/%d/%d; want "+
			"[3 1 1 0], acct 3/1/0", got, r.acct.committed.Load(), r.acct.accepted.Load(),
			r.acct.unknown.Load())
	}
}

// Counts that do not add up to the events sent (a short answer) are not
// taken (pinned, passes): the items decide, and an answer with fewer items
// than events is sent again whole rather than counted.
func TestReview4SendBatchDistrustsShortCounts(t *testing.T) {
	f := &fakeBatchServer{answers: []func([]map[string]string) (int, any){
		func([]map[string]string) (int, any) { return 200, answer(201, 201) },
		func([]map[string]string) (int, any) { return 200, answer(201, 201, 201) },
	}}
	r := newFakeRunner(t, f, 3)
	tally := &batchTally{}
	r.sendBatch(context.Background(), "c-1-0-", tally)
	if len(f.requests) != 2 || len(f.requests[1]) != 3 || tally.committed.Load() != 3 ||
		r.acct.committed.Load() != 3 {
		t.Errorf("%d requests (second of %d events), %d committed; want the whole batch "+
			"sent again and 3 committed once each", len(f.requests), len(f.requests[1]),
			tally.committed.Load())
	}
}
