package files

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// postFile uploads content, waits for validation, posts it and returns the
// posted batch.
func (f *fixture) postFile(content string) BatchView {
	f.t.Helper()
	v := f.upload(content, "", nil)
	v = f.wait(v.ID, core.BatchValidated)
	if code, body := f.post(v.ID, "ana"); code >= 300 {
		f.t.Fatalf("post answered %d %s", code, body)
	}
	return f.wait(v.ID, core.BatchPosted)
}

// A file loaded again inside a larger one, posted in chunks of one line
// over two concurrent transactions: the lines the first file posted are
// posted_lines and replayed_lines of the second, the new one posted only,
// and the API shows replayed_lines (pinned, passes).
func TestReview4FileAgainCountsReplaysAcrossConcurrentParts(t *testing.T) {
	f := newFixture(t, Options{ChunkSize: 1, Workers: 2}, "a", "b", "c", "d")
	first := "member,points,reason,txn_id\na,10,bonus,t-1\nb,20,bonus,t-2\nc,30,bonus,t-3\n" +
		"d,40,bonus,t-4\n"
	v1 := f.postFile(first)
	if v1.Posted != 4 || v1.Replayed != 0 || v1.Rejected != 0 {
		t.Fatalf("first file: posted %d replayed %d rejected %d, want 4 0 0", v1.Posted,
			v1.Replayed, v1.Rejected)
	}
	v2 := f.postFile(first + "a,5,more,t-5\nb,5,more,t-6\n")
	if v2.Posted != 6 || v2.Replayed != 4 || v2.Rejected != 0 {
		t.Errorf("second file: posted %d replayed %d rejected %d, want 6 4 0", v2.Posted,
			v2.Replayed, v2.Rejected)
	}
	_, raw := f.do(http.MethodGet, "/v1/programs/telco/batches/"+v2.ID, nil, nil)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m["replayed_lines"] != float64(4) {
		t.Errorf("GET batch: replayed_lines %v (%v), want 4", m["replayed_lines"], err)
	}
	// The result file tells the four lines applied by the first file apart.
	wantRows := "line,txn_id,member,points,status,error_kind,error_field,error,replayed\n" +
		"2,t-1,a,10,posted,,,,true\n3,t-2,b,20,posted,,,,true\n4,t-3,c,30,posted,,,,true\n" +
		"5,t-4,d,40,posted,,,,true\n6,t-5,a,5,posted,,,,\n7,t-6,b,5,posted,,,,\n"
	if got := f.result(v2.ID); got != wantRows {
		t.Errorf("result file of the second load:\n%s\nwant:\n%s", got, wantRows)
	}
	for ref, want := range map[string]core.Points{"a": 15, "b": 25, "c": 30, "d": 40} {
		if got := f.available(ref); got != want {
			t.Errorf("%s has %d, want %d", ref, got, want)
		}
	}
	f.check()
}

// A chunk recorded a second time (a copy of a committed chunk's work, as a
// second process posting the same batch would send it) changes no count:
// the ledger answers every line as a replay, but the lines are no longer
// valid, so neither posted_lines nor replayed_lines move (pinned, passes).
func TestReview4ChunkRecordedTwiceLeavesReplayedAlone(t *testing.T) {
	f := newFixture(t, Options{}, "a", "b")
	v := f.postFile("member,points,reason,txn_id\na,10,bonus,r-1\nb,20,bonus,r-2\n")
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 100, false)
	if err != nil || len(lines) != 2 {
		t.Fatalf("lines: %v %+v", err, lines)
	}
	chunk := &postgres.BulkChunk{BatchID: v.ID, Through: lines[1].Line}
	for i := range lines {
		lines[i].Status, lines[i].Replayed = core.LineValid, false
		c, err := command(v.Batch, &lines[i])
		if err != nil {
			t.Fatal(err)
		}
		chunk.Lines, chunk.Commands = append(chunk.Lines, lines[i]),
			append(chunk.Commands, c)
	}
	if err := f.ledger.PostBatchLines(f.ctx, chunk); err != nil {
		t.Fatal(err)
	}
	for _, x := range chunk.Lines {
		if !x.Replayed || x.Status != core.LinePosted {
			t.Fatalf("second recording answered line %d %s replayed=%v, want a posted replay",
				x.Line, x.Status, x.Replayed)
		}
	}
	b, err := f.ledger.Batch(f.ctx, "telco", v.ID)
	if err != nil || b.Posted != 2 || b.Replayed != 0 || b.Rejected != 0 {
		t.Errorf("after a second recording: posted %d replayed %d rejected %d (%v), want "+
			"2 0 0", b.Posted, b.Replayed, b.Rejected, err)
	}
	if got := f.available("a") + f.available("b"); got != 30 {
		t.Errorf("a and b hold %d, want 30", got)
	}
}

// A line whose transaction id the ledger refused before is answered with
// that refusal again: it counts among rejected_lines, not among
// replayed_lines ("of posted_lines"); its line keeps the replayed flag.
// The migration's backfill, run over these batches, gives each the count
// the posting gave it (pinned, passes).
func TestReview4ReplayedRefusalAndBackfill(t *testing.T) {
	f := newFixture(t, Options{ChunkSize: 2, Workers: 2}, "a", "b")
	v1 := f.postFile("member,points,reason,txn_id\na,-80,fix,x-1\nb,20,bonus,x-2\n")
	if v1.Posted != 1 || v1.Rejected != 1 {
		t.Fatalf("first file: posted %d rejected %d, want 1 1", v1.Posted, v1.Rejected)
	}
	f.apply(core.KindCredit, "a", "seed-a", `{"points":100,"reason":"seed"}`)
	v2 := f.postFile("member,points,reason,txn_id\na,-80,fix,x-1\nb,20,bonus,x-2\n" +
		"b,7,more,x-3\n")
	if v2.Posted != 2 || v2.Replayed != 1 || v2.Rejected != 1 {
		t.Errorf("second file: posted %d replayed %d rejected %d, want 2 1 1 (the refusal "+
			"replayed stays a refusal)", v2.Posted, v2.Replayed, v2.Rejected)
	}
	if n := f.count(`SELECT count(*) FROM bulk_lines WHERE batch_id = $1 AND replayed`,
		v2.ID); n != 2 {
		t.Errorf("%d lines of the second file flagged replayed, want 2", n)
	}
	if got := f.available("a"); got != 100 {
		t.Errorf("a has %d, want 100: the replayed debit posts nothing", got)
	}
	sql, err := os.ReadFile("../../core/postgres/migrations/0019_bulk_replayed_lines.sql")
	if err != nil {
		t.Fatal(err)
	}
	_, backfill, _ := strings.Cut(string(sql), ";\n")
	live := map[string]int64{v1.ID: v1.Replayed, v2.ID: v2.Replayed}
	if _, err := f.ledger.Pool().Exec(f.ctx, `UPDATE bulk_batches SET replayed_lines = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ledger.Pool().Exec(f.ctx, backfill); err != nil {
		t.Fatal(err)
	}
	for id, want := range live {
		if n := f.count(`SELECT replayed_lines FROM bulk_batches WHERE id = $1`, id); n != want {
			t.Errorf("batch %s: backfill gives %d replayed lines, posting gave %d", id, n, want)
		}
	}
	f.check()
}
