package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// waitApplied waits until the command (billing, txn) has a stored result.
func waitApplied(t *testing.T, a *App, txn string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		_ = a.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM commands WHERE source = 'billing' AND txn_id = $1`, txn).Scan(&n)
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s not applied", txn)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSameCommandDeliveredManyTimes puts one credit on the bus twenty times,
// each copy with its own message id (so the bus's duplicate window does not
// drop them) and its own command id, as a gateway retrying after a lost
// acknowledgement would: the ledger posts it once. A later command of the
// same member, applied after all twenty in partition order, proves that
// every copy was handled.
func TestSameCommandDeliveredManyTimes(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})

	nc, err := nats.Connect(a.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(core.Credit{Points: 250, Reason: "delivered many times"})
	now := time.Now().UTC()
	publish := func(txn, msgID string, payload []byte) {
		cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: core.KindCredit,
			Source: "billing", TxnID: txn, Program: "telco", Member: "C1", Payload: payload,
			ReceivedAt: now, OccurredAt: now}
		cmd.Seal()
		data, _ := json.Marshal(cmd)
		subject := bus.CommandSubject(bus.Partition("telco", "C1", testConfig(t).Partitions))
		if _, err := js.Publish(subject, data, nats.MsgId(msgID)); err != nil {
			t.Fatalf("publish %s: %v", msgID, err)
		}
	}
	for i := range 20 {
		publish("dup-1", fmt.Sprintf("copy-%d", i), payload)
	}
	last, _ := json.Marshal(core.Credit{Points: 1, Reason: "after the copies"})
	publish("after-1", "after-1", last)
	waitApplied(t, a, "after-1")

	var postings int
	err = a.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM postings WHERE txn_id = 'dup-1'`).Scan(&postings)
	if err != nil || postings != 1 {
		t.Fatalf("postings of dup-1: %d (%v), want 1", postings, err)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 251 {
		t.Fatalf("available %d, want 250 + 1", got)
	}
	if dead, err := a.Bus.DeadLetters(context.Background(), 10); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}

// TestNATSRestartedUnderLoad stops the NATS server a gateway and core use
// while callers send accruals, and starts it again on the same store; the
// gateway and core reach it through a relay that keeps their address. Callers retry what was refused with the same Idempotency-Key, as
// the API asks; in the end every accrual is posted exactly once and the
// ledger balances.
func TestNATSRestartedUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, natsURL, err := natsbus.StartEmbedded(dir, -1, true)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	current := srv
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		current.Shutdown()
	})
	// The server comes back on a port of its own choosing: the relay keeps
	// the address the gateway and core know, so no one can take it meanwhile.
	r := testenv.NewRelay(t, strings.TrimPrefix(natsURL, "nats://"))

	cfg := testConfig(t)
	cfg.NATSURL = "nats://" + r.Addr()
	cfg.ResultWait = 2 * time.Second
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	telcoApplied(t, c) // a result wait of 2 s may run out on a busy machine
	const members, perMember = 10, 30
	for m := range members {
		applied(t, c, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
	}

	// Restart NATS once every caller is a third of the way through.
	load := faultLoad(t, c.base, members, perMember, 60*time.Second, func(*atomic.Bool) {
		mu.Lock()
		defer mu.Unlock()
		current.Shutdown()
		current.WaitForShutdown()
		r.To("")
		time.Sleep(500 * time.Millisecond)
		var err error
		var url string
		if current, url, err = natsbus.StartEmbedded(dir, -1, true); err != nil {
			t.Errorf("restart nats: %v", err)
			return
		}
		r.To(strings.TrimPrefix(url, "nats://"))
	})
	if t.Failed() {
		return
	}
	// The gateway stays up: a restart of its bus answers 503, nothing else.
	for status := range load.statuses {
		if status != 503 || load.transport != 0 {
			t.Fatalf("answers while NATS restarted: %v, %d without an answer; want 503 only",
				load.statuses, load.transport)
		}
	}

	// Everything accepted is applied, once.
	want := members * perMember
	waitAccrualsApplied(t, a.Pool, want, 60*time.Second)
	checkAccrualsPostedOnce(t, a.Pool, want, 10)
	ctx := context.Background()
	for m := range members {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%02d/balance", m), "", nil)
		if got := jnum(t, b, "balance.available"); got != perMember*10 {
			t.Errorf("M%02d available %d, want %d", m, got, perMember*10)
		}
	}
	if v, err := a.Ledger.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
	t.Logf("%d accruals posted once; %d answers were 503 and retried", want, load.retried)
}
