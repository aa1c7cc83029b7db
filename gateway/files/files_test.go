package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// fixture is a fresh ledger with program "telco", some members, and the
// files service serving its routes under /v1.
type fixture struct {
	t      *testing.T
	ctx    context.Context
	ledger *postgres.Ledger
	svc    *Service
	router *mux.Router
	opt    Options
}

func newFixture(t *testing.T, opt Options, members ...string) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	log := slog.New(slog.DiscardHandler)
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, ledger: postgres.New(pool, log)}
	f.apply(core.KindProgramUpsert, "", "prog", `{"name":"Telco","time_zone":"America/Santiago"}`)
	for _, m := range members {
		f.apply(core.KindEnroll, m, "enroll-"+m, `{}`)
	}
	if opt.DataDir == "" {
		opt.DataDir = t.TempDir()
	}
	f.opt = opt
	f.restart()
	return f
}

// restart replaces the service by a new one on the same ledger and data
// directory, as a process restart would.
func (f *fixture) restart() {
	bg, cancel := context.WithCancel(context.Background())
	svc := New(bg, f.ledger, slog.New(slog.DiscardHandler), f.opt)
	// The caller's source: X-Test-Source stands for another API key.
	svc.SetEdge(func(r *http.Request) string {
		if src := r.Header.Get("X-Test-Source"); src != "" {
			return src
		}
		return "backoffice"
	}, nil)
	f.t.Cleanup(func() { cancel(); svc.Wait() })
	f.svc = svc
	f.router = mux.NewRouter()
	svc.Register(f.router.PathPrefix("/v1").Subrouter())
}

func (f *fixture) apply(kind, member, txn, payload string) {
	f.t.Helper()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "setup",
		TxnID: txn, Program: "telco", Member: member, Payload: json.RawMessage(payload)}
	cmd.Seal()
	out, err := f.ledger.ApplyBatch(f.ctx, []bus.Command{cmd})
	if err != nil || out[0].Result.Status != bus.StatusOK {
		f.t.Fatalf("%s %s: %v %+v", kind, member, err, out)
	}
}

// do sends a request to the routes and returns the status and body.
func (f *fixture) do(method, path string, body io.Reader, hdr map[string]string) (int, []byte) {
	f.t.Helper()
	req := httptest.NewRequest(method, path, body)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, req)
	return w.Code, w.Body.Bytes()
}

func (f *fixture) view(body []byte) BatchView {
	f.t.Helper()
	var v BatchView
	if err := json.Unmarshal(body, &v); err != nil || v.Batch == nil {
		f.t.Fatalf("batch body %s: %v", body, err)
	}
	return v
}

// upload sends content as the raw body and returns the batch.
func (f *fixture) upload(content, query string, hdr map[string]string) BatchView {
	f.t.Helper()
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches"+query,
		strings.NewReader(content), hdr)
	if code != http.StatusAccepted {
		f.t.Fatalf("upload answered %d %s", code, body)
	}
	return f.view(body)
}

