package backoffice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
)

// An operator finds two dead letters on the page: an adjustment core failed
// to apply and a message that is not a command. Re-driving the adjustment
// applies it once (the member holds its points, the audit log says who);
// the other cannot be re-driven, only discarded; a letter acted on already
// is gone. An analyst does not see the page.
func TestDeadLettersPage(t *testing.T) {
	rg := newRig(t, Options{})
	rg.telco()
	rg.user("olga", RoleOperator)
	rg.user("ana", RoleAnalyst)

	b := rg.connectBus(func(c *natsbus.Config) { c.MaxDeliver = 1 })
	ctx := context.Background()
	payload, _ := json.Marshal(core.Adjust{Points: 25, Reason: "goodwill"})
	cmd := bus.Command{ID: uuid.NewString(), Kind: core.KindAdjust, Source: "callcentre",
		TxnID: "adj-1", Program: "telco", Member: "m-1", Actor: "agent-7", Payload: payload,
		OccurredAt: rg.now, ReceivedAt: rg.now}
	cmd.Seal()
	if _, err := b.PublishCommand(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(rg.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(bus.CommandSubject(0), []byte(`{"not":"a command"`)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	// A core that cannot reach its ledger sets both aside.
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = b.Consume(cctx, 0, 10, 50*time.Millisecond,
			func(context.Context, []*natsbus.Delivery) error {
				return errors.New("ledger unreachable")
			})
	})
	var dead []natsbus.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); len(dead) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", dead)
		}
		time.Sleep(50 * time.Millisecond)
		dead, _ = b.DeadLetters(ctx, 10)
	}
	cancel()
	wg.Wait()
	var adj, junk uint64
	for _, dl := range dead {
		if dl.TxnID == "adj-1" {
			adj = dl.Seq
		} else {
			junk = dl.Seq
		}
	}
	rg.consume(b) // core works again

	analyst := rg.browser()
	analyst.mustSignIn("ana")
	if code, body, _ := analyst.get("/admin/deadletters"); code != http.StatusForbidden ||
		strings.Contains(body, "adj-1") {
		t.Fatalf("analyst on the dead letters page: %d", code)
	}

	op := rg.browser()
	token := op.mustSignIn("olga")
	code, page, _ := op.get("/admin/deadletters")
	if code != http.StatusOK || !strings.Contains(page, "adj-1") ||
		!strings.Contains(page, "points.adjust") || !strings.Contains(page, "ledger unreachable") ||
		!strings.Contains(page, "not a command") ||
		!strings.Contains(page, `action="/admin/deadletters/`+u(adj)+`/redrive"`) ||
		strings.Contains(page, `action="/admin/deadletters/`+u(junk)+`/redrive"`) {
		t.Fatalf("dead letters page (%d) does not list both as it should:\n%s", code, page)
	}

	res, body := op.post("/admin/deadletters/"+u(adj)+"/redrive", url.Values{"csrf": {token}})
	mustStatus(t, "redrive", res, body, http.StatusSeeOther)
	var held core.Points
	for deadline := time.Now().Add(10 * time.Second); held != 25; {
		if time.Now().After(deadline) {
			var res string
			_ = rg.db.QueryRow(ctx, `SELECT coalesce(result::text, '') FROM commands
				WHERE txn_id = 'adj-1'`).Scan(&res)
			t.Fatalf("balance after the re-drive: %d, want 25; stored result %q", held, res)
		}
		time.Sleep(50 * time.Millisecond)
		if m, err := rg.ledger().Member(ctx, "telco", "m-1"); err == nil {
			held = m.Balance.Available
		}
	}
	if rows := rg.auditRows("deadletter.redriven"); len(rows) != 1 ||
		!strings.HasPrefix(rows[0], "olga callcentre/adj-1 ") {
		t.Fatalf("audit of the re-drive: %q", rows)
	}

	res, body = op.post("/admin/deadletters/"+u(junk)+"/redrive", url.Values{"csrf": {token}})
	mustStatus(t, "redrive of what is not a command", res, body, http.StatusUnprocessableEntity)
	if !strings.Contains(problemText(body), "cannot be re-driven") {
		t.Fatalf("problem: %q", problemText(body))
	}
	res, body = op.post("/admin/deadletters/"+u(junk)+"/discard", url.Values{"csrf": {token}})
	mustStatus(t, "discard", res, body, http.StatusSeeOther)
	res, body = op.post("/admin/deadletters/"+u(adj)+"/redrive", url.Values{"csrf": {token}})
	mustStatus(t, "second redrive", res, body, http.StatusConflict)
	if _, page, _ = op.get("/admin/deadletters?done=dropped"); !strings.Contains(page,
		"No dead letters") || !strings.Contains(page, "was removed") {
		t.Fatalf("page after both were handled:\n%s", page)
	}
	if rows := rg.auditRows("deadletter.discarded"); len(rows) != 1 {
		t.Fatalf("audit of the discard: %q", rows)
	}
	// Posted once: a second re-drive was refused, the balance is still 25.
	time.Sleep(200 * time.Millisecond)
	if m, err := rg.ledger().Member(ctx, "telco", "m-1"); err != nil || m.Balance.Available != 25 {
		t.Fatalf("balance at the end: %+v, %v", m, err)
	}
}

// u writes a sequence as the page's URLs do.
func u(n uint64) string { return strconv.FormatUint(n, 10) }
