package files

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

// cutShort gives its text, then the error a request body gives when the
// sender stops before the length it announced.
type cutShort struct{ r io.Reader }

func (c *cutShort) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// An upload cut short is refused as the caller's (it answered 500 "retry
// with the same Idempotency-Key", which uploads have not), and a form with
// two files is refused rather than loading the first and dropping the
// second. Neither makes a batch.
func TestUploadCutShortOrWithTwoFilesRefused(t *testing.T) {
	f := newFixture(t, Options{}, "u1")
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches",
		&cutShort{strings.NewReader("member,points,reason,txn_id\nu1,150")},
		map[string]string{"Content-Type": "text/csv"})
	if code != http.StatusBadRequest || !bytes.Contains(body, []byte(`"field":"file"`)) ||
		!bytes.Contains(body, []byte("ended before the whole file arrived")) {
		t.Fatalf("an upload cut short: %d %s", code, body)
	}

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i, content := range []string{"member,points,reason,txn_id\nu1,5,bono,mp-1\n",
		"member,points,reason,txn_id\nu1,7,bono,mp-2\n"} {
		part, _ := mw.CreateFormFile("file", []string{"a.csv", "b.csv"}[i])
		_, _ = part.Write([]byte(content))
	}
	_ = mw.Close()
	code, body = f.do(http.MethodPost, "/v1/programs/telco/batches", &buf,
		map[string]string{"Content-Type": mw.FormDataContentType()})
	if code != http.StatusBadRequest || !bytes.Contains(body, []byte("more than one part")) {
		t.Fatalf("a form with two files: %d %s", code, body)
	}
	if n := f.count(`SELECT count(*) FROM bulk_batches`); n != 0 {
		t.Fatalf("%d batches made; want none", n)
	}
}
