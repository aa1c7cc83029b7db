package backoffice

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/core"
)

// An approved adjustment the ledger refuses (it asks for more points than
// the member has) is recorded as refused, in the queue and in the audit
// log, not as approved; and the threshold of approvals is the one given.
func TestApprovalRefusedByTheLedgerIsAuditedAsRefused(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.telco()
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)

	// 150 points is above this back office's threshold of 100: it waits.
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	res, body := olga.post("/admin/members/adjust", url.Values{"csrf": {token},
		"program": {"telco"}, "member": {"m-1"}, "points": {"-150"}, "reason": {"fraud"}})
	mustStatus(t, "ask for -150", res, body, http.StatusSeeOther)
	var id int64
	if err := rg.db.QueryRow(context.Background(), `SELECT id FROM bo_pending_adjustments
		WHERE member = 'm-1' AND points = -150 AND status = 'pending'`).Scan(&id); err != nil {
		t.Fatalf("-150 with a threshold of 100 is not waiting for approval: %v", err)
	}

	bruno := rg.browser()
	token = bruno.mustSignIn("bruno")
	res, body = bruno.post("/admin/approvals/"+strconv.FormatInt(id, 10)+"/approve", url.Values{"csrf": {token}})
	if res.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "refused") {
		t.Fatalf("approval of -150 for a member with none: %d\n%s", res.StatusCode, body)
	}
	var status string
	if err := rg.db.QueryRow(context.Background(), `SELECT status FROM bo_pending_adjustments
		WHERE id = $1`, id).Scan(&status); err != nil || status != "refused" {
		t.Fatalf("queue entry after the refusal: %q, %v; want refused", status, err)
	}
	if got := rg.auditRows("adjustment.refused"); len(got) != 1 ||
		!strings.Contains(got[0], "bruno telco/m-1") {
		t.Fatalf("audit of the refusal: %q", got)
	}
	if got := rg.auditRows("adjustment.approved"); len(got) != 0 {
		t.Fatalf("a refused adjustment audited as approved: %q", got)
	}
	// The person who asked finds what became of it on the Approvals page.
	code, page, _ := olga.get("/admin/approvals")
	cell := `id="decided-` + strconv.FormatInt(id, 10) + `">refused: `
	if code != http.StatusOK || !strings.Contains(page, cell) ||
		!strings.Contains(page, "available") {
		t.Fatalf("the Approvals page does not show the refusal (%d):\n%s", code, page)
	}
}

