package rest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
)

// batchBus records the commands of a batch and answers each at once.
type batchBus struct {
	contractBus
	published []bus.Command
	results   chan bus.Result
}

func (b *batchBus) SubscribeResults(_ string, txns []string) (<-chan bus.Result, func(),
	error) {
	b.results = make(chan bus.Result, len(txns))
	return b.results, func() {}, nil
}

func (b *batchBus) PublishCommands(_ context.Context, cmds []bus.Command) ([]bool, []error) {
	for _, c := range cmds {
		b.published = append(b.published, c)
		b.results <- bus.Result{CommandID: c.ID, Source: c.Source, TxnID: c.TxnID,
			Kind: c.Kind, Status: bus.StatusOK, Data: json.RawMessage(`{"member":"m"}`)}
	}
	return make([]bool, len(cmds)), make([]error, len(cmds))
}

// The batch route is skipped by TestContractWritesAcceptTheirExamples (it
// is not one command per request): its documented example must still go
// through the real handler, one command of the documented kind per event.
func TestContractAccrualBatchExample(t *testing.T) {
	const route = "POST /v1/programs/{program}/events/batches"
	var op *contractOp
	for _, o := range loadContract(t).ops {
		if o.key() == route {
			op = &o
		}
	}
	if op == nil || op.kind == "" || op.example == "" {
		t.Fatalf("%s: not documented with x-command-kind and a request example", route)
	}
	var doc struct {
		Events []struct {
			Member string `json:"member"`
			TxnID  string `json:"txn_id"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(op.example), &doc); err != nil || len(doc.Events) == 0 {
		t.Fatalf("the example has no events: %v", err)
	}

	send := func(b Publisher) *httptest.ResponseRecorder {
		s := New(b, contractReader{programs: true}, slog.New(slog.DiscardHandler),
			Options{Wait: time.Second, Keys: map[string]string{contractKey: "contract"}})
		s.now = func() time.Time { return contractNow }
		router := mux.NewRouter()
		s.Register(router)
		req := httptest.NewRequest(http.MethodPost, fillPath(op.path),
			strings.NewReader(op.example))
		req.Header.Set("Authorization", "Bearer "+contractKey)
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		return w
	}

	b := &batchBus{}
	w := send(b)
	var a batchAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || w.Code != http.StatusOK ||
		a.Committed != len(doc.Events) || len(a.Items) != len(doc.Events) {
		t.Fatalf("example answered %d %s, want 200 with every event committed", w.Code, w.Body)
	}
	if len(b.published) != len(doc.Events) {
		t.Fatalf("published %d commands for %d events", len(b.published), len(doc.Events))
	}
	for i, c := range b.published {
		ev := doc.Events[i]
		if c.Kind != op.kind || c.Source != "contract" || c.TxnID != ev.TxnID ||
			c.Member != ev.Member || c.Program != "movil" || a.Items[i].Status != 201 {
			t.Errorf("event %d: command %s %s/%s for %s in %s, item %d; want %s "+
				"contract/%s for %s in movil, item 201", i, c.Kind, c.Source, c.TxnID,
				c.Member, c.Program, a.Items[i].Status, op.kind, ev.TxnID, ev.Member)
		}
	}

	// A bus that cannot publish batches refuses the request; nothing is sent.
	plain := &contractBus{answer: true}
	w = send(plain)
	if p := decodeProblem(t, w); w.Code != http.StatusServiceUnavailable ||
		len(plain.take()) != 0 {
		t.Fatalf("without batch publishing: %d %+v, want 503 and nothing published", w.Code, p)
	}
}
