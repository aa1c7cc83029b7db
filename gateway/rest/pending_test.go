package rest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
)

// The status poll's shortcut for commands answered 202 (pending.go), with a
// scripted bus: internal/app's TestStatusPollDuringBacklog runs it on a real
// one. These cover what a real bus cannot be made to do on cue: a dead
// letter of a remembered command, searches that do not end, and forgetting.

// deadBus is a locatingBus that also answers DeadLettered, whose Locate may
// be held until release is closed, and that counts what it was asked.
type deadBus struct {
	locatingBus
	dead    bool
	release chan struct{}
	mu      sync.Mutex
	deadAsk int
	locates int
}

func (b *deadBus) DeadLettered(context.Context, string, string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadAsk++
	return b.dead, nil
}

func (b *deadBus) Locate(ctx context.Context, source, txn string) (bus.Whereabouts, error) {
	b.mu.Lock()
	b.locates++
	b.mu.Unlock()
	if b.release != nil {
		select {
		case <-b.release:
		case <-ctx.Done():
		}
	}
	return b.where, b.err
}

// statusServer is a Server on b whose every read finds no result, with the
// lookups it counts.
func statusServer(b Publisher) (http.Handler, *Server, *lookupCount) {
	n := &lookupCount{by: map[string]int{}}
	s := New(b, &scriptedReader{answers: []func() (*bus.Result, error){notFound}},
		slog.New(slog.DiscardHandler), Options{Wait: time.Second,
			Keys: map[string]string{contractKey: "contract"}, StatusLookup: n.add})
	r := mux.NewRouter()
	s.Register(r)
	return r, s, n
}

type lookupCount struct {
	mu sync.Mutex
	by map[string]int
}

func (n *lookupCount) add(how string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.by[how]++
}

func (n *lookupCount) get(how string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.by[how]
}

func poll(h http.Handler, txn string) (int, string) {
	req := httptest.NewRequest(http.MethodGet, "/v1/commands/"+txn, nil)
	req.Header.Set("X-Api-Key", contractKey)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var body struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w.Code, body.Status
}

// A remembered command that was set aside since is not answered pending
// from memory: the bus is searched and the poll says failed.
func TestStatusRememberedButDeadLettered(t *testing.T) {
	b := &deadBus{locatingBus: locatingBus{where: bus.DeadLettered}, dead: true}
	h, s, n := statusServer(b)
	s.pending.add("contract", "bill-7")
	if code, status := poll(h, "bill-7"); code != 200 || status != "failed" {
		t.Fatalf("a dead-lettered command answered %d %q, want 200 failed", code, status)
	}
	if b.deadAsk != 1 || b.locates != 1 || n.get(LookupSearched) != 1 ||
		n.get(LookupRemembered) != 0 {
		t.Fatalf("dead-letter lookups %d, searches %d, counted %v; want 1, 1, searched once",
			b.deadAsk, b.locates, n.by)
	}

	// Not dead-lettered: pending, and the bus's backlog is not read.
	b.dead = false
	if code, status := poll(h, "bill-7"); code != 200 || status != "pending" {
		t.Fatalf("a waiting command answered %d %q, want 200 pending", code, status)
	}
	if b.locates != 1 || n.get(LookupRemembered) != 1 {
		t.Fatalf("searches %d, counted %v; want still 1 search and one remembered", b.locates,
			n.by)
	}
	// Another caller's command of the same transaction id was not answered
	// 202 here: searched.
	b.where = bus.Unknown
	if code, _ := poll(h, "bill-8"); code != 404 || b.locates != 2 {
		t.Fatalf("a command never answered 202: %d after %d searches, want 404 after 2", code,
			b.locates)
	}
}

// While maxSearches searches run, another poll waits searchWait and then
// answers pending without searching; the searches' own polls still get
// their answers once the bus does.
func TestStatusSearchesBounded(t *testing.T) {
	b := &deadBus{locatingBus: locatingBus{where: bus.Waiting}, release: make(chan struct{})}
	h, _, n := statusServer(b)
	var wg sync.WaitGroup
	answers := make(chan string, maxSearches)
	for i := range maxSearches {
		wg.Go(func() {
			_, status := poll(h, "slow-"+strconv.Itoa(i))
			answers <- status
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		running := b.locates
		b.mu.Unlock()
		if running == maxSearches {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d searches running, want %d", running, maxSearches)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, status := poll(h, "one-more"); code != 200 || status != "pending" {
		t.Fatalf("a poll while the searches are busy answered %d %q, want 200 pending",
			code, status)
	}
	b.mu.Lock()
	searched := b.locates
	b.mu.Unlock()
	if searched != maxSearches || n.get(LookupBusy) != 1 {
		t.Fatalf("searches %d, counted %v: want %d and one busy", searched, n.by, maxSearches)
	}
	close(b.release)
	wg.Wait()
	close(answers)
	for status := range answers {
		if status != "pending" {
			t.Fatalf("a search's poll answered %q, want pending", status)
		}
	}
	// With the searches ended, the next poll searches again.
	poll(h, "after")
	if n.get(LookupSearched) != maxSearches+1 {
		t.Fatalf("counted %v, want %d searches", n.by, maxSearches+1)
	}
}

// What was answered 202 is remembered at least pendingKeep and at most
// three times that; a full generation starts the next one early.
func TestAnsweredPendingForgets(t *testing.T) {
	now := time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC)
	p := newAnsweredPending(func() time.Time { return now })
	p.add("billing", "t-1")
	now = now.Add(pendingKeep - time.Second)
	if !p.has("billing", "t-1") || p.has("web", "t-1") || p.has("billing", "t-2") {
		t.Fatal("within pendingKeep: want t-1 of billing only")
	}
	now = now.Add(time.Second) // a new generation; t-1 in the previous one
	p.add("billing", "t-2")
	if !p.has("billing", "t-1") || !p.has("billing", "t-2") {
		t.Fatal("one generation later both should be remembered")
	}
	now = now.Add(pendingKeep)
	if p.has("billing", "t-1") || !p.has("billing", "t-2") {
		t.Fatal("two generations later t-1 should be forgotten and t-2 remembered")
	}

	// Asked nothing for a long while: remembered a generation and a half
	// later, forgotten two and a half later (at most three generations).
	quiet := newAnsweredPending(func() time.Time { return now })
	quiet.add("billing", "t-3")
	now = now.Add(pendingKeep + pendingKeep/2)
	if !quiet.has("billing", "t-3") {
		t.Fatal("t-3 forgotten a generation and a half after it was answered")
	}
	late := newAnsweredPending(func() time.Time { return now })
	late.add("billing", "t-4")
	now = now.Add(2*pendingKeep + pendingKeep/2)
	if late.has("billing", "t-4") {
		t.Fatal("t-4 remembered two generations and a half after it was answered, " +
			"nothing asked meanwhile")
	}

	full := newAnsweredPending(func() time.Time { return now })
	for i := range pendingCap + 1 {
		full.add("billing", strconv.Itoa(i))
	}
	if len(full.cur)+len(full.prev) != pendingCap+1 || len(full.cur) != 1 {
		t.Fatalf("after %d adds: %d current, %d previous; want 1 and %d", pendingCap+1,
			len(full.cur), len(full.prev), pendingCap)
	}
}
