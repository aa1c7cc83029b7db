package conversion

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// TestAttack18MisbehavingPartner runs two workers at once against a partner
// on 127.0.0.1 that, in turn: takes the request and closes the connection,
// answers 500, confirms someone else's transaction, times out, and at last
// confirms ours (naming another amount, which the protocol does not carry).
// Until that last answer the points stay held and the conversion pending
// with its reason; then they are taken once, and nothing changes after.
func TestAttack18MisbehavingPartner(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"status":"unknown"}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		_ = body
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		txn := r.Header.Get("Idempotency-Key")
		switch {
		case n == 1:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case n == 2:
			w.WriteHeader(http.StatusInternalServerError)
		case n == 3:
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"txn_id":"01936f4e-0000-7000-8000-000000000000",`+
				`"status":"confirmed","reference":"NOT-YOURS"}`)
		case n == 4:
			time.Sleep(600 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
			_, _ = fmt.Fprintf(w, `{"txn_id":%q,"status":"confirmed","reference":"LATE"}`, txn)
		default:
			w.WriteHeader(http.StatusCreated)
			_, _ = fmt.Fprintf(w, `{"txn_id":%q,"status":"confirmed","reference":"R-1",`+
				`"amount":1}`, txn)
		}
	}))
	defer srv.Close()

	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint = srv.URL
	const member = "56900000018"
	prog := e.program(ext, member, 10000)
	c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: "LA018000"})
	opt := Options{HTTP: HTTPOptions{Timeout: 250 * time.Millisecond, Retries: 1,
		RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond}, Clock: e.clock}
	workers := []*Worker{New(e.ledger, quietLog(), opt), New(e.ledger, quietLog(), opt)}

	var got *core.Conversion
	for round := 0; round < 12; round++ {
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = w.Step(context.Background())
			}()
		}
		wg.Wait()
		got = e.conversion(prog, member, c.ID)
		if got.Status != core.ConversionPending {
			break
		}
		if got.LastError == "" {
			t.Fatalf("round %d: pending without a reason", round)
		}
		e.wantBalance(prog, member, 9000, 1000)
		e.advance(2 * time.Hour)
	}
	if got.Status != core.ConversionConfirmed || got.Reference != "R-1" {
		t.Fatalf("conversion ended %s ref %q (%q) after %d calls", got.Status, got.Reference,
			got.LastError, calls)
	}
	e.wantBalance(prog, member, 9000, 0)
	// More steps and a reconciliation change nothing.
	for _, w := range workers {
		if n, err := w.Step(context.Background()); n != 0 || err != nil {
			t.Errorf("a settled conversion was taken again: %d %v", n, err)
		}
	}
	e.advance(time.Hour)
	if _, err := workers[0].Reconcile(context.Background()); err != nil {
		t.Logf("reconcile: %v", err)
	}
	e.wantBalance(prog, member, 9000, 0)
	e.check()
}
