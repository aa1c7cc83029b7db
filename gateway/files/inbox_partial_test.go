package files

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A writer that pauses in the middle of a line for longer than a poll
// leaves a file that looks finished: its last line, cut, would read 15
// points where the file says 1500, and the lines after it would be lost.
// Such a file waits for the line end of its last line, and is then taken
// whole.
func TestInboxFileCutMidLineWaitsForItsLineEnd(t *testing.T) {
	f := newFixture(t, Options{}, "b3")
	path := filepath.Join(f.inboxDir(), "cut-mid-line.csv")
	if err := os.WriteFile(path, []byte("member,reason,txn_id,points\n"+
		"b3,slow writer,sl-1,15"), 0o640); err != nil {
		t.Fatal(err)
	}
	seen := map[string]fileState{}
	for range 3 {
		f.svc.pollInbox(f.ctx, seen)
	}
	if n := f.count(`SELECT count(*) FROM bulk_batches WHERE file_name = $1`,
		"cut-mid-line.csv"); n != 0 {
		t.Fatalf("a file cut inside its last line was taken: %d batches", n)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file left the inbox: %v", err)
	}

	w, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("00\nb3,slow writer,sl-2,2000\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	f.svc.pollInbox(f.ctx, seen) // notes the new size
	f.svc.pollInbox(f.ctx, seen) // takes it
	var id string
	if err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text FROM bulk_batches
		WHERE file_name = $1`, "cut-mid-line.csv").Scan(&id); err != nil {
		t.Fatalf("the finished file's batch: %v", err)
	}
	if v := f.waitPosted(id); v.Posted != 2 || f.available("b3") != 3500 {
		t.Fatalf("batch %+v; b3 has %d, want 1500 + 2000", v.Batch, f.available("b3"))
	}
	f.check()
}

// A file that ends without a line end on purpose is taken once it has
// stayed unchanged for InboxQuiet.
func TestInboxFileWithoutFinalLineEndTakenWhenQuiet(t *testing.T) {
	f := newFixture(t, Options{InboxQuiet: time.Millisecond}, "b4")
	path := filepath.Join(f.inboxDir(), "no-final-newline.csv")
	if err := os.WriteFile(path, []byte("member,reason,txn_id,points\n"+
		"b4,bono,nf-1,40"), 0o640); err != nil {
		t.Fatal(err)
	}
	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen)
	time.Sleep(5 * time.Millisecond)
	f.svc.pollInbox(f.ctx, seen)
	var id string
	if err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text FROM bulk_batches
		WHERE file_name = $1`, "no-final-newline.csv").Scan(&id); err != nil {
		t.Fatalf("the quiet file's batch: %v", err)
	}
	if v := f.waitPosted(id); v.Posted != 1 || f.available("b4") != 40 {
		t.Fatalf("batch %+v; b4 has %d, want 40", v.Batch, f.available("b4"))
	}
}

// A writer that keeps its file open and pauses at a line end for longer
// than a poll has the file taken with the lines written so far; what it
// writes next lands in the file moved to done/. That file goes back to the
// inbox and is taken again whole: the first lines are replays, the rest
// are posted (they were lost without a word).
func TestInboxFileWrittenAfterItWasLoadedIsTakenAgain(t *testing.T) {
	f := newFixture(t, Options{}, "r1")
	dir := f.inboxDir()
	path := filepath.Join(dir, "open-writer.csv")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString("member,points,reason,txn_id\nr1,100,bono,ow-1\n"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen)
	f.svc.pollInbox(f.ctx, seen)
	first := f.batchOfSize(len("member,points,reason,txn_id\nr1,100,bono,ow-1\n"))
	f.waitPosted(first)
	if f.available("r1") != 100 {
		t.Fatalf("r1 has %d after the first part", f.available("r1"))
	}

	// The writer goes on, through its open handle, into done/.
	if _, err := w.WriteString("r1,200,bono,ow-2\nr1,300,bono,ow-3\n"); err != nil {
		t.Fatal(err)
	}
	f.svc.pollInbox(f.ctx, seen) // puts it back in the inbox
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file written to in done/ is not back in the inbox: %v", err)
	}
	f.svc.pollInbox(f.ctx, seen) // notes it
	f.svc.pollInbox(f.ctx, seen) // takes it
	whole := f.batchOfSize(len("member,points,reason,txn_id\nr1,100,bono,ow-1\n" +
		"r1,200,bono,ow-2\nr1,300,bono,ow-3\n"))
	if v := f.waitPosted(whole); v.Posted != 3 || v.Replayed != 1 {
		t.Fatalf("the whole file's batch: %+v; want 3 posted, 1 of them a replay", v.Batch)
	}
	if f.available("r1") != 600 {
		t.Fatalf("r1 has %d; want 100 + 200 + 300, each once", f.available("r1"))
	}
	f.check()
}
