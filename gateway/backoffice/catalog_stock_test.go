package backoffice

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// An operator opens the form of a reward with one unit left, a member
// orders that unit, then the operator saves the form as drawn with a new
// name. The save is refused with a link to a fresh form, the stock stays 0
// and a second member cannot order the unit again; the fresh form saves.
// A stock the operator types on a stale form is saved as typed.
func TestRewardFormDoesNotRestockUnitsOrderedMeanwhile(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.apply(core.KindEnroll, "telco", "m-2", core.Enroll{Channel: "web"})
	for _, m := range []string{"m-1", "m-2"} {
		rg.apply(core.KindCredit, "telco", m, core.Credit{Points: 1000, Reason: "welcome"})
	}
	one := int64(1)
	rg.apply(core.KindRewardUpsert, "telco", "", core.Reward{Code: "lamp", Name: "Lamp",
		Points: 100, Stock: &one})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	b.mustSignIn("olga")
	ctx := context.Background()

	// The form is drawn with stock 1, then m-1 orders the last unit.
	_, page, _ := b.get("/admin/catalog?program=telco&edit=lamp")
	stale := rewardForm(t, page)
	if stale.Get("stock") != "1" {
		t.Fatalf("form drawn with stock %q, want 1", stale.Get("stock"))
	}
	rg.apply(core.KindOrderPlace, "telco", "m-1", core.PlaceOrder{Reward: "lamp"})

	// Saving the stale form with only the name changed is refused.
	stale.Set("name", "Desk lamp")
	res, body := b.post("/admin/catalog/telco", stale)
	mustStatus(t, "stale form", res, body, http.StatusConflict)
	if p := problemText(body); !strings.Contains(p, "stock is now 0, not 1") {
		t.Errorf("problem %q, want it to say the stock is now 0, not 1", p)
	}
	fresh := `href="/admin/catalog?program=telco&amp;edit=lamp#reward-h"`
	if !strings.Contains(body, `id="stock-changed"`) || !strings.Contains(body, fresh) {
		t.Errorf("the refusal does not link to a fresh form:\n%s", body)
	}
	rw, err := rg.ledger().Reward(ctx, "telco", "lamp")
	if err != nil || rw.Stock == nil || *rw.Stock != 0 || rw.Name != "Lamp" || rw.Redeemed != 1 {
		t.Fatalf("reward after the refused save: %+v, %v; want Lamp, stock 0, 1 redeemed",
			rw, err)
	}
	if got := rg.auditRows("reward.saved"); len(got) != 0 {
		t.Errorf("the refused save is in the audit log: %q", got)
	}

	// The last unit is not sold twice.
	if r := rg.try(core.KindOrderPlace, "telco", "m-2", core.PlaceOrder{Reward: "lamp"}); r.Status !=
		bus.StatusRejected || r.Error == nil || !strings.Contains(r.Error.Message, "out of stock") {
		t.Fatalf("second order of the last unit: %+v, want refused out of stock", r)
	}

	// The fresh form shows stock 0 and saves the new name.
	_, page, _ = b.get("/admin/catalog?program=telco&edit=lamp")
	again := rewardForm(t, page)
	if again.Get("stock") != "0" {
		t.Fatalf("fresh form with stock %q, want 0", again.Get("stock"))
	}
	again.Set("name", "Desk lamp")
	res, body = b.post("/admin/catalog/telco", again)
	mustStatus(t, "fresh form", res, body, http.StatusSeeOther)
	rw, err = rg.ledger().Reward(ctx, "telco", "lamp")
	if err != nil || rw.Stock == nil || *rw.Stock != 0 || rw.Name != "Desk lamp" {
		t.Fatalf("reward after the fresh save: %+v, %v; want Desk lamp, stock 0", rw, err)
	}

	// On the stale form, a stock the operator types is what they want.
	stale.Set("stock", "5")
	res, body = b.post("/admin/catalog/telco", stale)
	mustStatus(t, "restock on the stale form", res, body, http.StatusSeeOther)
	if rw, err = rg.ledger().Reward(ctx, "telco", "lamp"); err != nil || rw.Stock == nil ||
		*rw.Stock != 5 {
		t.Fatalf("reward after the restock: %+v, %v; want stock 5", rw, err)
	}

	// The form for a new reward, sent with the code of this one, does not
	// replace it (an attack put ordered units back on sale so).
	_, page, _ = b.get("/admin/catalog?program=telco")
	blank := rewardForm(t, page)
	if blank.Get("existing") != "" {
		t.Fatalf("the new reward's form says existing=%q", blank.Get("existing"))
	}
	blank.Set("code", "lamp")
	blank.Set("name", "Other lamp")
	blank.Set("points", "10")
	blank.Set("stock", "9")
	res, body = b.post("/admin/catalog/telco", blank)
	mustStatus(t, "new reward form with an existing code", res, body, http.StatusConflict)
	p := html.UnescapeString(problemText(body))
	if !strings.Contains(p, `a reward "lamp" exists already`) {
		t.Errorf("problem %q, want it to say the reward exists", p)
	}
	if rw, err = rg.ledger().Reward(ctx, "telco", "lamp"); err != nil || rw.Stock == nil ||
		*rw.Stock != 5 || rw.Name != "Desk lamp" {
		t.Fatalf("reward after the refused new form: %+v, %v; want Desk lamp, stock 5", rw, err)
	}
}

// try runs one command through the ledger, as the core consumer would, and
// returns its result, accepted or not. It occurs at the rig's clock, or at
// the time given.
func (rg *rig) try(kind, program, member string, payload any,
	at ...time.Time) bus.Result {
	rg.t.Helper()
	body, _ := json.Marshal(payload)
	cmd := bus.Command{ID: uuid.NewString(), Kind: kind, Source: "test",
		TxnID: uuid.NewString(), Program: program, Member: member, Actor: "test",
		Payload: body}
	cmd.Seal()
	cmd.OccurredAt, cmd.ReceivedAt = rg.now, rg.now
	if len(at) > 0 {
		cmd.OccurredAt = at[0]
	}
	out, err := rg.ledger().ApplyBatch(context.Background(), []bus.Command{cmd})
	if err != nil {
		rg.t.Fatalf("%s: %v", kind, err)
	}
	return out[0].Result
}

var (
	rewardFormRE = regexp.MustCompile(`(?s)<form[^>]*action="/admin/catalog/[^"]*">.*?</form>`)
	inputRE      = regexp.MustCompile(`<input ([^>]*)>`)
	attrRE       = regexp.MustCompile(`(\w+)(?:="([^"]*)")?`)
	textareaRE   = regexp.MustCompile(`(?s)<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>`)
)

// rewardForm returns what a browser posts from the page's reward form as
// drawn: its inputs (ticked boxes only) and text areas.
func rewardForm(t *testing.T, page string) url.Values {
	t.Helper()
	f := rewardFormRE.FindString(page)
	if f == "" {
		t.Fatalf("no reward form on the page:\n%s", page)
	}
	v := url.Values{}
	for _, in := range inputRE.FindAllStringSubmatch(f, -1) {
		attrs := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(in[1], -1) {
			attrs[a[1]] = html.UnescapeString(a[2])
		}
		if _, checked := attrs["checked"]; attrs["type"] == "checkbox" && !checked {
			continue
		}
		v.Add(attrs["name"], attrs["value"])
	}
	for _, ta := range textareaRE.FindAllStringSubmatch(f, -1) {
		v.Add(ta[1], html.UnescapeString(ta[2]))
	}
	return v
}
