package backoffice

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/core"
)

// queuedClose asks, as olga, to close ref (above the threshold) and
// returns the request's number.
func queuedClose(t *testing.T, rg *rig, b *browser, token, ref string) int64 {
	t.Helper()
	res, body := b.post("/admin/members/status", url.Values{"csrf": {token},
		"program": {"telco"}, "member": {ref}, "action": {"close"}, "reason": {"moving abroad"},
		"confirm": {ref}, "form_id": {uuid.NewString()}})
	mustStatus(t, "ask to close "+ref, res, body, http.StatusSeeOther)
	var id int64
	if err := rg.db.QueryRow(context.Background(), `SELECT id FROM bo_pending_adjustments
		WHERE kind = 'close' AND member = $1 AND status = 'pending'`, ref).Scan(&id); err != nil {
		t.Fatalf("the close of %s is not waiting: %v", ref, err)
	}
	return id
}

// A close approved after its member was merged into another account is
// refused by the ledger: the survivor keeps its status and every point. A
// close approved after the member earned more than one person could take
// alone is refused too; within that, it forfeits what the member has.
func TestApprovedCloseTakesNoMoreThanWasApproved(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.telco()
	for _, ref := range []string{"m-2", "m-3", "m-4"} {
		rg.apply(core.KindEnroll, "telco", ref, core.Enroll{Channel: "web"})
	}
	for _, ref := range []string{"m-1", "m-2", "m-3", "m-4"} {
		rg.apply(core.KindAdjust, "telco", ref, core.Adjust{Points: 3000, Reason: "welcome"})
	}
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)
	olga, bruno := rg.browser(), rg.browser()
	ot, bt := olga.mustSignIn("olga"), bruno.mustSignIn("bruno")
	ctx := context.Background()
	approve := func(id int64) (*http.Response, string) {
		return bruno.post("/admin/approvals/"+strconv.FormatInt(id, 10)+"/approve",
			url.Values{"csrf": {bt}})
	}
	member := func(ref string) core.Member {
		m, err := rg.ledger().Member(ctx, "telco", ref)
		if err != nil {
			t.Fatal(err)
		}
		return *m
	}

	// m-1 is merged into m-2 after its close was asked for.
	id := queuedClose(t, rg, olga, ot, "m-1")
	rg.apply(core.KindMerge, "telco", "m-1", core.Merge{Into: "m-2"})
	res, body := approve(id)
	if res.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(problemText(body), `merged into &#34;m-2&#34;`) {
		t.Fatalf("approving the close of a merged member: %d %s", res.StatusCode,
			problemText(body))
	}
	if m := member("m-2"); m.Status != "active" || m.Balance.Available != 6000 {
		t.Fatalf("the survivor after the refused close: %s with %d, want active with 6000",
			m.Status, m.Balance.Available)
	}

	// m-3 earns 500 more than was approved: more than the threshold of 100.
	id = queuedClose(t, rg, olga, ot, "m-3")
	rg.apply(core.KindAdjust, "telco", "m-3", core.Adjust{Points: 500, Reason: "bill paid"})
	res, body = approve(id)
	if res.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(problemText(body), "earned since it was asked for") {
		t.Fatalf("approving a close that grew by 500: %d %s", res.StatusCode, problemText(body))
	}
	if m := member("m-3"); m.Status != "active" || m.Balance.Available != 3500 {
		t.Fatalf("m-3 after the refused close: %s with %d", m.Status, m.Balance.Available)
	}

	// m-4 earns 60: within what one person could close alone.
	id = queuedClose(t, rg, olga, ot, "m-4")
	rg.apply(core.KindAdjust, "telco", "m-4", core.Adjust{Points: 60, Reason: "bill paid"})
	res, body = approve(id)
	mustStatus(t, "approve the close of m-4", res, body, http.StatusSeeOther)
	if m := member("m-4"); m.Status != "closed" || m.Balance.Available != 0 {
		t.Fatalf("m-4 after its approved close: %s with %d", m.Status, m.Balance.Available)
	}
	if got := rg.auditRows("close.approved"); len(got) != 1 || !strings.Contains(got[0], "telco/m-4") {
		t.Fatalf("audit of approved closes: %q", got)
	}

	// A direct close carries the threshold as its bound. m-2, asked about
	// at its own reference, holds 6000: that one goes to Approvals.
	_, page, _ := olga.get("/admin/members?program=telco&member=m-1")
	if !strings.Contains(page, "Member m-2") {
		t.Fatalf("searching the merged m-1 does not show m-2:\n%s", page)
	}
	res, body = olga.post("/admin/members/status", url.Values{"csrf": {ot}, "program": {"telco"},
		"member": {"m-1"}, "action": {"suspend"}, "reason": {"ported out"}})
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "merged into m-2") {
		t.Fatalf("suspending the merged m-1: %d %s", res.StatusCode, problemText(body))
	}
	if m := member("m-2"); m.Status != "active" {
		t.Fatalf("m-2 is %s after a status asked of m-1", m.Status)
	}
}

