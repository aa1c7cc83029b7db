package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A command PostgreSQL cannot store (a NUL in its text) fails the same way
// on every delivery. It must be refused on its own, with a stored answer,
// and never take the valid commands of its batch down with it.
func TestUnstorableCommandIsRefusedAlone(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})

	// Straight onto the bus: the gateway refuses such a body itself.
	accrual := func(txn, partner string) bus.Command {
		payload, err := json.Marshal(core.Accrue{EventType: "top_up", Amount: "10",
			Partner: partner})
		if err != nil {
			t.Fatal(err)
		}
		cmd := bus.Command{ID: uuid.NewString(), Kind: core.KindAccrue, Source: "test",
			TxnID: txn, Program: "telco", Member: "C1", Payload: payload}
		cmd.Seal()
		cmd.ReceivedAt = time.Now().UTC()
		cmd.OccurredAt = cmd.ReceivedAt
		return cmd
	}
	cmds := []bus.Command{accrual("nul-0", "bad\x00")}
	for i := 1; i <= 4; i++ {
		cmds = append(cmds, accrual(fmt.Sprintf("ok-%d", i), ""))
	}
	_, errs := a.Bus.PublishCommands(context.Background(), cmds)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		b := c.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
		if jnum(t, b, "balance.available") == 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("valid accruals not applied: %s", b.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}

	res, err := a.Ledger.CommandResult(context.Background(), "test", "nul-0")
	if err != nil || res.Status != bus.StatusRejected || res.Error == nil ||
		res.Error.Kind != string(core.Invalid) {
		t.Fatalf("stored answer of the unstorable command: %+v (%v), want refused as invalid",
			res, err)
	}
	var dead int
	for time.Now().Before(deadline) {
		letters, _ := a.Bus.DeadLetters(context.Background(), 10)
		dead = len(letters)
		if dead == 1 && letters[0].TxnID == "nul-0" &&
			strings.Contains(letters[0].Reason, "cannot store") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if dead != 1 {
		t.Fatalf("%d dead letters, want the unstorable command alone", dead)
	}
	var postings int
	if err := a.Pool.QueryRow(context.Background(), `SELECT count(*) FROM postings
		WHERE txn_id LIKE 'ok-%'`).Scan(&postings); err != nil || postings != 4 {
		t.Fatalf("%d postings of the valid accruals (%v), want 4", postings, err)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) != 0 {
		t.Fatalf("ledger check: %v %v", v, err)
	}
}
