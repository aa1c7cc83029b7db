package backoffice

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The approvals page lists the bulk files waiting for a second person
// beside the adjustments, each linked to its page, and no longer once
// approved.
func TestApprovalsPageListsBatchesAwaitingApproval(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("olga", RoleOperator)
	id := uuid.NewString()
	_, err := rg.db.Exec(context.Background(), `INSERT INTO bulk_batches (id, program,
			checksum, file_name, stored_path, size_bytes, charset, uploaded_by, channel,
			status, needs_approval, credit_points, debit_points, created_at)
		VALUES ($1::uuid, 'telco', $1::text, 'campaign-dec.csv', '/nowhere', 10, 'utf-8', 'ana', 'inbox',
			'validated', true, 1200, 300, $2)`, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	olga := rg.browser()
	olga.mustSignIn("olga")
	code, body, _ := olga.get("/admin/approvals")
	if code != http.StatusOK || !strings.Contains(body, "campaign-dec.csv") ||
		!strings.Contains(body, `href="/admin/bulk/telco/`+id+`"`) ||
		!strings.Contains(body, "1,500") {
		t.Fatalf("approvals page %d does not list the batch of 1,500 points:\n%s", code, body)
	}
	if _, err := rg.db.Exec(context.Background(), `UPDATE bulk_batches
		SET approved_by = 'bea' WHERE id = $1::uuid`, id); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := olga.get("/admin/approvals"); strings.Contains(body, "campaign-dec.csv") ||
		!strings.Contains(body, "No bulk file is waiting for approval.") {
		t.Fatalf("an approved batch is still listed:\n%s", body)
	}
}
