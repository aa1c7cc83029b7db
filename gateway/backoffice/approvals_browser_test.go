package backoffice_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
)

// TestFailedApprovalSentAgainInChromium: an approval reached the ledger but
// its answer was lost, so the back office marked it failed. A second
// administrator sends it again from the approvals page; the ledger replays
// the first result and the member is credited once.
func TestFailedApprovalSentAgainInChromium(t *testing.T) {
	p := startPlatform(t, app.Roles{}, nil)
	p.telco(true)
	p.users(map[string]backoffice.Role{"root": backoffice.RoleAdministrator})
	ctx := context.Background()
	_, err := p.a.Pool.Exec(ctx, `INSERT INTO bo_pending_adjustments (program, member, points,
			reason, requested_by, status, decided_by, decided_at, outcome)
		VALUES ('telco', $1, 20000, 'Goodwill', 'olga', 'failed', 'bruno', now(),
			'not confirmed: context deadline exceeded')`, member)
	if err != nil {
		t.Fatal(err)
	}

	// The first send, as bruno's approval made it, reached the ledger.
	body, _ := json.Marshal(core.Adjust{Points: 20000,
		Reason: "Goodwill (requested by olga, approved by bruno)"})
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: core.KindAdjust,
		Source: backoffice.Source, TxnID: "backoffice-approval-1", Program: "telco",
		Member: member, Actor: "bruno", Channel: "backoffice", Payload: body,
		ReceivedAt: time.Now().UTC()}
	cmd.Seal()
	cmd.OccurredAt = cmd.ReceivedAt
	results, stop, err := p.a.Bus.SubscribeResult(backoffice.Source, cmd.TxnID)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := p.a.Bus.PublishCommand(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-results:
		if res.Status != bus.StatusOK {
			t.Fatalf("first send: %+v", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first send got no result")
	}
	if got := p.available(); got != 21500 {
		t.Fatalf("available %d after the first send, want 21500", got)
	}

	c := newChrome(t, p.base)
	c.signIn("root")
	c.run("open approvals", chromedp.Navigate(p.base+"/admin/approvals"),
		chromedp.WaitVisible(chromedp.ID("approvals")), c.shot("13-approval-failed"))
	if status := c.text("status-1"); !strings.Contains(status, "failed") ||
		!strings.Contains(status, "not confirmed") {
		t.Fatalf("status shown %q, want failed with its reason", status)
	}
	var notice string
	c.run("send it again",
		chromedp.Click(chromedp.CSS(`button[aria-label="Send adjustment 1 again"]`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
		into(&notice, chromedp.Text(chromedp.CSS(".notice"))))
	if !strings.Contains(notice, "approved") {
		t.Fatalf("notice %q, want approved", notice)
	}
	if got := p.available(); got != 21500 {
		t.Fatalf("available %d after sending again, want 21500 (credited once)", got)
	}
	if n := p.count(`SELECT count(*) FROM postings WHERE kind = 'adjustment'`); n != 1 {
		t.Fatalf("%d adjustment postings, want 1", n)
	}
	var status, by string
	err = p.a.Pool.QueryRow(ctx, `SELECT status, decided_by FROM bo_pending_adjustments
		WHERE id = 1`).Scan(&status, &by)
	if err != nil || status != "applied" || by != "bruno" {
		t.Fatalf("approval %s by %s (%v), want applied, first approved by bruno", status, by,
			err)
	}
}
