package rest

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// lotsReader knows one member, "m1" of program "telco", and counts which of
// the two balance reads the gateway made.
type lotsReader struct {
	contractReader
	mu            sync.Mutex
	full, summary int
}

var lotsAt = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

func lotsView(lots bool) *postgres.BalanceView {
	exp := lotsAt.AddDate(1, 0, 0)
	v := &postgres.BalanceView{Member: "m1", Program: "telco", Status: "active",
		Balance:      core.Balance{Available: 7, Pending: 2, Held: 1},
		NextExpiries: []postgres.ExpiryBucket{{ExpiresAt: exp, Points: 6}}, AsOf: lotsAt}
	if lots {
		v.Lots = []core.Lot{{ID: 1, EarnedAt: lotsAt, SpendableFrom: lotsAt, ExpiresAt: &exp,
			Original: 7, Remaining: 7, Held: 1}}
	}
	return v
}

func (r *lotsReader) read(program, ref string, lots bool) (*postgres.BalanceView, error) {
	r.mu.Lock()
	if lots {
		r.full++
	} else {
		r.summary++
	}
	r.mu.Unlock()
	if program != "telco" {
		return nil, core.Errorf(core.NotFound, "member", "no member %q in program %q", ref,
			program)
	}
	if ref != "m1" {
		return nil, core.Errorf(core.NotFound, "member", "no member %q", ref)
	}
	return lotsView(lots), nil
}

func (r *lotsReader) Balance(_ context.Context, program, ref string) (*postgres.BalanceView,
	error) {
	return r.read(program, ref, true)
}

func (r *lotsReader) BalanceSummary(_ context.Context, program,
	ref string) (*postgres.BalanceView, error) {
	return r.read(program, ref, false)
}

func getLots(t *testing.T, rd *lotsReader, path string) *httptest.ResponseRecorder {
	t.Helper()
	router, _ := newContractServer(&contractBus{}, rd, time.Second)
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Authorization", "Bearer "+contractKey)
	w := httptest.NewRecorder()
	router.ServeHTTP(w, req)
	return w
}

// The plain read and lots=false answer the summary, lots=true the full
// view, each as encoding/json writes it; any other value of lots, in any
// case or spelling of a boolean, is a 400 naming lots that reads nothing.
// Other query parameters change nothing.
func TestBalanceLotsParameter(t *testing.T) {
	const base = "/v1/programs/telco/members/m1/balance"
	for _, c := range []struct {
		query string
		lots  bool
	}{
		{"", false}, {"?lots=false", false}, {"?lots=true", true},
		{"?cursor=x&limit=2", false}, {"?lots=true&x=1", true}, {"?Lots=true", false},
		{"?lots=%74rue", true},
	} {
		rd := &lotsReader{}
		w := getLots(t, rd, base+c.query)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: status %d %s", c.query, w.Code, w.Body)
		}
		if (rd.full == 1) != c.lots || rd.full+rd.summary != 1 {
			t.Fatalf("%s: %d full reads and %d summaries, want lots %v", c.query, rd.full,
				rd.summary, c.lots)
		}
		want, _ := json.Marshal(lotsView(c.lots))
		if got := w.Body.String(); got != string(want)+"\n" {
			t.Fatalf("%s: body\n%s\nwant\n%s", c.query, got, want)
		}
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if _, has := body["lots"]; has != c.lots {
			t.Fatalf("%s: lots in the body %v, want %v: %s", c.query, has, c.lots, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", c.query, ct)
		}
	}
	for _, q := range []string{"TRUE", "True", "FALSE", "1", "0", "yes", "no", "t", "f", "on",
		"%20true", "true%20", "true,false", "null", "%22true%22", "tru"} {
		rd := &lotsReader{}
		w := getLots(t, rd, base+"?lots="+q)
		var p Problem
		_ = json.Unmarshal(w.Body.Bytes(), &p)
		if w.Code != http.StatusBadRequest || p.Field != "lots" || p.Kind != string(core.Invalid) {
			t.Fatalf("lots=%s: status %d %s, want 400 naming lots", q, w.Code, w.Body)
		}
		if rd.full+rd.summary != 0 {
			t.Fatalf("lots=%s: refused, yet read the balance", q)
		}
	}
}

// Unknown members and programs are 404s naming the member, with the lots
// or without.
func TestBalanceLotsUnknownMember(t *testing.T) {
	for _, path := range []string{"/v1/programs/telco/members/nobody/balance",
		"/v1/programs/nowhere/members/m1/balance"} {
		for _, q := range []string{"", "?lots=true", "?lots=false"} {
			w := getLots(t, &lotsReader{}, path+q)
			var p Problem
			_ = json.Unmarshal(w.Body.Bytes(), &p)
			if w.Code != http.StatusNotFound || p.Field != "member" {
				t.Fatalf("%s%s: status %d %s, want 404 naming member", path, q, w.Code, w.Body)
			}
		}
	}
}

// A value that is neither true nor false is refused, says the document of
// the lots parameter: an empty one too, and two values that contradict
// each other (which one the gateway would take is not said anywhere).
func TestBalanceLotsAmbiguousValuesRefused(t *testing.T) {
	for _, q := range []string{"?lots=", "?lots", "?lots=true&lots=false",
		"?lots=false&lots=true"} {
		rd := &lotsReader{}
		w := getLots(t, rd, "/v1/programs/telco/members/m1/balance"+q)
		var p Problem
		_ = json.Unmarshal(w.Body.Bytes(), &p)
		if w.Code != http.StatusBadRequest || p.Field != "lots" {
			t.Errorf("%s: status %d (%d full reads, %d summaries), want 400 naming lots", q,
				w.Code, rd.full, rd.summary)
		}
	}
}

// opResponses are the status codes the document lists for the operation
// with the given operationId.
func opResponses(t *testing.T, operationID string) []string {
	t.Helper()
	f, err := os.Open(contractFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	codeRE := regexp.MustCompile(`^        '([0-9]{3})':\s*$`)
	var codes []string
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "operationId: "+operationID {
			in, found = true, true
			continue
		}
		if in && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "     ") {
			break // the next operation or path
		}
		if m := codeRE.FindStringSubmatch(line); in && m != nil {
			codes = append(codes, m[1])
		}
	}
	if !found {
		t.Fatalf("no operation %s in %s", operationID, contractFile)
	}
	return codes
}

// Every status the balance read answers with is in the document: the 400
// for a bad lots value too.
func TestBalanceLotsContractListsItsAnswers(t *testing.T) {
	codes := opResponses(t, "getBalance")
	if len(codes) == 0 {
		t.Fatal("getBalance lists no responses")
	}
	rd := &lotsReader{}
	router, _ := newContractServer(&contractBus{}, rd, time.Second)
	for _, c := range []struct {
		path, key string
	}{
		{"/v1/programs/telco/members/m1/balance", contractKey},
		{"/v1/programs/telco/members/m1/balance?lots=true", contractKey},
		{"/v1/programs/telco/members/m1/balance?lots=yes", contractKey},
		{"/v1/programs/telco/members/nobody/balance", contractKey},
		{"/v1/programs/telco/members/m1/balance", ""},
	} {
		req := httptest.NewRequest(http.MethodGet, c.path, nil)
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		if !slices.Contains(codes, strconv.Itoa(w.Code)) {
			t.Errorf("GET %s answers %d, not listed in getBalance's responses %v", c.path,
				w.Code, codes)
		}
	}
}
