package files

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// TestAttack18SameTxnIDsInTwoFilesPostedAtOnce posts two different files at
// once that reuse each other's transaction ids, for other members and
// amounts, and a third file that is the first with CRLF line ends. Each
// transaction id must be credited once: the first answer wins, the other
// file's line is a replay (same line) or a conflict (other line).
func TestAttack18SameTxnIDsInTwoFilesPostedAtOnce(t *testing.T) {
	f := newFixture(t, Options{ChunkSize: 50, Workers: 2}, "a1", "a2", "a3", "b1", "b2")
	var a, b strings.Builder
	a.WriteString("member,points,reason,txn_id\n")
	b.WriteString("member,points,reason,txn_id\n")
	const n = 400
	for i := 0; i < n; i++ {
		fmt.Fprintf(&a, "a%d,%d,bono,dup-%d\n", i%3+1, 10, i)
		fmt.Fprintf(&b, "b%d,%d,bono,dup-%d\n", i%2+1, 1000, i)
	}
	crlf := strings.ReplaceAll(a.String(), "\n", "\r\n")
	ids := []string{}
	for _, c := range []string{a.String(), b.String(), crlf} {
		ids = append(ids, f.upload(c, "", map[string]string{"X-Actor": "ops"}).ID)
	}
	for _, id := range ids {
		f.wait(id, core.BatchValidated)
	}
	for _, id := range ids {
		if code, body := f.post(id, "ops"); code != http.StatusAccepted {
			t.Fatalf("post %s answered %d %s", id, code, body)
		}
	}
	var posted int64
	for _, id := range ids {
		v := f.wait(id, core.BatchPosted)
		if v.Posted+v.Rejected != n {
			t.Errorf("batch %s: %d posted + %d rejected, want %d lines", id, v.Posted,
				v.Rejected, n)
		}
		posted += v.Posted - v.Replayed
	}
	var total core.Points
	for _, m := range []string{"a1", "a2", "a3", "b1", "b2"} {
		total += f.available(m)
	}
	credits := f.count(`SELECT count(*) FROM postings WHERE source = 'file:telco'`)
	if credits != n || posted != n {
		t.Errorf("%d postings, %d lines counted as newly posted; want %d, one per txn id",
			credits, posted, n)
	}
	if total != core.Points(f.count(`SELECT coalesce(sum(points),0) FROM postings
		WHERE source = 'file:telco'`)) {
		t.Errorf("balances total %d differs from the postings", total)
	}
	f.check()
}

// TestAttack18TwoProcessesPostOneBatch: two processes (two gateways, or a
// restarted one resuming while the other was asked to post) post the same
// batch at once, and members change state in between: one closed, one
// suspended, one merged into another. Every line must end posted or
// rejected once, each transaction id posting at most once, the counts of the
// batch adding up, and the ledger's invariants holding.
func TestAttack18TwoProcessesPostOneBatch(t *testing.T) {
	members := []string{"p1", "p2", "p3", "p4", "gone", "sus", "old", "new"}
	f := newFixture(t, Options{ChunkSize: 7, Workers: 2}, members...)
	f.apply(core.KindCredit, "sus", "seed-sus", `{"points":1000,"reason":"seed"}`)
	f.apply(core.KindCredit, "old", "seed-old", `{"points":1000,"reason":"seed"}`)
	var b strings.Builder
	b.WriteString("member,points,reason,txn_id\n")
	want := map[string]core.Points{}
	const n = 300
	for i := 0; i < n; i++ {
		m := members[i%len(members)]
		pts := 5
		if i%3 == 2 {
			pts = -3
		}
		fmt.Fprintf(&b, "%s,%d,mix,two-%d\n", m, pts, i)
		if want[m]+core.Points(pts) >= 0 { // a debit beyond the balance is rejected
			want[m] += core.Points(pts)
		}
	}
	v := f.wait(f.upload(b.String(), "", nil).ID, core.BatchValidated)
	f.apply(core.KindClose, "gone", "close-gone", `{}`)
	f.apply(core.KindSuspend, "sus", "suspend-sus", `{}`)
	f.apply(core.KindMerge, "old", "merge-old", `{"into":"new"}`)

	other := New(f.svc.bg, f.ledger, f.svc.log, f.opt)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*Service{f.svc, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Post(f.ctx, v.Batch, "ops")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	v = f.wait(v.ID, core.BatchPosted)
	if v.Posted+v.Rejected != n || v.Replayed != 0 {
		t.Errorf("batch counts %d posted (%d replayed) + %d rejected, want %d lines, none "+
			"replayed", v.Posted, v.Replayed, v.Rejected, n)
	}
	if got := f.count(`SELECT count(*) FROM commands WHERE source = 'file:telco'`); got != n {
		t.Errorf("%d commands recorded, want %d", got, n)
	}
	if got := f.count(`SELECT count(DISTINCT txn_id) FROM postings WHERE source = 'file:telco'`); got != f.count(`SELECT count(*) FROM postings WHERE source = 'file:telco'`) {
		t.Errorf("a transaction id posted twice")
	}
	for _, m := range []string{"p1", "p2", "p3", "p4"} {
		if got := f.available(m); got != want[m] {
			t.Errorf("%s has %d, want %d", m, got, want[m])
		}
	}
	rejected := f.count(`SELECT count(*) FROM bulk_lines WHERE batch_id = $1 AND
		status = 'rejected'`, v.ID)
	if rejected != v.Rejected {
		t.Errorf("%d lines rejected, the batch counts %d", rejected, v.Rejected)
	}
	f.check()
}
