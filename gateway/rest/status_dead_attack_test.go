package rest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Attacks on the order of getCommand's reads: the ledger, the bus, the
// ledger again. A scripted ledger answers each read in turn; a scripted bus
// says where the command is.

// scriptedReader answers CommandResult with its answers in turn (the last
// one for ever) and counts the reads.
type scriptedReader struct {
	contractReader
	mu      sync.Mutex
	answers []func() (*bus.Result, error)
	reads   int
}

func (r *scriptedReader) CommandResult(context.Context, string, string) (*bus.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := min(r.reads, len(r.answers)-1)
	r.reads++
	return r.answers[i]()
}

// locatingBus is a contractBus whose Locate answers where and err, and
// records what it was asked.
type locatingBus struct {
	contractBus
	where bus.Whereabouts
	err   error
	asked []string
}

func (b *locatingBus) Locate(_ context.Context, source, txn string) (bus.Whereabouts, error) {
	b.asked = append(b.asked, source+"/"+txn)
	return b.where, b.err
}

func notFound() (*bus.Result, error) {
	return nil, core.Errorf(core.NotFound, "txn_id", "unknown")
}

func stored(status string) func() (*bus.Result, error) {
	return func() (*bus.Result, error) {
		r := &bus.Result{CommandID: "c-1", Source: "contract", TxnID: "bill-7",
			Kind: "points.accrue", Status: status}
		if status == bus.StatusRejected {
			r.Error = &bus.Error{Kind: string(core.NotFound), Field: "member",
				Message: "no such member"}
		} else {
			r.Data = json.RawMessage(`{"member":"m"}`)
		}
		return r, nil
	}
}

func readStatusAttack(t *testing.T, b *locatingBus, read Reader) (int, map[string]any) {
	t.Helper()
	s := New(b, read, slog.New(slog.DiscardHandler), Options{Wait: time.Second,
		Keys: map[string]string{contractKey: "contract"}})
	r := mux.NewRouter()
	s.Register(r)
	req := httptest.NewRequest(http.MethodGet, "/v1/commands/bill-7", nil)
	req.Header.Set("X-Api-Key", contractKey)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	var body map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w.Code, body
}

func TestStatusAttackReadOrder(t *testing.T) {
	cases := []struct {
		name      string
		answers   []func() (*bus.Result, error)
		where     bus.Whereabouts
		busErr    error
		code      int
		status    string // "" for a problem document
		wantReads int
	}{
		// Core applies it after the first read and acknowledges it before
		// the bus is asked: the second read finds it.
		{"applied between the reads", []func() (*bus.Result, error){notFound,
			stored(bus.StatusOK)}, bus.Unknown, nil, 200, "ok", 2},
		// Core stores a refusal and dead-letters the command after the
		// first read: the ledger's refusal, not failed.
		{"refused and dead-lettered between the reads", []func() (*bus.Result, error){
			notFound, stored(bus.StatusRejected)}, bus.DeadLettered, nil, 200, "rejected", 2},
		// Sent again changed and applied after the dead letter.
		{"dead letter, then applied", []func() (*bus.Result, error){notFound,
			stored(bus.StatusOK)}, bus.DeadLettered, nil, 200, "ok", 2},
		{"dead-lettered, no result", []func() (*bus.Result, error){notFound},
			bus.DeadLettered, nil, 200, "failed", 2},
		// The ledger cannot be read the second time: not failed, not 404.
		{"dead-lettered, ledger down on the second read", []func() (*bus.Result, error){
			notFound, func() (*bus.Result, error) {
				return nil, core.Errorf(core.Unavailable, "", "ledger down")
			}}, bus.DeadLettered, nil, 503, "", 2},
		{"waiting", []func() (*bus.Result, error){notFound}, bus.Waiting, nil, 200,
			"pending", 1},
		// The bus cannot tell: pending, never failed nor 404.
		{"bus error", []func() (*bus.Result, error){notFound}, bus.DeadLettered,
			errors.New("nats down"), 200, "pending", 1},
		{"bus error, unknown", []func() (*bus.Result, error){notFound}, bus.Unknown,
			errors.New("nats down"), 200, "pending", 1},
		{"unknown", []func() (*bus.Result, error){notFound}, bus.Unknown, nil, 404, "", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			read := &scriptedReader{answers: c.answers}
			b := &locatingBus{where: c.where, err: c.busErr}
			code, body := readStatusAttack(t, b, read)
			if code != c.code || (c.status != "" && body["status"] != c.status) {
				t.Fatalf("answered %d %v, want %d status %q", code, body, c.code, c.status)
			}
			if c.status == "" && c.code == 404 && body["field"] != "txn" {
				t.Fatalf("404 %v does not name txn", body)
			}
			if read.reads != c.wantReads {
				t.Fatalf("%d ledger reads, want %d", read.reads, c.wantReads)
			}
			if len(b.asked) != 1 || b.asked[0] != "contract/bill-7" {
				t.Fatalf("bus asked %v, want contract/bill-7 once", b.asked)
			}
		})
	}
}