// A form sent twice (a double click, the back button, a retry) changes the
// ledger once: an adjustment credits once, a large one and a close queue
// once, and a second identical status change answers the first.
func TestMemberFormSentTwiceAppliesOnce(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 1000})
	rg.telco()
	rg.apply(core.KindEnroll, "telco", "m-2", core.Enroll{Channel: "web"})
	rg.apply(core.KindAdjust, "telco", "m-2", core.Adjust{Points: 5000, Reason: "welcome"})
	rg.user("olga", RoleOperator)
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	ctx := context.Background()
	twice := func(path string, form url.Values) {
		t.Helper()
		form.Set("csrf", token)
		form.Set("form_id", uuid.NewString())
		for i := 0; i < 2; i++ {
			res, body := olga.post(path, form)
			mustStatus(t, path+" sent again", res, body, http.StatusSeeOther)
		}
	}
	twice("/admin/members/adjust", url.Values{"program": {"telco"}, "member": {"m-1"},
		"points": {"500"}, "reason": {"goodwill call 1001"}})
	if m, _ := rg.ledger().Member(ctx, "telco", "m-1"); m.Balance.Available != 500 {
		t.Fatalf("a form sent twice credited %d, want 500", m.Balance.Available)
	}
	if got := rg.auditRows("adjustment.applied"); len(got) != 1 {
		t.Fatalf("%d audit entries for one adjustment sent twice", len(got))
	}
	twice("/admin/members/adjust", url.Values{"program": {"telco"}, "member": {"m-1"},
		"points": {"5000"}, "reason": {"goodwill call 1002"}})
	twice("/admin/members/status", url.Values{"program": {"telco"}, "member": {"m-2"},
		"action": {"close"}, "reason": {"moving"}, "confirm": {"m-2"}})
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments`); n != 2 {
		t.Fatalf("%d requests queued by two forms sent twice each, want 2", n)
	}
	twice("/admin/members/status", url.Values{"program": {"telco"}, "member": {"m-1"},
		"action": {"suspend"}, "reason": {"review"}})
	if got := rg.auditRows("member.suspended"); len(got) != 1 {
		t.Fatalf("%d suspensions audited for one form sent twice", len(got))
	}
	// The same form id sent with another amount queues nothing and says so.
	reused := url.Values{"csrf": {token}, "program": {"telco"}, "member": {"m-1"},
		"points": {"5000"}, "reason": {"goodwill call 1003"}, "form_id": {uuid.NewString()}}
	res, body := olga.post("/admin/members/adjust", reused)
	mustStatus(t, "queue 5000", res, body, http.StatusSeeOther)
	reused.Set("points", "9000")
	res, body = olga.post("/admin/members/adjust", reused)
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "other content") {
		t.Fatalf("a form id sent again with another amount: %d %s", res.StatusCode,
			problemText(body))
	}
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments WHERE points = 9000`); n != 0 {
		t.Fatalf("the changed amount was queued")
	}
	// With the close of m-2 waiting, a second close form is refused.
	res, body = olga.post("/admin/members/status", url.Values{"csrf": {token},
		"program": {"telco"}, "member": {"m-2"}, "action": {"close"}, "reason": {"again"},
		"confirm": {"m-2"}, "form_id": {uuid.NewString()}})
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "already waits") {
		t.Fatalf("a second close while one waits: %d %s", res.StatusCode, problemText(body))
	}
}