// A person's own adjustments of one member add up over a day against the
// threshold: three of 60 points each used to apply alone where one of 180
// waits. Another person's, and those a second person approved, do not count
// toward the first person's; after a day the count starts again.
func TestAdjustmentsAddUpPerPersonAndDay(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.ledger().Clock = func() time.Time { return rg.now }
	rg.telco()
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)
	olga, bruno := rg.browser(), rg.browser()
	otoken, btoken := olga.mustSignIn("olga"), bruno.mustSignIn("bruno")
	adjust := func(b *browser, token, points, want string) {
		t.Helper()
		res, body := b.post("/admin/members/adjust", url.Values{"csrf": {token},
			"program": {"telco"}, "member": {"m-1"}, "points": {points},
			"reason": {"goodwill"}})
		mustStatus(t, "adjust "+points, res, body, http.StatusSeeOther)
		if got := res.Header.Get("Location"); !strings.Contains(got, "done="+want) {
			t.Fatalf("adjust %s: sent to %s, want done=%s", points, got, want)
		}
	}
	available := func() core.Points {
		t.Helper()
		v, err := rg.ledger().Balance(context.Background(), "telco", "m-1")
		if err != nil {
			t.Fatal(err)
		}
		return v.Balance.Available
	}

	adjust(olga, otoken, "60", "applied")
	adjust(olga, otoken, "-30", "applied") // 90 either way
	adjust(olga, otoken, "20", "queued")   // 110 alone: a second person
	adjust(bruno, btoken, "60", "applied") // bruno's own day
	if got := available(); got != 90 {
		t.Fatalf("after three applied adjustments: %d available, want 90", got)
	}
	var id int64
	if err := rg.db.QueryRow(context.Background(), `SELECT id FROM bo_pending_adjustments
		WHERE member = 'm-1' AND points = 20 AND status = 'pending'`).Scan(&id); err != nil {
		t.Fatalf("olga's 20 is not waiting: %v", err)
	}
	res, body := bruno.post("/admin/approvals/"+strconv.FormatInt(id, 10)+"/approve",
		url.Values{"csrf": {btoken}})
	mustStatus(t, "approve olga's 20", res, body, http.StatusSeeOther)
	adjust(olga, otoken, "10", "applied") // 100: the approved 20 is not hers alone
	if got := available(); got != 120 {
		t.Fatalf("after the approval and 10 more: %d available, want 120", got)
	}
	adjust(olga, otoken, "1", "queued")

	// One the ledger refuses adjusted nothing and counts for nothing.
	rg.apply(core.KindEnroll, "telco", "m-2", core.Enroll{Channel: "web"})
	res, body = bruno.post("/admin/members/adjust", url.Values{"csrf": {btoken},
		"program": {"telco"}, "member": {"m-2"}, "points": {"-50"}, "reason": {"oops"}})
	if res.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("a debit of a member with nothing: %d\n%s", res.StatusCode, body)
	}
	res, body = bruno.post("/admin/members/adjust", url.Values{"csrf": {btoken},
		"program": {"telco"}, "member": {"m-2"}, "points": {"60"}, "reason": {"goodwill"}})
	mustStatus(t, "bruno's 60 to m-2", res, body, http.StatusSeeOther)
	if got := res.Header.Get("Location"); !strings.Contains(got, "done=applied") {
		t.Fatalf("bruno's 60 to m-2 after a refused 50: sent to %s, want applied", got)
	}
	// A form applied, then sent again with other points (the back button),
	// is refused as a reused form and stays counted: it used to be taken
	// off the count, and a person could go on adjusting alone.
	form := uuid.NewString()
	post := func(points string) *http.Response {
		res, _ := bruno.post("/admin/members/adjust", url.Values{"csrf": {btoken},
			"program": {"telco"}, "member": {"m-2"}, "points": {points},
			"reason": {"goodwill"}, "form_id": {form}})
		return res
	}
	if res := post("30"); !strings.Contains(res.Header.Get("Location"), "done=applied") {
		t.Fatalf("bruno's 30 to m-2: %d %s, want applied", res.StatusCode,
			res.Header.Get("Location"))
	}
	if res := post("31"); res.StatusCode != http.StatusConflict {
		t.Fatalf("the same form with 31: %d, want 409", res.StatusCode)
	}
	form = uuid.NewString()
	if res := post("20"); !strings.Contains(res.Header.Get("Location"), "done=queued") {
		t.Fatalf("bruno's 20 to m-2 after 90 alone: %s, want queued",
			res.Header.Get("Location"))
	}

	// A form takes the way it took the first time: queued with 150 and
	// sent again with 90, or applied with 90 and sent again with 150, it is
	// a reused form (409), not a second adjustment.
	for _, ref := range []string{"m-3", "m-4", "m-5"} {
		rg.apply(core.KindEnroll, "telco", ref, core.Enroll{Channel: "web"})
	}
	send := func(member, form, points string) *http.Response {
		res, _ := bruno.post("/admin/members/adjust", url.Values{"csrf": {btoken},
			"program": {"telco"}, "member": {member}, "points": {points},
			"reason": {"goodwill"}, "form_id": {form}})
		return res
	}
	queuedForm, appliedForm := uuid.NewString(), uuid.NewString()
	if res := send("m-3", queuedForm, "150"); !strings.Contains(res.Header.Get("Location"),
		"done=queued") {
		t.Fatalf("150 to m-3: %s, want queued", res.Header.Get("Location"))
	}
	if res := send("m-3", queuedForm, "90"); res.StatusCode != http.StatusConflict {
		t.Fatalf("the queued form again with 90: %d %s, want 409", res.StatusCode,
			res.Header.Get("Location"))
	}
	if res := send("m-4", appliedForm, "90"); !strings.Contains(res.Header.Get("Location"),
		"done=applied") {
		t.Fatalf("90 to m-4: %s, want applied", res.Header.Get("Location"))
	}
	if res := send("m-4", appliedForm, "150"); res.StatusCode != http.StatusConflict {
		t.Fatalf("the applied form again with 150: %d %s, want 409", res.StatusCode,
			res.Header.Get("Location"))
	}
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments
		WHERE member IN ('m-3', 'm-4')`); n != 1 {
		t.Fatalf("%d queued for m-3 and m-4, want the one 150", n)
	}
	// A refusal sent again is still nothing adjusted.
	refused := uuid.NewString()
	for range 2 {
		if res := send("m-5", refused, "-50"); res.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("-50 to m-5, which has nothing: %d, want 422", res.StatusCode)
		}
	}
	if res := send("m-5", uuid.NewString(), "60"); !strings.Contains(
		res.Header.Get("Location"), "done=applied") {
		t.Fatalf("60 to m-5 after two refusals: %s, want applied", res.Header.Get("Location"))
	}
	for ref, want := range map[string]core.Points{"m-3": 0, "m-4": 90, "m-5": 60} {
		v, err := rg.ledger().Balance(context.Background(), "telco", ref)
		if err != nil || v.Balance.Available != want {
			t.Fatalf("%s: %+v (%v), want %d available", ref, v, err, want)
		}
	}

	rg.now = rg.now.Add(24*time.Hour + time.Minute)
	otoken = olga.mustSignIn("olga") // the day's session has ended
	adjust(olga, otoken, "100", "applied")
	if got := available(); got != 220 {
		t.Fatalf("a day later: %d available, want 220", got)
	}
}

// From the attack on the above: adjustments the ledger has not applied yet
// (the back office answered 202, "accepted") count too. They used to be
// read from the ledger's postings, so two forms sent at once while the
// ledger was slow both applied alone. A form sent again is the same
// adjustment, not a second one.
func TestAdjustmentsNotYetAppliedCount(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{ApprovalThreshold: 100, Wait: time.Millisecond})
	rg.connectBus() // and no core: nothing sent is applied
	rg.telco()
	rg.user("olga", RoleOperator)
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	send := func(points, formID, want string) {
		t.Helper()
		res, body := olga.post("/admin/members/adjust", url.Values{"csrf": {token},
			"program": {"telco"}, "member": {"m-1"}, "points": {points},
			"reason": {"goodwill"}, "form_id": {formID}})
		mustStatus(t, "adjust "+points, res, body, http.StatusSeeOther)
		if got := res.Header.Get("Location"); !strings.Contains(got, "done="+want) {
			t.Fatalf("adjust %s (form %s): sent to %s, want done=%s", points, formID, got, want)
		}
	}
	// Each form waits a millisecond and is answered as accepted.
	first, second := uuid.NewString(), uuid.NewString()
	send("60", first, "accepted")
	send("60", first, "accepted") // the same form again
	send("60", second, "queued")  // 120 alone
	if n := rg.count(`SELECT count(*) FROM bo_adjusted_alone WHERE person = 'olga'`); n != 1 {
		t.Fatalf("%d adjustments counted as olga's alone, want 1", n)
	}
}

// From the last attack: one form sent at the same moment for two members,
// with 150 and 90, could apply the 150 alone and count nothing, or queue
// the 150 and apply the 90. A person's adjustments now go one at a time:
// of the two, one is the form's, the other a reused form.
func TestOneFormSentForTwoMembersAtOnce(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.telco()
	rg.user("olga", RoleOperator)
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	for i := range 8 {
		a, b := fmt.Sprintf("q-%d", i), fmt.Sprintf("r-%d", i)
		rg.apply(core.KindEnroll, "telco", a, core.Enroll{Channel: "web"})
		rg.apply(core.KindEnroll, "telco", b, core.Enroll{Channel: "web"})
		form := uuid.NewString()
		var wg sync.WaitGroup
		for member, points := range map[string]string{a: "150", b: "90"} {
			wg.Go(func() {
				olga.post("/admin/members/adjust", url.Values{"csrf": {token},
					"program": {"telco"}, "member": {member}, "points": {points},
					"reason": {"goodwill"}, "form_id": {form}})
			})
		}
		wg.Wait()
		applied := map[string]core.Points{}
		for _, ref := range []string{a, b} {
			v, err := rg.ledger().Balance(context.Background(), "telco", ref)
			if err != nil {
				t.Fatal(err)
			}
			applied[ref] = v.Balance.Available
		}
		queued := rg.count(`SELECT count(*) FROM bo_pending_adjustments WHERE member IN
			($1, $2)`, a, b)
		if applied[a] != 0 || (applied[b] != 0) == (queued != 0) {
			t.Fatalf("round %d: %s has %d, %s has %d, %d queued; want the 150 never "+
				"applied alone, and either the 90 applied or the 150 queued", i, a, applied[a],
				b, applied[b], queued)
		}
	}
}