// wait polls the batch until its status is one of want.
func (f *fixture) wait(id string, want ...string) BatchView {
	f.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		code, body := f.do(http.MethodGet, "/v1/programs/telco/batches/"+id, nil, nil)
		if code != http.StatusOK {
			f.t.Fatalf("get batch answered %d %s", code, body)
		}
		v := f.view(body)
		for _, w := range want {
			if v.Status == w {
				return v
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("batch %s is %s (%s), want %v", id, v.Status, v.Error, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) post(id, actor string) (int, []byte) {
	return f.do(http.MethodPost, "/v1/programs/telco/batches/"+id+"/post", nil,
		map[string]string{"X-Actor": actor})
}

func (f *fixture) available(ref string) core.Points {
	f.t.Helper()
	m, err := f.ledger.Member(f.ctx, "telco", ref)
	if err != nil {
		f.t.Fatal(err)
	}
	return m.Balance.Available
}

func (f *fixture) result(id string) string {
	f.t.Helper()
	code, body := f.do(http.MethodGet, "/v1/programs/telco/batches/"+id+"/result", nil, nil)
	if code != http.StatusOK {
		f.t.Fatalf("result answered %d %s", code, body)
	}
	return string(body)
}

// check fails the test when the ledger's invariants do not hold.
func (f *fixture) check() {
	f.t.Helper()
	v, err := f.ledger.Check(f.ctx)
	if err != nil || len(v) > 0 {
		f.t.Fatalf("ledger check: %v %+v", err, v)
	}
}

func (f *fixture) count(sql string, args ...any) int64 {
	f.t.Helper()
	var n int64
	if err := f.ledger.Pool().QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestRealExportQuirks loads what spreadsheets and legacy systems write: a
// byte-order mark, CRLF, semicolons, a quoted field holding the separator
// and a line break, accents in UTF-8, and a Latin-1 file sent as a
// multipart form that declares its charset.
func TestRealExportQuirks(t *testing.T) {
	f := newFixture(t, Options{ChunkSize: 2}, "56911", "56922", "56933")

	content := "\xEF\xBB\xBFMember;Points;Reason;Effective_Date;Expires_At;Txn_ID\r\n" +
		"56911;1500;\"Bonificación; aniversario\";2026-03-01;2027-12-31;r-1\r\n" +
		"56922;+250;\"Two\r\nlines\";;;r-2\r\n" +
		"56911;-200;Corrección;2026-03-02T10:00:00-03:00;;r-3\r\n"
	v := f.upload(content, "", map[string]string{"Content-Type": "text/csv"})
	if v.Status != core.BatchReceived || v.Checksum == "" || v.Channel != "rest" ||
		v.UploadedBy != "backoffice" {
		t.Fatalf("upload gave %+v", v.Batch)
	}
	v = f.wait(v.ID, core.BatchValidated, core.BatchFailed)
	if v.Lines != 3 || v.Valid != 3 || v.Invalid != 0 || v.Credit != 1750 || v.Debit != 200 {
		t.Fatalf("validated %+v", v.Batch)
	}
	if code, body := f.post(v.ID, "ana"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	v = f.wait(v.ID, core.BatchPosted)
	if v.Posted != 3 || v.Rejected != 0 || v.Progress.LinesDone != 3 || v.PostedBy != "ana" {
		t.Fatalf("posted %+v", v.Batch)
	}
	if got := f.available("56911"); got != 1300 {
		t.Errorf("56911 has %d, want 1500 - 200 = 1300", got)
	}
	if got := f.available("56922"); got != 250 {
		t.Errorf("56922 has %d, want 250", got)
	}
	bal, err := f.ledger.Balance(f.ctx, "telco", "56911")
	if err != nil {
		t.Fatal(err)
	}
	// Usable through the whole 31 December 2027 in Santiago (UTC-3 in summer).
	wantExp := time.Date(2028, 1, 1, 3, 0, 0, 0, time.UTC)
	if len(bal.Lots) != 1 || bal.Lots[0].Remaining != 1300 || bal.Lots[0].ExpiresAt == nil ||
		!bal.Lots[0].ExpiresAt.Equal(wantExp) ||
		!bal.Lots[0].EarnedAt.Equal(time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("lots %+v, want one of 1300 earned 2026-03-01 expiring %s", bal.Lots, wantExp)
	}
	st, err := f.ledger.Statement(f.ctx, "telco", "56911", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Postings) != 2 || st.Postings[1].Reason != "Bonificación; aniversario" ||
		st.Postings[0].Reason != "Corrección" || st.Postings[0].Kind != core.PostAdjustment ||
		st.Postings[0].Actor != "batch:"+v.ID || st.Postings[0].Source != "file:telco" ||
		st.Postings[0].TxnID != "r-3" {
		t.Errorf("postings %+v", st.Postings)
	}
	st, _ = f.ledger.Statement(f.ctx, "telco", "56922", "", 10)
	if len(st.Postings) != 1 || st.Postings[0].Reason != "Two\r\nlines" &&
		st.Postings[0].Reason != "Two\nlines" {
		t.Errorf("56922 postings %+v", st.Postings)
	}

	// Latin-1, comma, LF, in a multipart form whose part declares it.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="bonos-marzo.csv"`)
	h.Set("Content-Type", "text/csv; charset=iso-8859-1")
	part, _ := mw.CreatePart(h)
	_, _ = part.Write([]byte("member,points,reason,txn_id\n56933,40,Regularizaci\xf3n " +
		"Mu\xf1oz,l-1\n"))
	_ = mw.Close()
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches", &buf,
		map[string]string{"Content-Type": mw.FormDataContentType(), "X-Actor": "bea"})
	if code != http.StatusAccepted {
		t.Fatalf("multipart upload answered %d %s", code, body)
	}
	l1 := f.view(body)
	if l1.Charset != Latin1 || l1.FileName != "bonos-marzo.csv" || l1.UploadedBy != "bea" {
		t.Fatalf("multipart batch %+v", l1.Batch)
	}
	f.wait(l1.ID, core.BatchValidated)
	f.post(l1.ID, "bea")
	f.wait(l1.ID, core.BatchPosted)
	st, _ = f.ledger.Statement(f.ctx, "telco", "56933", "", 10)
	if f.available("56933") != 40 || len(st.Postings) != 1 ||
		st.Postings[0].Reason != "Regularización Muñoz" {
		t.Errorf("56933: %d points, postings %+v", f.available("56933"), st.Postings)
	}
	f.check()
}

// TestValidationErrorsByLineAndField checks every line and posts nothing.
func TestValidationErrorsByLineAndField(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2")
	content := strings.Join([]string{
		"member,points,reason,effective_date,expires_at,txn_id",
		"m1,100,ok,,,t1",
		"m1,abc,bad points,,,t2",
		"m1,0,zero,,,t3",
		"ghost,5,unknown member,,,t4",
		"m2,5,,,,t5",
		"m2,5,bad date,2026-13-01,,t6",
		"m2,5,repeat,,,t1",
		"m2,-5,debit with expiry,,2030-01-01,t7",
		"m2,5,short,t8",
		"m2,1000000000001,too many,,,t9",
		"m2,5,two-digit year,26-03-01,,t10",
		`m2,5,say "hi",,,t11`,
		"m2,7,fine,,,t12",
		"m2,5,future,2099-01-01,,t13",
		"m2,5,no txn,,,",
		"m2,5,before 1970,1969-12-31,,t14",
		"",
	}, "\n")
	v := f.upload(content, "", nil)
	v = f.wait(v.ID, core.BatchValidated)
	if v.Lines != 16 || v.Valid != 2 || v.Invalid != 14 || v.Credit != 107 || v.Debit != 0 {
		lines, _ := f.ledger.BatchLines(f.ctx, v.ID, 0, 100, false)
		t.Fatalf("summary %+v\n%+v", v.Batch, lines)
	}
	code, body := f.do(http.MethodGet, "/v1/programs/telco/batches/"+v.ID+"/errors?limit=10",
		nil, nil)
	var page ErrorPage
	if code != http.StatusOK || json.Unmarshal(body, &page) != nil {
		t.Fatalf("errors answered %d %s", code, body)
	}
	code, body = f.do(http.MethodGet, "/v1/programs/telco/batches/"+v.ID+"/errors?cursor="+
		page.Next, nil, nil)
	var rest ErrorPage
	if code != http.StatusOK || json.Unmarshal(body, &rest) != nil || rest.Next != "" {
		t.Fatalf("second page answered %d %s", code, body)
	}
	got := map[int64]string{}
	for _, x := range append(page.Errors, rest.Errors...) {
		got[x.Line] = x.ErrorKind + " " + x.ErrorField + ": " + x.Error
	}
	want := map[int64]string{
		3:  `invalid points: must be a whole number such as 1500 or -200, got "abc"`,
		4:  "invalid points: must not be zero",
		5:  "not_found member: no member ghost in this program",
		6:  "invalid reason: is required",
		7:  "invalid effective_date: " + isoError("2026-13-01").Error(),
		8:  "invalid txn_id: repeats the transaction id of line 2",
		9:  "invalid expires_at: applies to credits only; this line takes points away",
		10: "invalid line: has 4 fields, the header has 6",
		11: "invalid points: must be at most 1000000000000 either way",
		12: "invalid effective_date: " + isoError("26-03-01").Error(),
		13: `invalid line: bare " in non-quoted-field`,
		15: "invalid effective_date: is in the future",
		16: "invalid txn_id: is required: the line's own transaction id",
		17: "invalid effective_date: is before 1970-01-01T00:00:00Z, the earliest date " +
			"Puntos records",
	}
	if len(page.Errors) != 10 || len(got) != len(want) {
		t.Errorf("%d errors on the first page, %d in all, want 10 and %d", len(page.Errors),
			len(got), len(want))
	}
	for line, w := range want {
		if got[line] != w {
			t.Errorf("line %d: %q, want %q", line, got[line], w)
		}
	}
	if f.count(`SELECT count(*) FROM postings WHERE source = 'file:telco'`) != 0 ||
		f.count(`SELECT count(*) FROM commands WHERE source = 'file:telco'`) != 0 {
		t.Error("validation posted something")
	}
	// A declared two-digit year without its hundred years is refused.
	code, body = f.do(http.MethodPost, "/v1/programs/telco/batches?date_format=DD/MM/YY",
		strings.NewReader(content), nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), `"field":"date_format"`) {
		t.Errorf("date_format DD/MM/YY answered %d %s", code, body)
	}
}

// An unclosed quote takes the rest of the file into one field; the error
// says which lines went with it, so that none seems to vanish.
func TestUnclosedQuoteNamesTheLinesItTook(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2")
	content := "member,points,reason,txn_id\n" +
		"m1,10,ok,q1\n" +
		"m2,\"5,r,q2\n" +
		"m1,7,fine,q3\n" +
		"m2,8,fine,q4\n"
	v := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Valid != 1 || len(lines) != 1 || lines[0].Line != 3 ||
		!strings.Contains(lines[0].Error, "lines 4 to 5 were read as part of it") {
		t.Fatalf("summary %+v, errors %+v: want line 3 naming lines 4 to 5", v.Batch, lines)
	}
}

// TestUnstorableBytesMakeLinesInvalid: a line with bad UTF-8 or a NUL is
// reported by line and field, its text kept as far as PostgreSQL can keep
// it, and the rest of the file is validated and posted as usual.
func TestUnstorableBytesMakeLinesInvalid(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2")
	content := "member,points,reason,txn_id\n" +
		"m1,10,ok,u1\n" +
		"m1,14,r\xff,u2\n" +
		"m2,5,nul\x00here,u3\n" +
		"m2\xff,5,bad member,u4\n" +
		"m2,7,fine,u5\n"
	v := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	if v.Lines != 5 || v.Valid != 2 || v.Invalid != 3 || v.Credit != 17 {
		t.Fatalf("summary %+v", v.Batch)
	}
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, x := range lines {
		got[x.Line] = x.ErrorField + ": " + x.Error
	}
	for line, want := range map[int64]string{
		3: "reason: is not valid UTF-8",
		4: "reason: holds a NUL character",
		5: "member: is not valid UTF-8",
	} {
		if !strings.HasPrefix(got[line], want) {
			t.Errorf("line %d: %q, want %q...", line, got[line], want)
		}
	}
	if code, body := f.post(v.ID, "ops"); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("post answered %d %s", code, body)
	}
	f.wait(v.ID, core.BatchPosted)
	if m1, m2 := f.available("m1"), f.available("m2"); m1 != 10 || m2 != 7 {
		t.Errorf("balances m1 %d m2 %d, want 10 and 7", m1, m2)
	}
	f.check()
}

// TestDeclaredDatePattern reads dates in a declared pattern, two-digit
// years included when the pattern says their hundred years.
func TestDeclaredDatePattern(t *testing.T) {
	loc, _ := time.LoadLocation("America/Santiago")
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		pattern, in string
		end         bool
		want        string // RFC 3339 in UTC, or the error's start
	}{
		{"", "2026-03-01", false, "2026-03-01T03:00:00Z"},
		{"", "2026-07-01", false, "2026-07-01T04:00:00Z"},
		{"", "2026-07-01", true, "2026-07-02T04:00:00Z"},
		{"", "2026-03-01T10:00:00-03:00", false, "2026-03-01T13:00:00Z"},
		{"", "2026-03-01 10:00:00", false, "2026-03-01T13:00:00Z"},
		{"", "01/03/2026", false, "must be an ISO 8601 date"},
		{"", "26-03-01", false, "must be an ISO 8601 date"},
		{"DD/MM/YYYY", "1/3/2026", false, "2026-03-01T03:00:00Z"},
		{"DD/MM/YYYY", "31/12/2027", true, "2028-01-01T03:00:00Z"},
		{"DD/MM/YYYY", "31/02/2027", false, "is not a calendar date"},
		{"DD/MM/YYYY", "2027-02-01", false, "must follow the date_format DD/MM/YYYY"},
		{"DD-MM-YY(1970)", "01-03-69", false, "2069-03-01T03:00:00Z"},
		{"DD-MM-YY(1970)", "01-03-70", false, "1970-03-01T03:00:00Z"},
		{"MM.DD.YY(2000)", "03.01.26", false, "2026-03-01T03:00:00Z"},
		// Santiago skips 6 September 2026's midnight: the day begins at
		// 01:00 -03, and the 5th ends there. The pattern used to refuse
		// 06/09/2026 as no calendar date, and ISO dates fell an hour early.
		{"DD/MM/YYYY", "06/09/2026", false, "2026-09-06T04:00:00Z"},
		{"DD/MM/YYYY", "05/09/2026", true, "2026-09-06T04:00:00Z"},
		{"", "2026-09-06", false, "2026-09-06T04:00:00Z"},
		{"", "2026-09-05", true, "2026-09-06T04:00:00Z"},
	}
	for _, c := range cases {
		fm, err := ParseFormat("", c.pattern)
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		rd := &reader{dates: fm.dates, loc: loc, now: now}
		got, err := rd.parseDate(c.in, c.end)
		s := ""
		if err != nil {
			s = err.Error()
		} else {
			s = got.Format(time.RFC3339)
		}
		if !strings.HasPrefix(s, c.want) {
			t.Errorf("%q in %q (end %v): %s, want %s", c.in, c.pattern, c.end, s, c.want)
		}
	}
	for _, bad := range []string{"DD/MM/YY", "YYYY-MM", "DD/MM/YY(19)", "dd/mm/yyyy"} {
		if _, err := ParseFormat("", bad); core.KindOf(err) != core.Invalid {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// TestSameFileTwiceIsOneBatch delivers the same bytes twice.
func TestSameFileTwiceIsOneBatch(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	content := "member,points,reason,txn_id\nm1,10,bonus,x-1\n"
	first := f.upload(content, "", nil)
	code, body := f.do(http.MethodPost, "/v1/programs/telco/batches", strings.NewReader(content),
		nil)
	second := f.view(body)
	if code != http.StatusOK || !second.Duplicate || second.ID != first.ID ||
		second.Checksum != first.Checksum {
		t.Fatalf("second delivery answered %d %+v", code, second.Batch)
	}
	if n := f.count(`SELECT count(*) FROM bulk_batches`); n != 1 {
		t.Errorf("%d batches, want 1", n)
	}
	stored, _ := os.ReadDir(filepath.Join(f.opt.DataDir, "batches"))
	if len(stored) != 1 || stored[0].Name() != first.ID+".csv" {
		t.Errorf("stored files %v, want %s.csv only", stored, first.ID)
	}
	f.wait(first.ID, core.BatchValidated)
	f.post(first.ID, "ana")
	f.wait(first.ID, core.BatchPosted)
	// Posting again changes nothing.
	if code, _ := f.post(first.ID, "ana"); code != http.StatusOK {
		t.Errorf("posting a posted batch answered %d", code)
	}
	if got := f.available("m1"); got != 10 {
		t.Errorf("m1 has %d, want 10", got)
	}
}

// crashFile has 20 lines over four members: credits and debits.
func crashFile() (string, map[string]core.Points) {
	var b strings.Builder
	b.WriteString("member,points,reason,txn_id\n")
	want := map[string]core.Points{}
	for i := 1; i <= 20; i++ {
		m := fmt.Sprintf("c%d", i%4)
		p := core.Points(100 * i)
		if i%5 == 0 {
			p = -30
		}
		fmt.Fprintf(&b, "%s,%d,load %d,k-%d\n", m, p, i, i)
		want[m] += p
	}
	return b.String(), want
}

// TestBulkCrashMidPostResumes stops posting three ways: between two chunks,
// inside a chunk's transaction (one part committed, the other rolled back
// just before its commit), and with lines applied by someone else meanwhile.
// A new service then resumes the batch: every line is posted exactly once.
func TestBulkCrashMidPostResumes(t *testing.T) {
	// Chunks of six lines, each split over two ledger transactions by member.
	f := newFixture(t, Options{ChunkSize: 3, Workers: 2}, "c0", "c1", "c2", "c3")
	content, want := crashFile()
	v := f.upload(content, "", nil)
	v = f.wait(v.ID, core.BatchValidated)

	// A stop after the second chunk committed, before the progress mark moved.
	ctx, cancel := context.WithCancel(context.Background())
	f.svc.afterChunk = func(_ context.Context, done int64) {
		if done >= 7 {
			cancel()
		}
	}
	if _, err := f.svc.Post(ctx, v.Batch, "ana"); err == nil {
		t.Fatal("post went on after the crash")
	}
	b, _ := f.ledger.Batch(f.ctx, "telco", v.ID)
	if b.Status != core.BatchPosting || b.PostedThrough != 7 || b.Posted != 12 {
		t.Fatalf("after the crash: %+v, want posting through line 7 with 12 posted", b)
	}
	if n := f.count(`SELECT count(*) FROM postings WHERE source = 'file:telco'`); n != 12 {
		t.Fatalf("%d postings after the crash, want 12 (two chunks committed)", n)
	}

	// Lines 14 (c1) and 15 (c2), of the next chunk, reach the ledger by another
	// way, as a copy of the same requests would.
	next, err := f.ledger.PendingLines(f.ctx, v.ID, 13, 2)
	if err != nil || len(next) != 2 || next[0].Line != 14 {
		t.Fatalf("pending lines after 13: %v %+v", err, next)
	}
	var cmds []bus.Command
	for i := range next {
		c, err := command(b, &next[i])
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	if _, err := f.ledger.ApplyBatch(f.ctx, cmds); err != nil {
		t.Fatal(err)
	}

	// A process that dies inside the third chunk (lines 14-19): the part
	// holding member c1 never commits, the other part does.
	f.restart()
	cut := bus.Partition("telco", "c1", 2)
	f.svc.beforeCommit = func(_ context.Context, lines []core.BatchLine) error {
		if bus.Partition("telco", lines[0].Member, 2) == cut {
			return errors.New("power cut")
		}
		return nil
	}
	if _, err := f.svc.Post(f.ctx, v.Batch, "ana"); err == nil ||
		!strings.Contains(err.Error(), "power cut") {
		t.Fatalf("post with a failing commit: %v", err)
	}
	var lost int64
	for line := 14; line <= 19; line++ {
		if bus.Partition("telco", fmt.Sprintf("c%d", (line-1)%4), 2) == cut {
			lost++
		}
	}
	b, _ = f.ledger.Batch(f.ctx, "telco", v.ID)
	if b.Status != core.BatchPosting || b.PostedThrough != 7 || b.Posted != 12+6-lost {
		t.Fatalf("after the failed commit: %+v, want %d posted, mark at line 7", b,
			12+6-lost)
	}
	if n := f.count(`SELECT count(*) FROM bulk_lines WHERE batch_id = $1
		AND status = 'valid' AND line <= 19`, v.ID); n != lost || lost == 0 {
		t.Errorf("%d lines of the third chunk pending, want the %d of the lost part", n, lost)
	}

	// The restarted process resumes the batch by itself.
	f.restart()
	if err := f.svc.Resume(f.ctx); err != nil {
		t.Fatal(err)
	}
	v = f.wait(v.ID, core.BatchPosted)
	if v.Posted != 20 || v.Rejected != 0 || v.PostedThrough != 21 {
		t.Fatalf("after resuming: %+v", v.Batch)
	}
	if n := f.count(`SELECT count(*) FROM postings WHERE source = 'file:telco'`); n != 20 {
		t.Errorf("%d postings, want 20: each line once", n)
	}
	if n := f.count(`SELECT count(*) FROM outbox WHERE body->>'source' = 'file:telco'`); n != 20 {
		t.Errorf("%d ledger events, want 20: each line once", n)
	}
	if n := f.count(`SELECT count(*) FROM bulk_lines WHERE batch_id = $1 AND replayed`,
		v.ID); n != 2 {
		t.Errorf("%d lines answered as replays, want the 2 applied by another way", n)
	}
	if v.Replayed != 2 {
		t.Errorf("batch says %d replayed lines of its %d posted, want the 2 applied by "+
			"another way", v.Replayed, v.Posted)
	}
	// A batch posted before replayed_lines existed gets its count from its
	// lines when the migration that adds it runs.
	sql, err := os.ReadFile("../../core/postgres/migrations/0019_bulk_replayed_lines.sql")
	if err != nil {
		t.Fatal(err)
	}
	_, backfill, ok := strings.Cut(string(sql), ";\n")
	if _, err := f.ledger.Pool().Exec(f.ctx, `UPDATE bulk_batches SET replayed_lines = 0`); !ok ||
		err != nil {
		t.Fatalf("reset: %v (statements found: %v)", err, ok)
	}
	if _, err := f.ledger.Pool().Exec(f.ctx, backfill); err != nil {
		t.Fatalf("backfill: %v", err)
	}
	if n := f.count(`SELECT replayed_lines FROM bulk_batches WHERE id = $1`, v.ID); n != 2 {
		t.Errorf("after the migration's backfill the batch has %d replayed lines, want 2", n)
	}
	for m, p := range want {
		if got := f.available(m); got != p {
			t.Errorf("%s has %d, want %d", m, got, p)
		}
	}
	f.check()
}

// TestBulkLineInvalidAtPostingTime validates a file, then changes the ledger
// under it: a member closed, another suspended, a third spending its
// points. The lines that no longer hold are rejected by line number with
// the ledger's reason, the others are posted, and nothing is half-applied.
func TestBulkLineInvalidAtPostingTime(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2", "m3", "m4")
	f.apply(core.KindCredit, "m3", "seed-m3", `{"points":100,"reason":"seed"}`)
	content := "member,points,reason,txn_id\n" +
		"m1,100,bonus,v-1\n" + // line 2: m1 closed meanwhile
		"m2,60,bonus,v-2\n" + // line 3: m2 suspended meanwhile
		"m2,-10,fix,v-3\n" + // line 4: a suspended member's debit still applies
		"m3,-80,fix,v-4\n" + // line 5: m3 spent 50 meanwhile
		"m4,25,bonus,v-5\n" +
		"m1,-5,fix,v-6\n" + // line 7: m1 closed
		"m4,-20,fix,v-7\n"
	v := f.upload(content, "", nil)
	v = f.wait(v.ID, core.BatchValidated)
	if v.Valid != 7 {
		t.Fatalf("validated %+v", v.Batch)
	}
	f.apply(core.KindCredit, "m2", "seed-m2", `{"points":40,"reason":"seed"}`)
	f.apply(core.KindClose, "m1", "close-m1", `{}`)
	f.apply(core.KindSuspend, "m2", "susp-m2", `{}`)
	f.apply(core.KindRedeem, "m3", "spend-m3", `{"points":50}`)

	f.post(v.ID, "ana")
	v = f.wait(v.ID, core.BatchPosted)
	if v.Posted != 3 || v.Rejected != 4 {
		t.Fatalf("posted %+v", v.Batch)
	}
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, x := range lines {
		got[x.Line] = x.Status + " " + x.ErrorKind + " " + x.ErrorField + ": " + x.Error
	}
	wantErr := map[int64]string{
		2: `rejected conflict member: member "m1" is closed`,
		3: `rejected conflict member: member "m2" is suspended`,
		5: `rejected insufficient points: 80 points asked, 50 available`,
		7: `rejected conflict member: member "m1" is closed`,
	}
	if len(got) != len(wantErr) {
		t.Errorf("error lines %v, want %v", got, wantErr)
	}
	for line, w := range wantErr {
		if got[line] != w {
			t.Errorf("line %d: %q, want %q", line, got[line], w)
		}
	}
	for ref, want := range map[string]core.Points{"m1": 0, "m2": 30, "m3": 50, "m4": 5} {
		if got := f.available(ref); got != want {
			t.Errorf("%s has %d, want %d", ref, got, want)
		}
	}
	// The posted lines, and only they, are ledger events for the reports.
	var events, points int64
	err = f.ledger.Pool().QueryRow(f.ctx, `SELECT count(*), coalesce(sum((body->>'points')::bigint), 0)
		FROM outbox WHERE body->>'source' = 'file:telco'`).Scan(&events, &points)
	if err != nil || events != 3 || points != -10+25-20 {
		t.Errorf("bulk events: %d worth %d points (%v), want 3 worth -5", events, points, err)
	}
	f.check()
}

// TestApprovalAboveThreshold needs a second person for a large batch.
func TestApprovalAboveThreshold(t *testing.T) {
	f := newFixture(t, Options{ApprovalPoints: 1000}, "m1", "m2")
	small := f.upload("member,points,reason,txn_id\nm1,600,a,s-1\nm2,-400,b,s-2\n", "",
		map[string]string{"X-Actor": "ana"})
	small = f.wait(small.ID, core.BatchValidated)
	if small.NeedsApproval {
		t.Errorf("a batch moving 1000 points needs approval; the limit is above 1000")
	}
	big := f.upload("member,points,reason,txn_id\nm1,900,a,b-1\nm2,101,b,b-2\n", "",
		map[string]string{"X-Actor": "ana"})
	big = f.wait(big.ID, core.BatchValidated)
	if !big.NeedsApproval || big.Links["approve"] == "" {
		t.Fatalf("a batch moving 1001 points: %+v", big.Batch)
	}
	path := "/v1/programs/telco/batches/" + big.ID
	if code, body := f.post(big.ID, "ana"); code != http.StatusConflict {
		t.Errorf("post before approval answered %d %s", code, body)
	}
	if code, _ := f.do(http.MethodPost, path+"/approve", nil, nil); code != http.StatusBadRequest {
		t.Errorf("approval without X-Actor answered %d", code)
	}
	for _, uploader := range []string{"ana", "ANA", " Ana "} {
		code, _ := f.do(http.MethodPost, path+"/approve", nil,
			map[string]string{"X-Actor": uploader})
		if code != http.StatusForbidden {
			t.Errorf("approval by the uploader as %q answered %d", uploader, code)
		}
	}
	// Another name through the uploader's own key is no second person: the
	// key sets X-Actor as it likes ("аna" starts with a Cyrillic a).
	for _, other := range []string{"bea", "аna"} {
		code, body := f.do(http.MethodPost, path+"/approve", nil,
			map[string]string{"X-Actor": other})
		if code != http.StatusForbidden || !strings.Contains(string(body), "Authorization") {
			t.Errorf("approval as %q with the uploader's key answered %d %s", other, code,
				body)
		}
	}
	code, body := f.do(http.MethodPost, path+"/approve", nil, map[string]string{"X-Actor": "bea",
		"X-Test-Source": "crm"})
	if code != http.StatusOK || f.view(body).ApprovedBy != "bea" {
		t.Fatalf("approval by another answered %d %s", code, body)
	}
	if code, _ := f.do(http.MethodPost, path+"/approve", nil,
		map[string]string{"X-Actor": "carla"}); code != http.StatusConflict {
		t.Errorf("a second approval answered %d", code)
	}
	if code, body := f.post(big.ID, "ana"); code != http.StatusAccepted {
		t.Fatalf("post after approval answered %d %s", code, body)
	}
	f.wait(big.ID, core.BatchPosted)
	if f.available("m1") != 900 || f.available("m2") != 101 {
		t.Errorf("balances %d and %d, want 900 and 101", f.available("m1"), f.available("m2"))
	}
}

// TestResultFile checks the result file row by row: posted, rejected by
// the ledger, invalid, and cells a spreadsheet would run escaped.
func TestResultFile(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "=m2", "@m3")
	content := "member,points,reason,txn_id\n" +
		"m1,50,bonus,+r1\n" +
		"=m2,-10,take,r2\n" +
		"@m3,20,\"=HYPERLINK(\"\"x\"\")\",r3\n" +
		"m1,-20,take back,r4\n" +
		"m1,x,bad,r5\n"
	v := f.upload(content, "", nil)
	f.wait(v.ID, core.BatchValidated)
	f.post(v.ID, "ana")
	v = f.wait(v.ID, core.BatchPosted)
	if v.Posted != 3 || v.Rejected != 1 || v.Invalid != 1 || v.Progress.Errors != 2 {
		t.Fatalf("batch %+v", v.Batch)
	}
	want := "line,txn_id,member,points,status,error_kind,error_field,error,replayed\n" +
		"2,'+r1,m1,50,posted,,,,\n" +
		"3,r2,'=m2,-10,rejected,insufficient,points,\"10 points asked, 0 available\",\n" +
		"4,r3,'@m3,20,posted,,,,\n" +
		"5,r4,m1,-20,posted,,,,\n" +
		"6,r5,m1,,invalid,invalid,points,\"must be a whole number such as 1500 or -200, " +
		"got \"\"x\"\"\",\n"
	got := f.result(v.ID)
	if got != want {
		t.Errorf("result file:\n%s\nwant:\n%s", got, want)
	}
	if f.available("m1") != 30 || f.available("@m3") != 20 || f.available("=m2") != 0 {
		t.Errorf("balances %d %d %d", f.available("m1"), f.available("@m3"),
			f.available("=m2"))
	}
	f.check()
}

// TestInboxPickup drops files in the inbox: a Latin-1 one is posted, one
// without a usable header and one for an unknown program fail.
func TestInboxPickup(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	inbox := filepath.Join(f.opt.DataDir, "inbox")
	telco := filepath.Join(inbox, "telco")
	_ = os.MkdirAll(telco, 0o750)
	_ = os.MkdirAll(filepath.Join(inbox, "nope"), 0o750)
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(telco, "bonos.latin1.csv"),
		"member;points;reason;txn_id\r\nm1;75;Campa\xf1a oto\xf1o;i-1\r\n")
	write(filepath.Join(telco, "bad.csv"), "who,what\nm1,1\n")
	write(filepath.Join(telco, "half.csv.part"), "member,points")
	write(filepath.Join(inbox, "nope", "x.csv"), "member,points,reason,txn_id\nm1,1,a,b\n")

	seen := map[string]fileState{}
	f.svc.pollInbox(f.ctx, seen) // notes the files
	if n := f.count(`SELECT count(*) FROM bulk_batches`); n != 0 {
		t.Fatalf("%d batches after the first look; files are taken once they stay still", n)
	}
	f.svc.pollInbox(f.ctx, seen) // takes them
	for _, p := range []string{"telco/done/bonos.latin1.csv", "telco/failed/bad.csv",
		"telco/failed/bad.csv.error.txt", "telco/half.csv.part", "nope/failed/x.csv"} {
		if _, err := os.Stat(filepath.Join(inbox, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	note, _ := os.ReadFile(filepath.Join(telco, "failed", "bad.csv.error.txt"))
	if !strings.HasPrefix(string(note), `header: column 1 "who" is not a known column`) {
		t.Errorf("note %q", note)
	}
	var id, charset string
	err := f.ledger.Pool().QueryRow(f.ctx, `SELECT id::text, charset FROM bulk_batches
		WHERE file_name = 'bonos.latin1.csv'`).Scan(&id, &charset)
	if err != nil || charset != Latin1 {
		t.Fatalf("inbox batch: %v %q", err, charset)
	}
	v := f.wait(id, core.BatchPosted)
	if v.Channel != "inbox" || v.Posted != 1 || f.available("m1") != 75 {
		t.Errorf("inbox batch %+v, m1 has %d", v.Batch, f.available("m1"))
	}
	st, _ := f.ledger.Statement(f.ctx, "telco", "m1", "", 1)
	if st.Postings[0].Reason != "Campaña otoño" {
		t.Errorf("reason %q", st.Postings[0].Reason)
	}
}

// TestSafeCell escapes what a spreadsheet would run.
func TestSafeCell(t *testing.T) {
	for in, want := range map[string]string{"=1+1": "'=1+1", "+r": "'+r", "-x": "'-x",
		"@a": "'@a", "\tq": "'\tq", "-250": "-250", "12": "12", "ok=1": "ok=1", "": ""} {
		if got := safeCell(in); got != want {
			t.Errorf("safeCell(%q) = %q, want %q", in, got, want)
		}
	}
}
