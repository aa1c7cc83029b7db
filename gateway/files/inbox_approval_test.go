package files

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// An inbox file above the approval limit waits, validated, for a second
// person; once approved (by another key than the inbox's) it is posted
// without anyone asking again, as a file that needs no approval is.
func TestInboxBatchIsPostedOnceApproved(t *testing.T) {
	f := newFixture(t, Options{ApprovalPoints: 1000}, "m1")
	telco := filepath.Join(f.opt.DataDir, "inbox", "telco")
	if err := os.MkdirAll(telco, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(telco, "campaign.csv"),
		[]byte("member,points,reason,txn_id\nm1,1500,campaign,c-1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen)
	f.svc.pollInbox(f.ctx, seen)
	var id string
	if err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text FROM bulk_batches
		WHERE file_name = 'campaign.csv'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	v := f.wait(id, core.BatchValidated)
	if !v.NeedsApproval || f.available("m1") != 0 {
		t.Fatalf("batch %+v, m1 %d points: want it waiting for approval", v.Batch,
			f.available("m1"))
	}
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches/"+id+"/approve", nil,
		map[string]string{"X-Actor": "bea", "X-Test-Source": "crm"})
	if code != http.StatusOK {
		t.Fatalf("approval answered %d %s", code, body)
	}
	v = f.wait(id, core.BatchPosted)
	if v.Posted != 1 || v.PostedBy != "bea" || f.available("m1") != 1500 {
		t.Fatalf("batch %+v, m1 %d points: want posted by bea, 1500", v.Batch,
			f.available("m1"))
	}
	f.check()
}
