package files

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// A file dropped in the inbox by a legacy system that names files in
// Latin-1 (bonificaci\xf3n.csv) stayed in working/ for ever, the database
// refusing its name at every poll, with no note in failed/; an upload
// whose name was not UTF-8 answered 500. The name is kept as text the
// database holds, the bytes that are not UTF-8 read as U+FFFD, and the
// file is loaded.
func TestFileNamesNotUTF8AreLoaded(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	telco := filepath.Join(f.opt.DataDir, "inbox", "telco")
	if err := os.MkdirAll(telco, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(telco, "bonificaci\xf3n.csv"),
		[]byte("member,points,reason,txn_id\nm1,75,bono,i-1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen) // notes the file
	f.svc.pollInbox(f.ctx, seen) // takes it
	var id string
	if err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text FROM bulk_batches
		WHERE file_name = $1`, "bonificaci\uFFFDn.csv").Scan(&id); err != nil {
		t.Fatalf("the inbox file's batch: %v", err)
	}
	if v := f.wait(id, core.BatchPosted); v.Posted != 1 || f.available("m1") != 75 {
		t.Fatalf("inbox batch %+v, m1 has %d", v.Batch, f.available("m1"))
	}
	if _, err := os.Stat(filepath.Join(telco, "done", "bonificaci\xf3n.csv")); err != nil {
		t.Errorf("the file is not in done/: %v", err)
	}

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", "form-data; name=\"file\"; filename=\"a\xffb.csv\"")
	part, _ := mw.CreatePart(h)
	_, _ = part.Write([]byte("member,points,reason,txn_id\nm1,5,bono,u-1\n"))
	_ = mw.Close()
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches", &buf,
		map[string]string{"Content-Type": mw.FormDataContentType(), "X-Actor": "bea"})
	if code != http.StatusAccepted {
		t.Fatalf("upload of a file named in Latin-1 answered %d %s", code, body)
	}
	if v := f.view(body); v.FileName != "a\uFFFDb.csv" {
		t.Fatalf("the upload's file name: %q", v.FileName)
	}
}
