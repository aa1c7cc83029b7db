package soap_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
)

// gatewayAlone starts a gateway with no core, on an embedded NATS server of
// its own that a core started later with the returned settings shares; the
// answers of its calls come back within 300 ms or not at all. maxDeliver
// (0: the default) is how many times a core tries a command.
func gatewayAlone(t *testing.T, maxDeliver int) (*platform, *app.Config) {
	t.Helper()
	cfg := testConfig(t)
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg.NATSURL = url
	cfg.ResultWait = 300 * time.Millisecond
	if maxDeliver > 0 {
		cfg.MaxDeliver = maxDeliver
	}
	pool, err := postgres.Open(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := postgres.Migrate(context.Background(), pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return start(t, cfg, app.Roles{Gateway: true}), cfg
}

// deadLetter runs a core on p's bus that fails every command until txn is
// the only dead letter, then stops it.
func deadLetter(t *testing.T, p *platform, txn string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for part := range p.app.Bus.Partitions() {
		wg.Go(func() {
			_ = p.app.Bus.Consume(ctx, part, 10, 100*time.Millisecond,
				func(context.Context, []*natsbus.Delivery) error {
					return errors.New("ledger unreachable")
				})
		})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		dead, err := p.app.Bus.DeadLetters(context.Background(), 10)
		if err == nil && len(dead) == 1 && dead[0].TxnID == txn {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %+v (%v), want %s", dead, err, txn)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A call whose command core failed to apply as many times as it tries (one
// here) is set aside as a dead letter. Sent again with the same TxnId
// within the bus's day of duplicate detection, the bus drops it as a retry
// and no result will come: the answer is a Server.Internal fault saying it
// was set aside, not the fault of a command still on its way.
func TestRetryOfSetAsideCall(t *testing.T) {
	p, _ := gatewayAlone(t, 1)
	caller := basic("billing", billingPass)

	// No core: the call is stored and its answer does not come in time.
	if got := p.call(11, caller, enroll("U-1", "e-1")).faultCode(t); got != "Server.Unavailable" {
		t.Fatalf("first call: fault %s, want Server.Unavailable", got)
	}
	deadLetter(t, p, "e-1")

	for _, ver := range []int{11, 12} {
		r := p.call(ver, caller, enroll("U-1", "e-1"))
		if got := r.faultCode(t); got != "Server.Internal" || r.status != 500 ||
			!strings.Contains(r.body, "set it aside") {
			t.Fatalf("SOAP %d retry: HTTP %d fault %s: %s; want Server.Internal saying it "+
				"was set aside", ver, r.status, got, r.body)
		}
	}
	if dead, err := p.app.Bus.DeadLetters(context.Background(), 10); err != nil || len(dead) != 1 {
		t.Fatalf("dead letters after the retries: %+v (%v), want e-1 once", dead, err)
	}
}