// An approval whose answer does not come in time stays on the Approvals
// page, marked sent, and is not audited as approved; checking it again
// once the ledger is back applies it once.
func TestApprovalSentWithoutAnswerCanBeCheckedAgain(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{ApprovalThreshold: 100, Wait: 300 * time.Millisecond})
	rg.telco()
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)
	bs := rg.connectBus() // no ledger consumes it yet
	olga, bruno := rg.browser(), rg.browser()
	ot, bt := olga.mustSignIn("olga"), bruno.mustSignIn("bruno")
	res, body := olga.post("/admin/members/adjust", url.Values{"csrf": {ot}, "program": {"telco"},
		"member": {"m-1"}, "points": {"700"}, "reason": {"goodwill"}})
	mustStatus(t, "ask for 700", res, body, http.StatusSeeOther)
	res, body = bruno.post("/admin/approvals/1/approve", url.Values{"csrf": {bt}})
	mustStatus(t, "approve while the ledger is away", res, body, http.StatusSeeOther)
	if got := rg.auditRows("adjustment.approved"); len(got) != 0 {
		t.Fatalf("an approval the ledger never answered is audited as approved: %q", got)
	}
	if got := rg.auditRows("adjustment.sent"); len(got) != 1 {
		t.Fatalf("audit of the sent approval: %q", got)
	}
	_, page, _ := bruno.get("/admin/approvals")
	if !strings.Contains(page, "Check adjustment 1 again") {
		t.Fatalf("the sent approval is not offered to check again:\n%s", page)
	}
	rg.consume(bs)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, _ := rg.ledger().Member(context.Background(), "telco", "m-1"); m.Balance.Available == 700 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the approved adjustment never reached the ledger")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The ledger audited the approval when it applied it, under the
	// approver; the Approvals page reads its answer without anyone checking.
	if got := rg.auditRows("adjustment.approved"); len(got) != 1 || !strings.HasPrefix(got[0], "bruno ") {
		t.Fatalf("audit once the ledger applied the approval: %q", got)
	}
	_, page, _ = olga.get("/admin/approvals")
	if !strings.Contains(page, `id="decided-1">applied<`) {
		t.Fatalf("the Approvals page does not show the late answer:\n%s", page)
	}
	res, _ = bruno.post("/admin/approvals/1/approve", url.Values{"csrf": {bt}})
	if res.StatusCode != http.StatusConflict {
		t.Fatalf("checking an applied request again: %d, want 409", res.StatusCode)
	}
	if m, _ := rg.ledger().Member(context.Background(), "telco", "m-1"); m.Balance.Available != 700 {
		t.Fatalf("the balance moved to %d, want 700", m.Balance.Available)
	}
	if got := rg.auditRows("adjustment.approved"); len(got) != 1 {
		t.Fatalf("audit after the page settled it: %q", got)
	}
}

// Two approvers pressing Approve, and one pressing it again, at once: the
// ledger applies the request once and the audit log says so once, under
// the approver the request records.
func TestRacingApprovalsAuditOnce(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.telco()
	for _, u := range []string{"olga", "bruno", "carla"} {
		rg.user(u, RoleOperator)
	}
	olga := rg.browser()
	ot := olga.mustSignIn("olga")
	res, body := olga.post("/admin/members/adjust", url.Values{"csrf": {ot}, "program": {"telco"},
		"member": {"m-1"}, "points": {"2500"}, "reason": {"goodwill"}})
	mustStatus(t, "ask for 2500", res, body, http.StatusSeeOther)
	var clicks []func()
	for _, u := range []string{"bruno", "bruno", "carla", "carla"} {
		b := rg.browser()
		tok := b.mustSignIn(u)
		clicks = append(clicks, func() {
			b.post("/admin/approvals/1/approve", url.Values{"csrf": {tok}})
		})
	}
	done := make(chan struct{})
	for _, click := range clicks {
		go func() { click(); done <- struct{}{} }()
	}
	for range clicks {
		<-done
	}
	if m, _ := rg.ledger().Member(context.Background(), "telco", "m-1"); m.Balance.Available != 2500 {
		t.Fatalf("four approvals at once credited %d, want 2500", m.Balance.Available)
	}
	var by string
	if err := rg.db.QueryRow(context.Background(), `SELECT decided_by FROM bo_pending_adjustments
		WHERE id = 1`).Scan(&by); err != nil {
		t.Fatal(err)
	}
	got := rg.auditRows("adjustment.approved")
	if len(got) != 1 || !strings.HasPrefix(got[0], by+" ") {
		t.Fatalf("audit of one approval pressed four times: %q, want one by %s", got, by)
	}
}

