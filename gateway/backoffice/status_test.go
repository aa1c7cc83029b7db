package backoffice

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A person suspends, reactivates and closes members from their page: each
// needs a reason and is audited; a close needs the reference typed again,
// forfeits every point, and waits for a second person when it forfeits
// more than the approval threshold.
func TestMemberStatusFromTheBackOffice(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{ApprovalThreshold: 100})
	rg.telco()
	rg.apply(core.KindEnroll, "telco", "m-2", core.Enroll{Channel: "web"})
	rg.apply(core.KindAdjust, "telco", "m-1", core.Adjust{Points: 80, Reason: "welcome"})
	rg.apply(core.KindAdjust, "telco", "m-2", core.Adjust{Points: 500, Reason: "welcome"})
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)
	rg.user("aldo", RoleAuditor)
	ctx := context.Background()
	member := func(ref string) core.Member {
		t.Helper()
		m, err := rg.ledger().Member(ctx, "telco", ref)
		if err != nil {
			t.Fatal(err)
		}
		return *m
	}
	olga := rg.browser()
	token := olga.mustSignIn("olga")
	form := func(ref, action, reason, confirm string) url.Values {
		return url.Values{"csrf": {token}, "program": {"telco"}, "member": {ref},
			"action": {action}, "reason": {reason}, "confirm": {confirm}}
	}

	// An auditor reads but cannot change a member's status.
	aldo := rg.browser()
	f := form("m-1", "suspend", "fraud review", "")
	f.Set("csrf", aldo.mustSignIn("aldo"))
	if res, _ := aldo.post("/admin/members/status", f); res.StatusCode != http.StatusForbidden {
		t.Fatalf("auditor suspends: status %d, want 403", res.StatusCode)
	}

	res, body := olga.post("/admin/members/status", form("m-1", "suspend", "  ", ""))
	mustStatus(t, "suspend without a reason", res, body, http.StatusBadRequest)
	if !strings.Contains(problemText(body), "reason") {
		t.Fatalf("the refusal does not name the reason: %s", problemText(body))
	}
	if got := member("m-1").Status; got != "active" {
		t.Fatalf("status after a refused suspension: %s, want active", got)
	}

	res, body = olga.post("/admin/members/status", form("m-1", "suspend", "fraud review", ""))
	mustStatus(t, "suspend", res, body, http.StatusSeeOther)
	if got := member("m-1"); got.Status != "suspended" || got.Balance.Available != 80 {
		t.Fatalf("after suspending: %s with %d points, want suspended with 80", got.Status,
			got.Balance.Available)
	}
	if got := rg.auditRows("member.suspended"); len(got) != 1 ||
		!strings.Contains(got[0], "olga telco/m-1") || !strings.Contains(got[0], "fraud review") ||
		!strings.Contains(got[0], `"status": "active"`) {
		t.Fatalf("audit of the suspension: %q", got)
	}
	_, page, _ := olga.get("/admin/members?program=telco&member=m-1")
	if !strings.Contains(page, `value="reactivate"`) || strings.Contains(page, `value="suspend"`) {
		t.Fatalf("a suspended member's page does not offer reactivation alone:\n%s", page)
	}
	res, body = olga.post("/admin/members/status", form("m-1", "suspend", "again", ""))
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "suspended") {
		t.Fatalf("suspending a suspended member: %d %s", res.StatusCode, problemText(body))
	}

	res, body = olga.post("/admin/members/status", form("m-1", "reactivate", "cleared", ""))
	mustStatus(t, "reactivate", res, body, http.StatusSeeOther)
	if got := member("m-1").Status; got != "active" {
		t.Fatalf("status after reactivating: %s, want active", got)
	}

	// A close without the reference typed again changes nothing.
	res, body = olga.post("/admin/members/status", form("m-1", "close", "asked to leave", "m-"))
	mustStatus(t, "close unconfirmed", res, body, http.StatusBadRequest)
	if got := member("m-1"); got.Status != "active" || got.Balance.Available != 80 {
		t.Fatalf("after an unconfirmed close: %s with %d, want active with 80", got.Status,
			got.Balance.Available)
	}
	// 80 points is under the threshold: the close applies at once.
	res, body = olga.post("/admin/members/status", form("m-1", "close", "asked to leave", "m-1"))
	mustStatus(t, "close", res, body, http.StatusSeeOther)
	if got := member("m-1"); got.Status != "closed" || got.Balance.Available != 0 {
		t.Fatalf("after closing: %s with %d, want closed with 0", got.Status,
			got.Balance.Available)
	}
	if got := rg.auditRows("member.closed"); len(got) != 1 || !strings.Contains(got[0], "asked to leave") {
		t.Fatalf("audit of the close: %q", got)
	}

	// 500 points is above it: the close waits, and its requester cannot
	// approve it.
	res, body = olga.post("/admin/members/status", form("m-2", "close", "deceased", "m-2"))
	mustStatus(t, "close of 500 points", res, body, http.StatusSeeOther)
	if got := member("m-2"); got.Status != "active" || got.Balance.Available != 500 {
		t.Fatalf("a close waiting for approval applied: %s with %d", got.Status,
			got.Balance.Available)
	}
	var id, points int64
	if err := rg.db.QueryRow(ctx, `SELECT id, points FROM bo_pending_adjustments
		WHERE kind = 'close' AND member = 'm-2' AND status = 'pending'`).Scan(&id, &points); err != nil {
		t.Fatalf("the close of 500 points is not waiting: %v", err)
	}
	if points != -500 {
		t.Fatalf("the waiting close forfeits %d, want -500", points)
	}
	approve := "/admin/approvals/" + strconv.FormatInt(id, 10) + "/approve"
	if res, _ := olga.post(approve, url.Values{"csrf": {token}}); res.StatusCode != http.StatusConflict {
		t.Fatalf("requester approves her own close: status %d, want 409", res.StatusCode)
	}
	bruno := rg.browser()
	bt := bruno.mustSignIn("bruno")
	_, queue, _ := bruno.get("/admin/approvals")
	if !strings.Contains(queue, "close member") ||
		!strings.Contains(queue, "Approve close "+strconv.FormatInt(id, 10)) {
		t.Fatalf("the Approvals page does not show the close:\n%s", queue)
	}
	res, body = bruno.post(approve, url.Values{"csrf": {bt}})
	mustStatus(t, "approve the close", res, body, http.StatusSeeOther)
	if got := member("m-2"); got.Status != "closed" || got.Balance.Available != 0 {
		t.Fatalf("after the approved close: %s with %d, want closed with 0", got.Status,
			got.Balance.Available)
	}
	st, err := rg.ledger().Statement(ctx, "telco", "m-2", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Postings[0]; p.Kind != core.PostForfeit || p.Points != -500 ||
		!strings.Contains(p.Reason, "deceased (requested by olga, approved by bruno)") {
		t.Fatalf("the close's posting: %+v", p)
	}
	if got := rg.auditRows("close.approved"); len(got) != 1 || !strings.Contains(got[0], "bruno telco/m-2") {
		t.Fatalf("audit of the approval: %q", got)
	}
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments WHERE id = $1
		AND status = 'applied'`, id); n != 1 {
		t.Fatalf("the approved close is not marked applied")
	}
}

// An approved request whose reason fills the ledger's limit still reaches
// it: the requester's words are shortened to leave room for both names.
func TestApprovalReasonFitsTheLedger(t *testing.T) {
	t.Parallel()
	p := pendingAdjustment{Reason: strings.Repeat("é", core.MaxReason), RequestedBy: "olga",
		DecidedBy: "bruno"}
	got := approvalReason(p)
	if err := core.CheckReason(got, true); err != nil {
		t.Fatalf("a 500-character reason approved: %v", err)
	}
	if !strings.HasSuffix(got, "… (requested by olga, approved by bruno)") {
		t.Fatalf("shortened reason: %q", got)
	}
	p.Reason = "goodwill"
	if got := approvalReason(p); got != "goodwill (requested by olga, approved by bruno)" {
		t.Fatalf("short reason: %q", got)
	}
}

// A person settles a conversion the other program never answered for sure
// from the member's page: confirmed with the other program's reference,
// the held points are taken for good; the ledger refuses a second one.
func TestResolveConversionFromTheBackOffice(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.apply(core.KindAdjust, "telco", "m-1", core.Adjust{Points: 1000, Reason: "welcome"})
	rg.apply(core.KindExternalUpsert, "telco", "sky", core.ExternalProgram{Code: "sky",
		Name: "Sky Miles", Ratio: "0.5", Flavour: core.FlavourHTTP,
		Endpoint: "https://127.0.0.1:9/api"})
	rg.apply(core.KindConvert, "telco", "m-1", core.ConvertRequest{External: "sky", Points: 600})
	ctx := context.Background()
	page, err := rg.ledger().Conversions(ctx, "telco", "m-1", "", 10)
	if err != nil || len(page.Conversions) != 1 {
		t.Fatalf("conversions of m-1: %+v %v", page, err)
	}
	id := page.Conversions[0].ID
	// Eleven later conversions, settled: the pending one is older than the
	// latest ten and must still be offered.
	for i := 0; i < 11; i++ {
		rg.apply(core.KindConvert, "telco", "m-1", core.ConvertRequest{External: "sky",
			Points: 20})
		later, err := rg.ledger().Conversions(ctx, "telco", "m-1", "", 1)
		if err != nil {
			t.Fatal(err)
		}
		rg.apply(core.KindConversionResolve, "telco", "m-1", core.ResolveConversion{
			ID: later.Conversions[0].ID, Outcome: core.ConversionConfirmed,
			Reference: "SKY-" + strconv.Itoa(i), Reason: "settled by file"})
	}
	rg.user("olga", RoleOperator)
	olga := rg.browser()
	token := olga.mustSignIn("olga")

	// While its points are held, the member cannot be closed.
	res, body := olga.post("/admin/members/status", url.Values{"csrf": {token},
		"program": {"telco"}, "member": {"m-1"}, "action": {"close"}, "reason": {"leaving"},
		"confirm": {"m-1"}})
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "600 points held") {
		t.Fatalf("closing a member with a conversion pending: %d %s", res.StatusCode,
			problemText(body))
	}

	_, html, _ := olga.get("/admin/members?program=telco&member=m-1")
	if !strings.Contains(html, `id="conversion-`+id+`">pending`) ||
		!strings.Contains(html, "Resolve conversion "+id) {
		t.Fatalf("the member page does not offer the pending conversion:\n%s", html)
	}
	resolve := func(outcome, reference, reason string) (*http.Response, string) {
		return olga.post("/admin/members/conversions/resolve", url.Values{"csrf": {token},
			"program": {"telco"}, "member": {"m-1"}, "id": {id}, "outcome": {outcome},
			"reference": {reference}, "reason": {reason}})
	}
	res, body = resolve("confirmed", "SKY-77", "")
	mustStatus(t, "resolve without a reason", res, body, http.StatusBadRequest)
	if !strings.Contains(problemText(body), "reason") {
		t.Fatalf("the refusal does not name the reason: %s", problemText(body))
	}
	res, body = resolve("confirmed", "SKY-77", "Sky's desk confirmed the credit by phone")
	mustStatus(t, "resolve", res, body, http.StatusSeeOther)
	m, err := rg.ledger().Member(ctx, "telco", "m-1")
	if err != nil {
		t.Fatal(err)
	}
	if m.Balance.Available != 180 || m.Balance.Held != 0 {
		t.Fatalf("after confirming 600 of 1000 (and 220 converted before): %+v, want 180 "+
			"available and none held", m.Balance)
	}
	c, err := rg.ledger().Conversion(ctx, "telco", "m-1", id)
	if err != nil || c.Status != core.ConversionConfirmed || c.Reference != "SKY-77" {
		t.Fatalf("the conversion after resolving: %+v %v", c, err)
	}
	if got := rg.auditRows("conversion.resolved"); len(got) != 1 ||
		!strings.Contains(got[0], "olga telco/m-1") || !strings.Contains(got[0], "SKY-77") {
		t.Fatalf("audit of the resolution: %q", got)
	}
	res, body = resolve("refused", "", "changed my mind")
	if res.StatusCode != http.StatusConflict {
		t.Fatalf("a second resolution: %d %s, want 409", res.StatusCode, problemText(body))
	}
	if m, _ := rg.ledger().Member(ctx, "telco", "m-1"); m.Balance.Available != 180 {
		t.Fatalf("a refused second resolution moved points: %+v", m.Balance)
	}
	// The airline's reconciliation later denies it: the member page shows
	// the dispute among the conversions to look at, however many came after.
	if err := rg.ledger().DisputeConversion(ctx, id, "the other program answers refused",
		rg.now); err != nil {
		t.Fatal(err)
	}
	_, html, _ = olga.get("/admin/members?program=telco&member=m-1")
	if !strings.Contains(html, "disputed since") ||
		!strings.Contains(html, "the other program answers refused") ||
		strings.Count(html, `id="conversion-`+id+`"`) != 1 {
		t.Fatalf("the member page does not show the dispute once:\n%s", html)
	}
	// Once the points are put right, the desk marks the dispute settled,
	// saying how; it leaves the count and stays on the conversion.
	settle := func(note string) (*http.Response, string) {
		return olga.post("/admin/members/conversions/dispute", url.Values{"csrf": {token},
			"program": {"telco"}, "member": {"m-1"}, "id": {id}, "note": {note}})
	}
	res, body = settle(" ")
	mustStatus(t, "settle a dispute without a note", res, body, http.StatusBadRequest)
	res, body = settle("Sky reversed the miles; ticket SKY-DESK-4")
	mustStatus(t, "settle the dispute", res, body, http.StatusSeeOther)
	if counts, err := rg.ledger().DisputedConversions(ctx); err != nil || len(counts) != 0 {
		t.Fatalf("open disputes after settling: %+v %v", counts, err)
	}
	c, err = rg.ledger().Conversion(ctx, "telco", "m-1", id)
	if err != nil || c.DisputeSettledBy != "olga" || c.DisputeSettledAt == nil ||
		!strings.Contains(c.DisputeNote, "SKY-DESK-4") {
		t.Fatalf("the conversion after settling its dispute: %+v %v", c, err)
	}
	if got := rg.auditRows("conversion.dispute_settled"); len(got) != 1 ||
		!strings.Contains(got[0], "SKY-DESK-4") {
		t.Fatalf("audit of the settled dispute: %q", got)
	}
	res, body = settle("again")
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "no open dispute") {
		t.Fatalf("settling a settled dispute: %d %s", res.StatusCode, problemText(body))
	}
	// The other program saying the same again leaves it settled; other
	// words open it again.
	if err := rg.ledger().DisputeConversion(ctx, id, "the other program answers refused",
		rg.now); err != nil {
		t.Fatal(err)
	}
	if counts, _ := rg.ledger().DisputedConversions(ctx); len(counts) != 0 {
		t.Fatalf("the same words reopened a settled dispute: %+v", counts)
	}
	if err := rg.ledger().DisputeConversion(ctx, id, "the other program answers confirmed (reference SKY-2)",
		rg.now); err != nil {
		t.Fatal(err)
	}
	if counts, _ := rg.ledger().DisputedConversions(ctx); len(counts) != 1 {
		t.Fatalf("new words did not reopen the dispute: %+v", counts)
	}
	// Erasing the member erases the other program's words and the note,
	// which may name the person's account there.
	rg.apply(core.KindErase, "telco", "m-1", core.Erase{Reason: "art. 17"})
	var dispute, note string
	if err := rg.db.QueryRow(ctx, `SELECT dispute, dispute_note FROM conversions
		WHERE id = $1`, id).Scan(&dispute, &note); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dispute, "SKY-2") || strings.Contains(note, "SKY-DESK-4") {
		t.Fatalf("after the erasure the dispute reads %q, its note %q", dispute, note)
	}
	// The next reconciliation's words about it stay erased, and do not
	// reopen the dispute as new words would.
	if err := rg.ledger().DisputeConversion(ctx, id, "the other program answers confirmed "+
		"(reference SKY-2)", rg.now); err != nil {
		t.Fatal(err)
	}
	if err := rg.db.QueryRow(ctx, `SELECT dispute FROM conversions WHERE id = $1`,
		id).Scan(&dispute); err != nil || strings.Contains(dispute, "SKY-2") {
		t.Fatalf("the reconciliation after the erasure wrote %q (%v)", dispute, err)
	}
}
