package files

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// inboxDir makes and returns the inbox folder of program telco.
func (f *fixture) inboxDir() string {
	f.t.Helper()
	dir := filepath.Join(f.opt.DataDir, "inbox", "telco")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		f.t.Fatal(err)
	}
	return dir
}

// manyLines is a file of n credits of 1 point to member, with transaction
// ids prefix-0, prefix-1...
func manyLines(member, prefix string, n int) string {
	var b strings.Builder
	b.WriteString("member,points,reason,txn_id\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%s,1,bono,%s-%d\n", member, prefix, i)
	}
	return b.String()
}

// waitPosted waits for a batch to be posted, and fails when it is not.
func (f *fixture) waitPosted(id string) BatchView {
	f.t.Helper()
	v := f.wait(id, core.BatchPosted, core.BatchFailed)
	if v.Status != core.BatchPosted {
		f.t.Fatalf("batch %s is %s (%s), want posted", id, v.Status, v.Error)
	}
	return v
}

// batchOfSize returns the one batch whose stored file has size bytes.
func (f *fixture) batchOfSize(size int) string {
	f.t.Helper()
	var id string
	err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text FROM bulk_batches
		WHERE size_bytes = $1`, size).Scan(&id)
	if err != nil {
		f.t.Fatalf("batch of %d bytes: %v", size, err)
	}
	return id
}

// TestFix19InboxFileReplacedWhileTaken drops a file in the inbox and, while
// Puntos validates it, renames a corrected file over the same name, as the
// contract advises for complete drops. The file read is the file moved to
// done/, and the corrected file is taken by the next poll as its own batch:
// both are posted.
func TestFix19InboxFileReplacedWhileTaken(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2")
	dir := f.inboxDir()
	first := manyLines("m1", "big", 20000)
	name := filepath.Join(dir, "carga.csv")
	if err := os.WriteFile(name, []byte(first), 0o640); err != nil {
		t.Fatal(err)
	}
	corrected := "member,points,reason,txn_id\nm2,500,correccion,fix-1\n"

	replaced := make(chan error, 1)
	go func() {
		// Once the first file is a batch, Puntos is validating it.
		deadline := time.Now().Add(20 * time.Second)
		for f.count(`SELECT count(*) FROM bulk_batches`) == 0 {
			if time.Now().After(deadline) {
				replaced <- errors.New("no batch made")
				return
			}
			time.Sleep(time.Millisecond)
		}
		tmp := name + ".part"
		if err := os.WriteFile(tmp, []byte(corrected), 0o640); err != nil {
			replaced <- err
			return
		}
		replaced <- os.Rename(tmp, name)
	}()
	f.svc.takeInboxFile(f.ctx, "telco", dir, "carga.csv")
	if err := <-replaced; err != nil {
		t.Fatal(err)
	}
	done, _ := os.ReadFile(filepath.Join(dir, "done", "carga.csv"))
	if string(done) != first {
		t.Errorf("done/carga.csv holds %d bytes starting %q, want the file that was read "+
			"(%d bytes)", len(done), truncate19(string(done), 60), len(first))
	}
	if got, _ := os.ReadFile(name); string(got) != corrected {
		t.Fatalf("the inbox holds %q under carga.csv, want the corrected file", got)
	}
	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen)
	f.svc.pollInbox(f.ctx, seen)

	f.waitPosted(f.batchOfSize(len(first)))
	fix := f.waitPosted(f.batchOfSize(len(corrected)))
	if fix.Posted != 1 || fix.FileName != "carga.csv" {
		t.Errorf("corrected batch %+v", fix.Batch)
	}
	if f.available("m1") != 20000 || f.available("m2") != 500 {
		t.Errorf("m1 has %d points (want 20000), m2 %d (want 500)", f.available("m1"),
			f.available("m2"))
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("carga.csv is still in the inbox after it was taken: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "done"))
	if len(entries) != 2 {
		t.Errorf("done/ holds %d files, want the two taken", len(entries))
	}
	if left, _ := os.ReadDir(filepath.Join(dir, workingDir)); len(left) != 0 {
		t.Errorf("working/ still holds %d files", len(left))
	}
	f.check()
}

// TestFix19InboxFileSurvivesACrash stops the process at each point of
// taking an inbox file: after the file was moved to working/, after its
// batch was stored, after it was validated. When Puntos starts again, each
// file is loaded once and posted, and moved to done/.
func TestFix19InboxFileSurvivesACrash(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2", "m3")
	dir := f.inboxDir()
	work := filepath.Join(dir, workingDir)
	if err := os.MkdirAll(work, 0o750); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"moved.csv":     "member,points,reason,txn_id\nm1,10,bono,c-1\n",
		"stored.csv":    "member,points,reason,txn_id\nm2,20,bono,c-2\n",
		"validated.csv": "member,points,reason,txn_id\nm3,30,bono,c-3\n",
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(work, n), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// Stopped after the batch was stored, and after it was validated.
	receive := func(name string) *core.Batch {
		file, err := os.Open(filepath.Join(work, name))
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		b, _, err := f.svc.receive(f.ctx, Intake{Program: "telco", FileName: name,
			Format: Format{Charset: UTF8}, UploadedBy: "inbox", Channel: "inbox"}, file)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	receive("stored.csv")
	if _, err := f.svc.Validate(f.ctx, receive("validated.csv")); err != nil {
		t.Fatal(err)
	}

	f.restart()
	if err := f.svc.Resume(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.svc.pollInbox(f.ctx, map[string]fileState{})
	for n, content := range files {
		f.waitPosted(f.batchOfSize(len(content)))
		if _, err := os.Stat(filepath.Join(dir, "done", n)); err != nil {
			t.Errorf("%s is not in done/: %v", n, err)
		}
	}
	f.svc.Wait()
	if n := f.count(`SELECT count(*) FROM bulk_batches`); n != 3 {
		t.Errorf("%d batches, want 3", n)
	}
	if f.available("m1") != 10 || f.available("m2") != 20 || f.available("m3") != 30 {
		t.Errorf("balances %d %d %d, want 10 20 30", f.available("m1"), f.available("m2"),
			f.available("m3"))
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("working/ still holds %d files", len(left))
	}
	f.check()
}

// TestFix19ValidationCutShortIsRetried cuts the database connection of a
// validation while it stores the lines. The process keeps running and
// nobody does anything: the validation is tried again and the batch ends
// validated with each line once, and then posts.
func TestFix19ValidationCutShortIsRetried(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	f.svc.validateBackoff = 50 * time.Millisecond
	const n = 60000
	v := f.upload(manyLines("m1", "cut", n), "", nil)
	killed := int64(0)
	for deadline := time.Now().Add(20 * time.Second); killed == 0 &&
		time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		killed = f.count(`SELECT count(*) FROM (SELECT pg_terminate_backend(pid)
			FROM pg_stat_activity WHERE datname = current_database()
				AND pid <> pg_backend_pid() AND query ILIKE 'COPY%bulk_lines%') k`)
	}
	if killed == 0 {
		t.Skip("validation ended before its connection could be cut")
	}
	got := f.wait(v.ID, core.BatchValidated, core.BatchFailed)
	if got.Status != core.BatchValidated || got.Valid != n || got.Lines != n ||
		got.Error != "" {
		t.Fatalf("after the cut the batch is %s with %d of %d lines valid (%q), want "+
			"validated with all", got.Status, got.Valid, got.Lines, got.Error)
	}
	if stored := f.count(`SELECT count(*) FROM bulk_lines WHERE batch_id = $1`,
		v.ID); stored != n {
		t.Errorf("%d lines stored, want %d", stored, n)
	}
	if code, body := f.post(v.ID, "ops"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	f.waitPosted(v.ID)
	if f.available("m1") != n {
		t.Errorf("m1 has %d points, want %d", f.available("m1"), n)
	}
	f.check()
}

// stall stores content as a batch whose validation cannot read its stored
// file (a storage failure that outlasts the retries): the batch is then
// given back as received, with the reason. The stored file is put back
// before it returns.
func (f *fixture) stall(content string) *core.Batch {
	f.t.Helper()
	f.svc.validateAttempts, f.svc.validateBackoff = 2, 10*time.Millisecond
	b, created, err := f.svc.Receive(f.ctx, Intake{Program: "telco",
		Format: Format{Charset: UTF8}, UploadedBy: "ana", Channel: "rest"},
		strings.NewReader(content))
	if err != nil || !created {
		f.t.Fatalf("receive: %v %v", created, err)
	}
	aside := b.Path + ".aside"
	if err := os.Rename(b.Path, aside); err != nil {
		f.t.Fatal(err)
	}
	f.svc.StartValidation(b)
	f.svc.Wait()
	if err := os.Rename(aside, b.Path); err != nil {
		f.t.Fatal(err)
	}
	got, err := f.ledger.Batch(f.ctx, "telco", b.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	if got.Status != core.BatchReceived || !strings.Contains(got.Error,
		"validation was cut short 2 times (the stored file could not be read") ||
		!strings.Contains(got.Error, "send the file again, or ask to post the batch") {
		f.t.Fatalf("a validation that failed every time left the batch %s with error %q",
			got.Status, got.Error)
	}
	return got
}

// TestFix19GivenUpValidationRestartsOnUpload: a validation that failed on
// every attempt leaves the batch received with the reason; sending the same
// file again validates it, without a restart.
func TestFix19GivenUpValidationRestartsOnUpload(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,txn_id\nm1,40,bono,g-1\nm1,2,bono,g-2\n"
	b := f.stall(content)
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches",
		strings.NewReader(content), nil)
	v := f.view(body)
	if code != http.StatusOK || !v.Duplicate || v.ID != b.ID {
		t.Fatalf("upload again answered %d %s", code, body)
	}
	v = f.wait(b.ID, core.BatchValidated, core.BatchFailed)
	if v.Status != core.BatchValidated || v.Valid != 2 || v.Error != "" {
		t.Fatalf("after the upload the batch is %s, %d valid (%q)", v.Status, v.Valid, v.Error)
	}
	if code, body := f.post(b.ID, "ops"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	f.waitPosted(b.ID)
	if f.available("m1") != 42 {
		t.Errorf("m1 has %d points, want 42", f.available("m1"))
	}
	f.check()
}

// TestFix19GivenUpValidationRestartsOnPost: asking to post a batch whose
// validation was given up validates it and then posts it.
func TestFix19GivenUpValidationRestartsOnPost(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	b := f.stall("member,points,reason,txn_id\nm1,40,bono,p-1\nm1,x,bono,p-2\n")
	code, body := f.post(b.ID, "ops")
	if code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	v := f.waitPosted(b.ID)
	if v.Posted != 1 || v.Invalid != 1 || v.PostedBy != "ops" || f.available("m1") != 40 {
		t.Errorf("batch %+v, m1 has %d points (want 40)", v.Batch, f.available("m1"))
	}
	f.check()
}

// TestFix19ValidationIsNotRunTwiceAtOnce: while another process validates
// a batch (it holds the batch's validation lock), this process neither
// resumes it, nor validates it again when the file is sent again, and a
// post says that another process validates it. Once that process is gone,
// a post validates and posts the batch.
func TestFix19ValidationIsNotRunTwiceAtOnce(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,txn_id\nm1,40,bono,t-1\n"
	b, _, err := f.svc.Receive(f.ctx, Intake{Program: "telco", Format: Format{Charset: UTF8},
		UploadedBy: "ana", Channel: "rest"}, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.ledger.LockValidation(f.ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			other.Release()
		}
	}()
	if err := f.svc.Resume(f.ctx); err != nil {
		t.Fatal(err)
	}
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches",
		strings.NewReader(content), nil)
	if code != http.StatusOK {
		t.Fatalf("upload again answered %d %s", code, body)
	}
	f.svc.Wait()
	got, _ := f.ledger.Batch(f.ctx, "telco", b.ID)
	if got.Status != core.BatchReceived || got.Lines != 0 {
		t.Errorf("while another process held it, this one made the batch %s with %d lines",
			got.Status, got.Lines)
	}
	code, body = f.post(b.ID, "ops")
	if code != http.StatusConflict || !strings.Contains(string(body), "another process") {
		t.Errorf("post while another process validates answered %d %s", code, body)
	}
	other.Release()
	released = true
	if code, body := f.post(b.ID, "ops"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	f.waitPosted(b.ID)
	if f.available("m1") != 40 {
		t.Errorf("m1 has %d points, want 40", f.available("m1"))
	}
	f.check()
}

// TestFix19HugeLineIsRefusedByLine loads a file whose third line carries a
// 48 MiB field. The line is refused as invalid, by its number, without the
// process holding it whole and without storing its text; the lines around
// it are loaded.
func TestFix19HugeLineIsRefusedByLine(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	const size = 48 << 20
	var b strings.Builder
	b.Grow(size + 200)
	b.WriteString("member,points,reason,txn_id\nm1,10,ok,h-1\nm1,5,")
	b.WriteString(strings.Repeat("x", size))
	b.WriteString(",h-2\nm1,7,ok,h-3\n")
	stored, created, err := f.svc.Receive(f.ctx, Intake{Program: "telco",
		Format: Format{Charset: UTF8}, UploadedBy: "ana", Channel: "rest"},
		strings.NewReader(b.String()))
	if err != nil || !created {
		t.Fatal(created, err)
	}
	b = strings.Builder{}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	out, err := f.svc.Validate(f.ctx, stored)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if grew := int64(peak) - int64(base); grew > size/4 {
		t.Errorf("validating a file with a %d MiB line grew the heap by %d MiB", size>>20,
			grew>>20)
	}
	if out.Valid != 2 || out.Invalid != 1 {
		t.Errorf("validated %d valid, %d invalid; want 2 and 1", out.Valid, out.Invalid)
	}
	lines, err := f.ledger.BatchLines(f.ctx, out.ID, 0, 10, true)
	if err != nil || len(lines) != 1 || lines[0].Line != 3 || lines[0].ErrorField != "line" ||
		!strings.Contains(lines[0].Error, "is longer than 64 KiB") {
		t.Fatalf("invalid lines %+v %v, want line 3 longer than 64 KiB", lines, err)
	}
	if n := f.count(`SELECT coalesce(max(octet_length(reason) + octet_length(member) +
		octet_length(txn_id) + octet_length(error)), 0) FROM bulk_lines
		WHERE batch_id = $1`, out.ID); n > 2048 {
		t.Errorf("a line was stored with %d bytes of text", n)
	}
	if code, body := f.post(out.ID, "ops"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	f.waitPosted(out.ID)
	if f.available("m1") != 17 {
		t.Errorf("m1 has %d points, want 17 (lines 2 and 4)", f.available("m1"))
	}
	f.check()
}

// TestFix19RunawayQuoteStopsTheFile: a quote that is never closed makes
// the rest of a large file one field. The line where it opens is refused,
// saying that the rest of the file was not read; the lines before it are
// loaded.
func TestFix19RunawayQuoteStopsTheFile(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	var b strings.Builder
	b.WriteString("member,points,reason,txn_id\nm1,10,ok,q-1\nm1,5,\"oops,q-2\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&b, "m1,1,bono,q-x%d\n", i)
	}
	v := f.wait(f.upload(b.String(), "", nil).ID, core.BatchValidated)
	if v.Valid != 1 || v.Invalid != 1 {
		t.Errorf("validated %d valid, %d invalid; want 1 and 1", v.Valid, v.Invalid)
	}
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 10, true)
	if err != nil || len(lines) != 1 || lines[0].Line != 3 || lines[0].ErrorField != "line" ||
		!strings.Contains(lines[0].Error, "the lines after it, from line 4 on, were not loaded") {
		t.Fatalf("invalid lines %+v %v", lines, err)
	}
}

// TestFix19LongLinesWithinTheBound: a run of blank lines longer than the
// bound is no record, so the lines after it load; a 60 KiB reason is read
// whole and refused by its field, and only its beginning is kept.
func TestFix19LongLinesWithinTheBound(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member;points;reason;txn_id\r\nm1;10;\"ok; fine\";l-1\r\n" +
		strings.Repeat("\r\n", 50000) + "m1;7;\"two\r\nlines\";l-2\r\n" +
		"m1;3;" + strings.Repeat("é", 30<<10) + ";l-3\r\nm1;1;ok;l-4\r\n"
	v := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	if v.Valid != 3 || v.Invalid != 1 {
		t.Errorf("validated %d valid, %d invalid; want 3 and 1", v.Valid, v.Invalid)
	}
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 10, false)
	if err != nil || len(lines) != 4 {
		t.Fatalf("lines %d %v", len(lines), err)
	}
	if x := lines[1]; x.Line != 50003 || x.Reason != "two\nlines" || x.Status != core.LineValid {
		t.Errorf("line after the blank lines: %+v", x)
	}
	x := lines[2]
	if x.Line != 50005 || x.ErrorField != "reason" || !strings.HasPrefix(x.Reason, "éé") ||
		len(x.Reason) > maxKept || !strings.HasSuffix(x.Reason, "…") {
		t.Errorf("long reason line %d %s %q (%d bytes kept)", x.Line, x.ErrorField,
			truncate19(x.Reason, 20), len(x.Reason))
	}
}

// TestFix19DeclaredCharsetIsANewBatch follows the hint of a Latin-1 file
// sent without its charset: the same bytes sent again with charset=latin-1
// are a new batch read as Latin-1. The line the first batch posted is a
// replay in the second, not a second credit; the same upload again is a
// duplicate of the second batch.
func TestFix19DeclaredCharsetIsANewBatch(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,txn_id\nm1,40,Regularizaci\xf3n,c-1\nm1,5,bono,c-2\n"
	first := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	if first.Valid != 1 || first.Invalid != 1 {
		t.Fatalf("first upload %d valid %d invalid", first.Valid, first.Invalid)
	}
	f.post(first.ID, "ops")
	f.waitPosted(first.ID)

	second := f.upload(content, "?charset=latin-1", nil)
	if second.ID == first.ID || second.Charset != Latin1 || second.Duplicate {
		t.Fatalf("upload with charset=latin-1 gave batch %s read as %q (first %s)",
			second.ID, second.Charset, first.ID)
	}
	second = f.wait(second.ID, core.BatchValidated)
	if second.Valid != 2 {
		t.Fatalf("the Latin-1 batch has %d valid lines, want 2", second.Valid)
	}
	f.post(second.ID, "ops")
	second = f.waitPosted(second.ID)
	if second.Posted != 2 || second.Replayed != 1 {
		t.Errorf("second batch posted %d lines, %d replayed; want 2 and 1", second.Posted,
			second.Replayed)
	}
	if f.available("m1") != 45 {
		t.Errorf("m1 has %d points, want 45 (each line once)", f.available("m1"))
	}
	for _, hdr := range []map[string]string{nil,
		{"Content-Type": "text/csv; charset=ISO-8859-1"}} {
		q := "?charset=latin-1"
		if hdr != nil {
			q = ""
		}
		code, body := f.do(http.MethodPost, "/v1/programs/telco/batches"+q,
			strings.NewReader(content), hdr)
		if v := f.view(body); code != http.StatusOK || !v.Duplicate || v.ID != second.ID {
			t.Errorf("the Latin-1 upload again (%v) answered %d, batch %s", hdr, code, v.ID)
		}
	}
	f.check()
}

// TestFix19OtherCharsetDoesNotCreditTwice: a file posted as Latin-1 and
// sent again as Windows-1252, where one byte reads as another character:
// read as Latin-1, byte 0x80 is a control character, which a reason may
// not hold, so that line is invalid (its message points at the charset);
// read as Windows-1252 it is the euro sign, and the line posts then, while
// the line that reads the same both ways is a replay. Nothing is credited
// twice.
func TestFix19OtherCharsetDoesNotCreditTwice(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,txn_id\nm1,40,Promo \x80 uno,w-1\nm1,5,Campa\xf1a,w-2\n"
	first := f.wait(f.upload(content, "?charset=latin-1", nil).ID, core.BatchValidated)
	if first.Valid != 1 {
		t.Fatalf("latin-1 batch with %d valid lines, want 1", first.Valid)
	}
	bad, _ := f.ledger.BatchLines(f.ctx, first.ID, 0, 10, true)
	if len(bad) != 1 || bad[0].Line != 2 || !strings.Contains(bad[0].Error, "windows-1252") {
		t.Errorf("invalid lines %+v, want line 2 (the first after the header) pointing at "+
			"windows-1252", bad)
	}
	f.post(first.ID, "ops")
	f.waitPosted(first.ID)
	second := f.wait(f.upload(content, "?charset=windows-1252", nil).ID, core.BatchValidated)
	if second.ID == first.ID || second.Valid != 2 {
		t.Fatalf("windows-1252 batch %s with %d valid lines", second.ID, second.Valid)
	}
	f.post(second.ID, "ops")
	second = f.waitPosted(second.ID)
	if second.Posted != 2 || second.Replayed != 1 || second.Rejected != 0 {
		t.Errorf("second batch posted %d (%d replayed), rejected %d; want 2 (1), 0",
			second.Posted, second.Replayed, second.Rejected)
	}
	if f.available("m1") != 45 {
		t.Errorf("m1 has %d points, want 45", f.available("m1"))
	}
	f.check()
}

// TestFix19DeclaredDateFormatIsANewBatch: a file of DD/MM/YYYY dates sent
// without its pattern is refused line by line; sent again with the pattern
// it is a new batch read with it; sent so again, a duplicate.
func TestFix19DeclaredDateFormatIsANewBatch(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,effective_date,txn_id\nm1,40,bono,01/03/2026,d-1\n"
	first := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	if first.Valid != 0 {
		t.Fatalf("first upload has %d valid lines, want 0", first.Valid)
	}
	second := f.upload(content, "?date_format=DD/MM/YYYY", nil)
	if second.ID == first.ID || second.DateFormat != "DD/MM/YYYY" {
		t.Fatalf("upload with date_format gave batch %s with pattern %q", second.ID,
			second.DateFormat)
	}
	second = f.wait(second.ID, core.BatchValidated)
	if second.Valid != 1 {
		t.Fatalf("the batch with the pattern has %d valid lines", second.Valid)
	}
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches?date_format=DD/MM/YYYY",
		strings.NewReader(content), nil)
	if v := f.view(body); code != http.StatusOK || v.ID != second.ID {
		t.Errorf("the upload with the pattern again answered %d, batch %s", code, v.ID)
	}
	f.post(second.ID, "ops")
	f.waitPosted(second.ID)
	if f.available("m1") != 40 {
		t.Errorf("m1 has %d points, want 40", f.available("m1"))
	}
	f.check()
}

// TestFix19ByteOrderMarkWinsOverCharset: a file that starts with a UTF-8
// byte-order mark is read as UTF-8 whatever is declared, so declaring a
// charset does not make it another batch.
func TestFix19ByteOrderMarkWinsOverCharset(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "\xEF\xBB\xBFmember,points,reason,txn_id\nm1,40,Campaña,b-1\n"
	first := f.upload(content, "", nil)
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches?charset=latin-1",
		strings.NewReader(content), nil)
	v := f.view(body)
	if code != http.StatusOK || v.ID != first.ID || v.Charset != UTF8 {
		t.Errorf("the same file declared latin-1 answered %d, batch %s read as %q (first %s)",
			code, v.ID, v.Charset, first.ID)
	}
	f.wait(first.ID, core.BatchValidated)
}

func truncate19(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
