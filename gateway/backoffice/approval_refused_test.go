package backoffice

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
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
