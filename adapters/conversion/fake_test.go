package conversion

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// step is how the fake partner treats one delivery of a transaction.
type step int

const (
	confirm step = iota // credit (once per transaction) and confirm
	refuse              // refuse with a code (a transaction already credited stays confirmed)
	fail                // a 5xx, or a file left unprocessed: nothing credited
	slow                // credit, answer too late (after the client gave up; next file round)
	reset               // credit, then drop the connection (file: answer next round)
	twice               // credit and confirm, and give the answer twice
)

// fakeAnswer is the fake partner's stored answer to a transaction.
type fakeAnswer struct {
	status, reference, code string
}

// fake is the other program's side: it credits each transaction at most
// once and remembers its answer, whatever happens to the network.
type fake struct {
	mu         sync.Mutex
	script     map[string][]step // by their member id
	deliveries map[string]int    // by transaction id
	answers    map[string]fakeAnswer
	credited   map[string]int64 // their member id → units credited
	// onDeliver, when set, runs at each delivery before anything else.
	onDeliver func(txn string)
}

func newFake() *fake {
	return &fake{script: map[string][]step{}, deliveries: map[string]int{},
		answers: map[string]fakeAnswer{}, credited: map[string]int64{}}
}

func (f *fake) setScript(member string, steps ...step) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[member] = steps
}

// deliver handles one delivery and returns the step taken and the answer.
func (f *fake) deliver(txn, member string, amount int64) (step, fakeAnswer) {
	f.mu.Lock()
	hook := f.onDeliver
	f.mu.Unlock()
	if hook != nil {
		hook(txn)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.deliveries[txn]
	f.deliveries[txn]++
	st := confirm
	if s := f.script[member]; len(s) > 0 {
		st = s[min(n, len(s)-1)]
	}
	switch st {
	case fail:
		return st, fakeAnswer{}
	case refuse:
		if _, ok := f.answers[txn]; !ok {
			f.answers[txn] = fakeAnswer{status: "refused", code: "account_closed"}
		}
	default:
		if _, ok := f.answers[txn]; !ok {
			f.answers[txn] = fakeAnswer{status: "confirmed", reference: "SKY-" + txn[len(txn)-8:]}
			f.credited[member] += amount
		}
	}
	return st, f.answers[txn]
}

func (f *fake) status(txn string) (fakeAnswer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.answers[txn]
	return a, ok
}

// creditedTo is the total the fake credited to their member id.
func (f *fake) creditedTo(member string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.credited[member]
}

// front is how a flavour's fake partner is driven by the suite.
type front interface {
	// round lets a file partner process the files it received; the HTTP
	// partner answers as requests come and does nothing here.
	round(t *testing.T)
}

// httpFront serves the fake over the HTTP flavour of the protocol.
type httpFront struct {
	f      *fake
	srv    *httptest.Server
	secret string
	late   time.Duration // how late a slow answer comes
}

const fakeSecret = "fake-partner-secret"

func newHTTPFront(t *testing.T, f *fake, late time.Duration) *httpFront {
	h := &httpFront{f: f, secret: fakeSecret, late: late}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/credits", h.credit)
	mux.HandleFunc("GET /v1/credits/{txn}", h.status)
	h.srv = httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(h.srv.Close)
	return h
}

func (h *httpFront) round(*testing.T) {}

func (h *httpFront) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+h.secret {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"status":"error","message":"bad credentials"}`))
		return false
	}
	return true
}

func (h *httpFront) credit(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	var in creditBody
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.TxnID == "" ||
		r.Header.Get("Idempotency-Key") != in.TxnID {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"status":"error","message":"not a credit request"}`))
		return
	}
	st, a := h.f.deliver(in.TxnID, in.MemberID, in.Amount)
	switch st {
	case fail:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"error","message":"try later"}`))
		return
	case slow:
		select {
		case <-time.After(h.late):
		case <-r.Context().Done():
		}
	case reset:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	h.answer(w, in.TxnID, a)
}

func (h *httpFront) answer(w http.ResponseWriter, txn string, a fakeAnswer) {
	code := http.StatusOK
	if a.status == "refused" {
		code = http.StatusUnprocessableEntity
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(answerBody{TxnID: txn, Status: a.status,
		Reference: a.reference, Code: a.code})
}

func (h *httpFront) status(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	txn := r.PathValue("txn")
	a, ok := h.f.status(txn)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"status":"unknown"}`))
		return
	}
	h.answer(w, txn, a)
}

// fileFront is the fake behind the file flavour: at each round it reads
// the conversion files, and writes answer files for what it processed.
type fileFront struct {
	f        *fake
	dir      string
	rounds   int
	answered map[string]bool
	late     [][]string // answers held back to the next round
}

func newFileFront(f *fake, dir string) *fileFront {
	return &fileFront{f: f, dir: dir, answered: map[string]bool{}}
}

func (ff *fileFront) round(t *testing.T) {
	t.Helper()
	ff.rounds++
	var out [][]string
	out, ff.late = append(out, ff.late...), nil
	names, err := filepath.Glob(filepath.Join(ff.dir, "out", "*.csv"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	twiceToo := false
	for _, name := range names {
		rows, err := readCSV(name)
		if err != nil {
			t.Fatalf("partner reads %s: %v", name, err)
		}
		if len(rows) == 0 || !slices.Equal(rows[0], outHeader) {
			t.Fatalf("%s: header %v, want %v", name, rows[0], outHeader)
		}
		for _, r := range rows[1:] {
			txn := r[0]
			if ff.answered[txn] {
				continue
			}
			amount, err := strconv.ParseInt(r[3], 10, 64)
			if err != nil {
				t.Fatalf("%s: amount %q", name, r[3])
			}
			st, a := ff.f.deliver(txn, r[2], amount)
			line := []string{txn, a.status, a.reference, a.code}
			switch st {
			case fail:
				continue
			case slow, reset:
				ff.late = append(ff.late, line)
			case twice:
				twiceToo = true
				out = append(out, line)
			default:
				out = append(out, line)
			}
			ff.answered[txn] = true
		}
	}
	if len(out) == 0 {
		return
	}
	write := func(suffix string) {
		name := filepath.Join(ff.dir, "in", fmt.Sprintf("answers-%03d%s.csv", ff.rounds, suffix))
		if err := writeCSV(name, append([][]string{answerHeader}, out...)); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	if twiceToo {
		write("-again")
	}
}

// outLines counts the lines of the conversion files that name txn.
func (ff *fileFront) outLines(t *testing.T, txn string) int {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(ff.dir, "out", "*.csv"))
	n := 0
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), txn+",")
	}
	return n
}
