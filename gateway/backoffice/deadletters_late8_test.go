package backoffice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
)

// An adjustment for a member that does not exist is refused by the ledger
// and dead-lettered as a refusal, as core does. The Dead letters page must
// tell it from a command that failed (the alert on kind="failed" sends the
// operator there), and re-driving it must not promise that the ledger
// applies it: the ledger answers it with its stored refusal, even once the
// member exists.
func TestLate8RefusedLetterOnTheDeadLettersPage(t *testing.T) {
	rg := newRig(t, Options{})
	rg.telco()
	rg.user("olga", RoleOperator)
	b := rg.connectBus()
	ctx := context.Background()

	rg.consume(b) // applies, and dead-letters refusals, as core does

	payload, _ := json.Marshal(core.Adjust{Points: 25, Reason: "goodwill"})
	cmd := bus.Command{ID: uuid.NewString(), Kind: core.KindAdjust, Source: "callcentre",
		TxnID: "adj-ghost", Program: "telco", Member: "ghost", Payload: payload,
		OccurredAt: rg.now, ReceivedAt: rg.now}
	cmd.Seal()
	if _, err := b.PublishCommand(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	var dead []natsbus.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); len(dead) < 1; {
		if time.Now().After(deadline) {
			t.Fatal("the refusal was not dead-lettered")
		}
		time.Sleep(50 * time.Millisecond)
		dead, _ = b.DeadLetters(ctx, 10)
	}
	if !dead[0].Refused {
		t.Fatalf("letter %+v not marked refused", dead[0])
	}
	seq := u(dead[0].Seq)

	op := rg.browser()
	token := op.mustSignIn("olga")
	code, page, _ := op.get("/admin/deadletters")
	if code != http.StatusOK || !strings.Contains(page, "adj-ghost") {
		t.Fatalf("dead letters page (%d):\n%s", code, page)
	}
	if !strings.Contains(page, `id="as-`+seq+`">refused<`) {
		t.Errorf("the page does not say letter %s is a refusal, not a failure:\n%s", seq, page)
	}
	// A refusal offers no re-drive, which could only give the refusal again.
	if strings.Contains(page, "/admin/deadletters/"+seq+"/redrive") ||
		!strings.Contains(page, "sends it again under a new") {
		t.Errorf("the page offers to re-drive refused letter %s:\n%s", seq, page)
	}

	// Posted all the same, the re-drive is refused and the letter stays.
	res, body := op.post("/admin/deadletters/"+seq+"/redrive", url.Values{"csrf": {token}})
	mustStatus(t, "redrive", res, body, http.StatusConflict)
	if !strings.Contains(body, "new transaction id") {
		t.Fatalf("the refusal to re-drive does not say what to do:\n%s", body)
	}
	if left, _ := b.DeadLetters(ctx, 10); len(left) != 1 || left[0].Seq != dead[0].Seq {
		t.Fatalf("after the refused re-drive the letters are %+v, want the refusal kept", left)
	}
}