// What a close forfeits is every point in the member's lots: a debt does
// not cancel pending points out, so a member owing points with large
// pending ones still needs approval to close.
func TestForfeitOfADebtor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		b    core.Balance
		want int64
	}{
		{core.Balance{Available: 300, Pending: 100, Held: 50}, 450},
		{core.Balance{Available: -100000, Pending: 100000}, 100000},
		{core.Balance{}, 0},
	} {
		if got := forfeitOf(tc.b); got != tc.want {
			t.Errorf("forfeitOf(%+v) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

// A form larger than a page takes is refused as too large, not as a
// forged form.
func TestOversizedFormSaysSo(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	token := b.mustSignIn("olga")
	res, body := b.post("/admin/members/status", url.Values{"csrf": {token},
		"program": {"telco"}, "member": {"m-1"}, "action": {"suspend"},
		"reason": {strings.Repeat("x", 2<<20)}})
	if res.StatusCode != http.StatusRequestEntityTooLarge ||
		!strings.Contains(problemText(body), "larger than the 64 KiB") {
		t.Fatalf("a 2 MiB form: %d %s", res.StatusCode, problemText(body))
	}
}

// A close of a member whose points are all pending forfeits them: the
// statement shows the pending points each line moved, not a bare 0.
func TestStatementShowsPendingPointsMoved(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 1000})
	rg.now = time.Now().UTC() // the ledger's clock: the accrual stays pending
	rg.apply(core.KindProgramUpsert, "shop", "", map[string]any{"name": "Shop",
		"currency": "USD", "points_per_unit": "1", "pending_days": 30})
	rg.apply(core.KindEnroll, "shop", "s-1", core.Enroll{Channel: "web"})
	rg.apply(core.KindAccrue, "shop", "s-1", core.Accrue{EventType: "bill_paid", Amount: "300"})
	rg.user("olga", RoleOperator)
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	res, body := olga.post("/admin/members/status", url.Values{"csrf": {token},
		"program": {"shop"}, "member": {"s-1"}, "action": {"close"}, "reason": {"left"},
		"confirm": {"s-1"}})
	mustStatus(t, "close s-1", res, body, http.StatusSeeOther)
	_, page, _ := olga.get("/admin/members?program=shop&member=s-1")
	if !strings.Contains(page, "pending &#43;300") || !strings.Contains(page, "pending -300") {
		t.Fatalf("the statement does not show the pending points moved:\n%s", page)
	}
	if m, _ := rg.ledger().Member(context.Background(), "shop", "s-1"); m.Status != "closed" ||
		m.Balance.Pending != 0 {
		t.Fatalf("s-1 after its close: %+v", m)
	}
}

// The back office's own source is one no API key or SOAP user may take:
// its approvals' transaction ids are answered by the ledger under it.
func TestBackOfficeSourceIsReserved(t *testing.T) {
	if !core.ReservedSource(Source) {
		t.Fatalf("the back office's source %q is not reserved", Source)
	}
}

// Reloading the address a member form or an approval answered at leads
// back to its page, not to a bare 404.
func TestFormAddressesLeadBack(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	b.mustSignIn("olga")
	for path, want := range map[string]string{"/admin/members/status": "/admin/members",
		"/admin/members/adjust": "/admin/members", "/admin/approvals/7/approve": "/admin/approvals"} {
		res, err := b.c.Get(rg.url + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
			t.Errorf("GET %s: %d to %q, want 303 to %s", path, res.StatusCode,
				res.Header.Get("Location"), want)
		}
	}
}
