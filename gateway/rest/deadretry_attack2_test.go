package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
)

// Attacks on the gateway's answer to a retry the bus drops as a duplicate
// (Server.setAside, natsbus.Bus.SetAside), with a scripted bus and ledger.
// The defects they found in its first form are mended; the tests stay.

// asideBus is a bus that reports every publish as a duplicate and answers
// SetAside with dead after delay, counting the lookups.
type asideBus struct {
	batchBus
	dead    bool
	fail    error
	delay   time.Duration
	lookups atomic.Int64
}

func (b *asideBus) PublishCommand(context.Context, bus.Command) (bool, error) {
	return true, nil
}

func (b *asideBus) PublishCommands(_ context.Context, cmds []bus.Command) ([]bool, []error) {
	dup := make([]bool, len(cmds))
	for i := range dup {
		dup[i] = true
	}
	return dup, make([]error, len(cmds))
}

func (b *asideBus) SetAside(ctx context.Context, _ bus.Command) (bool, error) {
	b.lookups.Add(1)
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if b.fail != nil {
		return false, b.fail
	}
	return b.dead, nil
}

// brokenLedger answers ResultOf with err.
type brokenLedger struct {
	contractReader
	err error
}

func (r brokenLedger) ResultOf(context.Context, bus.Command) (*bus.Result, error) {
	return nil, r.err
}

func (r brokenLedger) CommandResult(context.Context, string, string) (*bus.Result, error) {
	return nil, r.err
}

func asideServer(b *asideBus, read Reader, wait time.Duration) *mux.Router {
	s := New(b, read, slog.New(slog.DiscardHandler),
		Options{Wait: wait, Keys: map[string]string{contractKey: "contract"}})
	s.now = func() time.Time { return contractNow }
	r := mux.NewRouter()
	s.Register(r)
	return r
}

func asideSend(r *mux.Router, method, path, txn, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("X-Api-Key", contractKey)
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

// The ledger cannot be read (its database is down) when a retry of a
// dead-lettered command arrives. The command may have been stored again
// and applied since (in a pack, or after the day of duplicate detection),
// and the gateway cannot tell: it must not answer "set aside ... nothing
// changed", a claim about the ledger it could not read. It waits for a
// result as for any retry: 202 with the status URL (the batch's item
// pending).
func TestDeadRetryAttack2LedgerOutageIsNotNothingChanged(t *testing.T) {
	outage := brokenLedger{contractReader: contractReader{programs: true},
		err: errors.New("read command: failed to connect to postgres: connection refused")}
	b := &asideBus{dead: true}
	r := asideServer(b, outage, 200*time.Millisecond)
	w := asideSend(r, "POST", "/v1/programs/movil/members/56912345678/events", "bill-7",
		`{"type":"bill_paid","amount":"10.00"}`)
	if w.Code != http.StatusAccepted || strings.Contains(w.Body.String(), "nothing changed") {
		t.Errorf("retry with the ledger down: %d %s; want 202 (waiting, as any retry), "+
			"not a claim that nothing changed", w.Code, w.Body.String())
	}
	w = asideSend(r, "POST", "/v1/programs/movil/events/batches", "",
		`{"events":[{"member":"56912345678","txn_id":"bill-7","type":"bill_paid","amount":"10.00"}]}`)
	var a batchAnswer
	_ = json.Unmarshal(w.Body.Bytes(), &a)
	if len(a.Items) != 1 || a.Items[0].Status == http.StatusInternalServerError &&
		strings.Contains(w.Body.String(), "nothing changed") {
		t.Errorf("batch retry with the ledger down: %d %s; want the item pending or "+
			"unavailable, not a claim that nothing changed", w.Code, w.Body.String())
	}
}

// Cost. A retry of a 200-event batch whose events all wait on the
// bus (core lagging: every item is a duplicate without a result) makes 200
// dead-letter lookups, one after another, before the wait for results even
// starts: with a bus answering each in 20ms the batch answers after ~4s
// plus the wait; with jetstream's default API timeout of 5s (a leaderless
// dead-letter stream) it would be ~1000s. Expected: the answer within about
// the configured wait (300ms, for the lookups and again for the results)
// plus a little.
func TestDeadRetryAttack2BatchLookupsAreSerialAndUnbounded(t *testing.T) {
	b := &asideBus{dead: false, delay: 20 * time.Millisecond}
	r := asideServer(b, contractReader{programs: true}, 300*time.Millisecond)
	var events []string
	for i := 0; i < 200; i++ {
		events = append(events, fmt.Sprintf(`{"member":"m-%d","txn_id":"bill-%d",`+
			`"type":"bill_paid","amount":"10.00"}`, i, i))
	}
	start := time.Now()
	w := asideSend(r, "POST", "/v1/programs/movil/events/batches", "",
		`{"events":[`+strings.Join(events, ",")+`]}`)
	took := time.Since(start)
	var a batchAnswer
	_ = json.Unmarshal(w.Body.Bytes(), &a)
	t.Logf("batch of 200 pending duplicates: %d, %d pending, %d lookups, %s", w.Code,
		a.Pending, b.lookups.Load(), took)
	if a.Pending != 200 {
		t.Fatalf("batch answered %d %s, want 200 items pending", w.Code, w.Body.String())
	}
	if took > 1500*time.Millisecond {
		t.Errorf("a batch retry of 200 waiting events took %s (%d sequential dead-letter "+
			"lookups); want about the wait, 300ms", took, b.lookups.Load())
	}
}

// Kept behaviour. A bus that cannot tell (SetAside fails) leaves a
// retry waiting as before: 202, never "set aside".
func TestDeadRetryAttack2LookupErrorWaits(t *testing.T) {
	b := &asideBus{dead: true, fail: errors.New("nats: timeout")}
	r := asideServer(b, contractReader{programs: true}, 100*time.Millisecond)
	w := asideSend(r, "POST", "/v1/programs/movil/members/56912345678/events", "bill-7",
		`{"type":"bill_paid","amount":"10.00"}`)
	if w.Code != http.StatusAccepted || strings.Contains(w.Body.String(), "set it aside") {
		t.Fatalf("a lookup that failed answered %d %s, want 202", w.Code, w.Body.String())
	}
}
