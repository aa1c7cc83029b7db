package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

func TestParseSubscribers(t *testing.T) {
	tests := []struct {
		name string
		csv  string
		want []Subscriber
		bad  []string
	}{
		{
			name: "sample order",
			csv: "customerID,gender,tenure,MonthlyCharges,TotalCharges,Churn\n" +
				"7590-VHVEG,Female,1,29.85,29.85,No\n" +
				"5575-GNVDE,Male,34,56.95,1889.5,No\n",
			want: []Subscriber{
				{Line: 2, CustomerID: "7590-VHVEG", Tenure: 1, MonthlyCharges: "29.85",
					TotalCharges: "29.85"},
				{Line: 3, CustomerID: "5575-GNVDE", Tenure: 34, MonthlyCharges: "56.95",
					TotalCharges: "1889.5"},
			},
		},
		{
			name: "columns found by name in another order, any case, BOM",
			csv: "\ufeffTotalCharges,MONTHLYCHARGES,Churn,Tenure,customerid\n" +
				"108.15,53.85,Yes,2,3668-QPYBK\n",
			want: []Subscriber{{Line: 2, CustomerID: "3668-QPYBK", Tenure: 2,
				MonthlyCharges: "53.85", TotalCharges: "108.15"}},
		},
		{
			name: "blank TotalCharges is kept as written",
			csv: "customerID,tenure,MonthlyCharges,TotalCharges\n" +
				"4472-LVYGI,0,52.55, \n",
			want: []Subscriber{{Line: 2, CustomerID: "4472-LVYGI", Tenure: 0,
				MonthlyCharges: "52.55", TotalCharges: " "}},
		},
		{
			name: "invalid rows are reported by line and field, valid ones kept",
			csv: "customerID,tenure,MonthlyCharges,TotalCharges\n" +
				" ,3,20.00,60\n" +
				"A,-1,20,20\n" +
				"B,two,20,20\n" +
				"C,3,$20,60\n" +
				"D,3,20,sixty\n" +
				"E,3,20\n" +
				"F,2,19.7,39.4\n" +
				"F,2,19.7,39.4\n",
			want: []Subscriber{{Line: 8, CustomerID: "F", Tenure: 2, MonthlyCharges: "19.7",
				TotalCharges: "39.4"}},
			bad: []string{
				"line 2: customerID: is empty",
				`line 3: tenure: must be a whole number of months from 0 to 1200, got "-1"`,
				`line 4: tenure: must be a whole number of months from 0 to 1200, got "two"`,
				`line 5: MonthlyCharges: must be a decimal amount such as 29.85, got "$20"`,
				`line 6: TotalCharges: must be blank or a decimal amount, got "sixty"`,
				"line 7: row: wrong number of fields",
				`line 9: customerID: "F" repeats line 8`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, bad, err := ParseSubscribers(strings.NewReader(tt.csv))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("subscribers:\n got %+v\nwant %+v", got, tt.want)
			}
			var msgs []string
			for _, e := range bad {
				msgs = append(msgs, e.Error())
			}
			if !reflect.DeepEqual(msgs, tt.bad) {
				t.Errorf("row errors:\n got %q\nwant %q", msgs, tt.bad)
			}
		})
	}
}

func TestParseSubscribersHeader(t *testing.T) {
	tests := []struct {
		csv, want string
	}{
		{"customerID,tenure,MonthlyCharges\nA,1,2\n", "header: no column named TotalCharges"},
		{"id,months\n", "header: no column named customerID, tenure, MonthlyCharges, " +
			"TotalCharges"},
		{"", "read header: EOF"},
	}
	for _, tt := range tests {
		_, _, err := ParseSubscribers(strings.NewReader(tt.csv))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q: got error %v, want %q", tt.csv, err, tt.want)
		}
	}
}

func TestBills(t *testing.T) {
	loc, err := Location()
	if err != nil {
		t.Fatal(err)
	}
	type bill struct{ key, amount, at string }
	tests := []struct {
		name string
		sub  Subscriber
		asOf string
		want []bill
	}{
		{
			// Chile moves to summer time on the first Sunday of September,
			// so September's bill is still at UTC-4.
			name: "tenure 3 ends in the as-of month",
			sub:  Subscriber{CustomerID: "7590-VHVEG", Tenure: 3, MonthlyCharges: "29.85"},
			asOf: "2026-11-05",
			want: []bill{
				{"bill-7590-VHVEG-m01", "29.85", "2026-09-05T12:00:00-04:00"},
				{"bill-7590-VHVEG-m02", "29.85", "2026-10-05T12:00:00-03:00"},
				{"bill-7590-VHVEG-m03", "29.85", "2026-11-05T12:00:00-03:00"},
			},
		},
		{
			name: "the day of as-of does not matter, the month does; years wrap",
			sub:  Subscriber{CustomerID: "X", Tenure: 2, MonthlyCharges: "20"},
			asOf: "2026-01-31",
			want: []bill{
				{"bill-X-m01", "20", "2025-12-05T12:00:00-03:00"},
				{"bill-X-m02", "20", "2026-01-05T12:00:00-03:00"},
			},
		},
		{
			name: "tenure 0 bills what has been charged so far, blank or not",
			sub: Subscriber{CustomerID: "4472-LVYGI", Tenure: 0, MonthlyCharges: "52.55",
				TotalCharges: " "},
			asOf: "2026-11-05",
			want: []bill{{"bill-4472-LVYGI-m00", " ", "2026-11-05T12:00:00-03:00"}},
		},
		{
			name: "winter bills at UTC-4",
			sub:  Subscriber{CustomerID: "Y", Tenure: 1, MonthlyCharges: "70.70"},
			asOf: "2026-06-05T23:00:00-04:00",
			want: []bill{{"bill-Y-m01", "70.70", "2026-06-05T12:00:00-04:00"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asOf, err := ParseAsOf(tt.asOf)
			if err != nil {
				t.Fatal(err)
			}
			var got []bill
			for i, b := range Bills(tt.sub, asOf, loc) {
				if b.Month != i+min(tt.sub.Tenure, 1) {
					t.Errorf("bill %d: month %d", i, b.Month)
				}
				got = append(got, bill{b.Key, b.Amount, b.OccurredAt.Format(time.RFC3339)})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("bills:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestBillKeysDoNotDependOnDates(t *testing.T) {
	loc, err := Location()
	if err != nil {
		t.Fatal(err)
	}
	s := Subscriber{CustomerID: "K", Tenure: 12, MonthlyCharges: "10"}
	a := Bills(s, time.Date(2026, 11, 5, 0, 0, 0, 0, loc), loc)
	b := Bills(s, time.Date(2024, 2, 29, 0, 0, 0, 0, loc), loc)
	for i := range a {
		if a[i].Key != b[i].Key {
			t.Errorf("month %d: key %s vs %s", a[i].Month, a[i].Key, b[i].Key)
		}
	}
	if a[11].Key != "bill-K-m12" {
		t.Errorf("last key %s", a[11].Key)
	}
}

func TestParseAsOf(t *testing.T) {
	for in, want := range map[string]string{
		"2026-11-05":                "2026-11-05T00:00:00-03:00",
		" 2026-07-01 ":              "2026-07-01T00:00:00-04:00",
		"2026-11-05T10:00:00Z":      "2026-11-05T10:00:00Z",
		"2026-11-05T10:00:00+01:00": "2026-11-05T10:00:00+01:00",
	} {
		got, err := ParseAsOf(in)
		if err != nil || got.Format(time.RFC3339) != want {
			t.Errorf("ParseAsOf(%q) = %s, %v; want %s", in, got.Format(time.RFC3339), err, want)
		}
	}
	for _, in := range []string{"", "05/11/2026", "2026-13-01", "tomorrow"} {
		if _, err := ParseAsOf(in); err == nil {
			t.Errorf("ParseAsOf(%q): no error", in)
		}
	}
}

// TestEmbeddedSample pins the facts of the sample the demo and its
// provenance note rely on.
func TestEmbeddedSample(t *testing.T) {
	if len(telcoCSV) != 970457 {
		t.Errorf("embedded sample is %d bytes, want 970,457", len(telcoCSV))
	}
	subs, bad, err := ParseSubscribers(bytes.NewReader(telcoCSV))
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 7043 || len(bad) != 0 {
		t.Fatalf("%d subscribers, %d bad rows (%v); want 7043 and 0", len(subs), len(bad), bad)
	}
	var months, blank, blankZero int
	var points int64
	for _, s := range subs {
		months += s.Tenure
		if s.BlankTotal() {
			blank++
			if s.Tenure == 0 {
				blankZero++
			}
		}
		// One point per whole dollar, rounded down on each bill.
		whole, _ := new(big.Rat).SetString(s.MonthlyCharges)
		points += int64(s.Tenure) * new(big.Int).Quo(whole.Num(), whole.Denom()).Int64()
	}
	if months != 227990 || blank != 11 || blankZero != 11 || points != 15949098 {
		t.Errorf("months %d, blank totals %d (%d at tenure 0), points %d; "+
			"want 227990, 11 (11), 15949098", months, blank, blankZero, points)
	}
	if subs[0].CustomerID != "7590-VHVEG" || subs[len(subs)-1].Line != 7044 {
		t.Errorf("first %s, last line %d", subs[0].CustomerID, subs[len(subs)-1].Line)
	}
}

// fakeGateway answers the demo's requests the way the REST gateway does,
// in memory: idempotent writes with replays, a problem document for a blank
// amount, one 503 and one 202 to exercise retries and polls.
type fakeGateway struct {
	mu       sync.Mutex
	results  map[string]int64 // idempotency key -> points of the stored result
	balances map[string]int64
	attempts map[string]int
	requests []string
	flaky    string // key answered 503 on its first attempt
	slow     string // key answered 202 on its first attempt
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{results: map[string]int64{}, balances: map[string]int64{},
		attempts: map[string]int{}}
}

func (g *fakeGateway) handler() http.Handler {
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, r *http.Request, points func() (int64, string)) {
		g.mu.Lock()
		defer g.mu.Unlock()
		key := r.Header.Get("Idempotency-Key")
		g.requests = append(g.requests, r.Method+" "+r.URL.Path+" "+key)
		if r.Header.Get("Authorization") != "Bearer k" {
			writeProblem(w, http.StatusUnauthorized, "Authorization: the API key is not valid")
			return
		}
		g.attempts[key]++
		if pts, ok := g.results[key]; ok {
			w.Header().Set("Idempotent-Replayed", "true")
			ok201(w, pts)
			return
		}
		if key == g.flaky && g.attempts[key] == 1 {
			writeProblem(w, http.StatusServiceUnavailable, "the bus is unavailable")
			return
		}
		pts, refusal := points()
		if refusal != "" {
			writeProblem(w, http.StatusBadRequest, refusal)
			return
		}
		g.results[key] = pts
		g.balances[r.PathValue("member")] += pts
		if key == g.slow && g.attempts[key] == 1 {
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"status":"accepted","txn_id":%q}`, key)
			return
		}
		ok201(w, pts)
	}
	mux.HandleFunc("PUT /v1/programs/{program}", func(w http.ResponseWriter, r *http.Request) {
		write(w, r, func() (int64, string) { return 0, "" })
	})
	mux.HandleFunc("PUT /v1/programs/{program}/tiers", func(w http.ResponseWriter,
		r *http.Request) {
		write(w, r, func() (int64, string) { return 0, "" })
	})
	mux.HandleFunc("POST /v1/programs/{program}/rules", func(w http.ResponseWriter,
		r *http.Request) {
		write(w, r, func() (int64, string) { return 0, "" })
	})
	mux.HandleFunc("POST /v1/programs/{program}/members",
		func(w http.ResponseWriter, r *http.Request) {
			write(w, r, func() (int64, string) { return 0, "" })
		})
	mux.HandleFunc("POST /v1/programs/{program}/events/batches",
		func(w http.ResponseWriter, r *http.Request) {
			var in struct{ Events []batchEvent }
			_ = json.NewDecoder(r.Body).Decode(&in)
			g.mu.Lock()
			defer g.mu.Unlock()
			if r.Header.Get("Authorization") != "Bearer k" {
				writeProblem(w, http.StatusUnauthorized, "Authorization: the API key is not valid")
				return
			}
			// Every event is checked before any is applied, as the gateway does.
			points := make([]int64, len(in.Events))
			for i, ev := range in.Events {
				amount := strings.TrimSpace(ev.Amount)
				if amount == "" {
					writeProblem(w, http.StatusBadRequest, "amount: is required")
					return
				}
				if _, err := time.Parse(time.RFC3339, ev.OccurredAt); err != nil {
					writeProblem(w, http.StatusBadRequest, "occurred_at: bad")
					return
				}
				whole, _, _ := strings.Cut(amount, ".")
				fmt.Sscan(whole, &points[i])
			}
			type item struct {
				TxnID  string         `json:"txn_id"`
				Status int            `json:"status"`
				Result map[string]any `json:"result,omitempty"`
				Error  map[string]any `json:"error,omitempty"`
			}
			var items []item
			status := http.StatusOK
			for i, ev := range in.Events {
				key := ev.TxnID
				g.requests = append(g.requests, r.Method+" "+r.URL.Path+" "+key)
				g.attempts[key]++
				it := item{TxnID: key, Status: http.StatusCreated}
				if pts, ok := g.results[key]; ok {
					it.Result = map[string]any{"status": "ok", "replayed": true,
						"data": map[string]any{"points": pts}}
					items = append(items, it)
					continue
				}
				if key == g.flaky && g.attempts[key] == 1 {
					it.Status, status = http.StatusServiceUnavailable, http.StatusAccepted
					it.Error = map[string]any{"detail": "the bus is unavailable"}
					items = append(items, it)
					continue
				}
				g.results[key] = points[i]
				g.balances[ev.Member] += points[i]
				if key == g.slow && g.attempts[key] == 1 {
					it.Status, status = http.StatusAccepted, http.StatusAccepted
				} else {
					it.Result = map[string]any{"status": "ok",
						"data": map[string]any{"points": points[i]}}
				}
				items = append(items, it)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]any{"items": items})
		})
	mux.HandleFunc("GET /v1/commands/{txn}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		pts, ok := g.results[r.PathValue("txn")]
		if !ok {
			fmt.Fprintf(w, `{"status":"pending"}`)
			return
		}
		fmt.Fprintf(w, `{"status":"ok","data":{"points":%d}}`, pts)
	})
	mux.HandleFunc("GET /v1/programs/{program}/members/{member}/balance",
		func(w http.ResponseWriter, r *http.Request) {
			g.mu.Lock()
			defer g.mu.Unlock()
			fmt.Fprintf(w, `{"balance":{"available":%d,"pending":0,"held":0}}`,
				g.balances[r.PathValue("member")])
		})
	return mux
}

func ok201(w http.ResponseWriter, points int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"status":"ok","data":{"points":%d}}`, points)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "detail": detail})
}

func TestRunAgainstFakeGateway(t *testing.T) {
	g := newFakeGateway()
	g.flaky = "bill-A-m02"
	g.slow = "bill-B-m01"
	srv := httptest.NewServer(g.handler())
	defer srv.Close()

	const csvText = "customerID,tenure,MonthlyCharges,TotalCharges\n" +
		"A,3,29.85,89.55\n" +
		"B,1,100.10,100.10\n" +
		"Z,0,52.55, \n" +
		",2,10,20\n"
	asOf, err := ParseAsOf("2025-06-05")
	if err != nil {
		t.Fatal(err)
	}
	run := func() (Summary, string) {
		var out bytes.Buffer
		sum, err := Run(context.Background(), Options{BaseURL: srv.URL, APIKey: "k",
			Workers: 2, AsOf: asOf, Out: &out, Data: strings.NewReader(csvText)})
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, out.String())
		}
		return sum, out.String()
	}

	// First run: everything is new, the blank bill and the bad row rejected.
	sum, out := run()
	wantRejected := map[string]int{"bill_paid event: amount: is required": 1,
		"CSV line 5: customerID: is empty": 1}
	if sum.Subscribers != 3 || sum.MembersNew != 3 || sum.MembersExisting != 0 ||
		sum.EventsSent != 5 || sum.EventsNew != 4 || sum.EventsReplayed != 0 ||
		sum.Pending != 0 || sum.FailedTotal() != 0 || sum.PointsNew != 29*3+100 ||
		sum.LedgerPoints != 29*3+100 || sum.LedgerMembers != 3 ||
		!reflect.DeepEqual(sum.Rejected, wantRejected) {
		t.Errorf("first run: %+v\n%s", sum, out)
	}
	if g.attempts["bill-A-m02"] != 2 {
		t.Errorf("flaky write tried %d times, want 2", g.attempts["bill-A-m02"])
	}
	for _, want := range []string{"Members enrolled:  3 new, 0 already there",
		"Events accepted:   4 new, 0 already applied (replay)", "1  CSV line 5",
		"Points credited by this run:  187"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}

	// Members are enrolled before their bills, and bills go oldest first;
	// the one the bus could not take is sent again after the batch.
	var order []string
	for _, r := range g.requests {
		if strings.HasSuffix(r, " enroll-A") || strings.Contains(r, " bill-A-") {
			order = append(order, r[strings.LastIndex(r, " ")+1:])
		}
	}
	want := []string{"enroll-A", "bill-A-m01", "bill-A-m02", "bill-A-m03", "bill-A-m02"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("order of A's writes %v, want %v", order, want)
	}

	// Second run: nothing new.
	sum, out = run()
	if sum.MembersNew != 0 || sum.MembersExisting != 3 || sum.EventsNew != 0 ||
		sum.EventsReplayed != 4 || sum.PointsNew != 0 || sum.PointsReplayed != 187 ||
		sum.LedgerPoints != 187 || !reflect.DeepEqual(sum.Rejected, wantRejected) {
		t.Errorf("second run: %+v\n%s", sum, out)
	}
}

func TestRunRefusesWithoutProgram(t *testing.T) {
	srv := httptest.NewServer(newFakeGateway().handler())
	defer srv.Close()
	_, err := Run(context.Background(), Options{BaseURL: srv.URL, APIKey: "wrong",
		Out: io.Discard, Data: strings.NewReader("customerID,tenure,MonthlyCharges," +
			"TotalCharges\nA,1,1,1\n")})
	if err == nil || !strings.Contains(err.Error(), "the API key is not valid") {
		t.Errorf("got %v, want a refusal naming the key", err)
	}
}

func TestRunStopsWhenGatewayStopsAnswering(t *testing.T) {
	defer func(d time.Duration) { firstBackoff = d }(firstBackoff)
	firstBackoff = time.Millisecond

	// The program and its rules are defined, then every other request gets
	// a 503.
	var calls sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Store(r.URL.Path, true)
		if r.Method == http.MethodPut || strings.HasSuffix(r.URL.Path, "/rules") {
			ok201(w, 0)
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, "the bus is unavailable")
	}))
	defer srv.Close()
	var rows strings.Builder
	rows.WriteString("customerID,tenure,MonthlyCharges,TotalCharges\n")
	for i := range 100 {
		fmt.Fprintf(&rows, "C%03d,2,10,20\n", i)
	}
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{BaseURL: srv.URL, APIKey: "k", Workers: 2,
		AsOf: time.Date(2025, 6, 5, 0, 0, 0, 0, time.UTC), Out: &out,
		Data: strings.NewReader(rows.String())})
	if err == nil || !strings.Contains(err.Error(), "the gateway stopped answering: 10 requests") {
		t.Fatalf("got %v\n%s", err, out.String())
	}
	if sum.FailedTotal() < 10 || sum.FailedTotal() > 12 || sum.Skipped < 180 ||
		sum.Skipped+sum.EventsSent != 200 || sum.LedgerMembers != 0 {
		t.Errorf("summary %+v\n%s", sum, out.String())
	}
	if !strings.Contains(out.String(), "the bus is unavailable") {
		t.Errorf("summary does not name the failure:\n%s", out.String())
	}
	if !sum.Stopped || !strings.Contains(out.String(), "Points on the ledger:         not read") {
		t.Errorf("summary of a run that stopped early claims ledger figures:\n%s", out.String())
	}
}

// Interrupted after its first bills (Ctrl-C), a run says it stopped early
// instead of printing zero points on the ledger, counts the writes on their
// way as cut off (they may have been applied) rather than failed, and
// returns the interruption; run again, it sends the rest and credits
// nothing twice.
func TestRunInterruptedThenRunAgain(t *testing.T) {
	g := newFakeGateway()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var batches atomic.Int32
	h := g.handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The second batch: the first one's answer has been read (one worker).
		// It is applied, but its answer never reaches the run, which is
		// interrupted while it waits: a write on its way, applied.
		if strings.HasSuffix(r.URL.Path, "/events/batches") && batches.Add(1) == 2 {
			h.ServeHTTP(httptest.NewRecorder(), r)
			cancel()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	var rows strings.Builder
	rows.WriteString("customerID,tenure,MonthlyCharges,TotalCharges\n")
	for i := range 40 {
		fmt.Fprintf(&rows, "C%03d,2,10,20\n", i)
	}
	asOf := time.Date(2025, 6, 5, 0, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	sum, err := Run(ctx, Options{BaseURL: srv.URL, APIKey: "k", Workers: 1, AsOf: asOf,
		Out: &out, Data: strings.NewReader(rows.String())})
	if !errors.Is(err, context.Canceled) || !sum.Stopped || sum.LedgerMembers != 0 ||
		sum.FailedTotal() != 0 || sum.CutOff == 0 || !strings.Contains(out.String(), "Events cut off:") ||
		!strings.Contains(out.String(), "not read: the run stopped early") ||
		strings.Contains(out.String(), "over 0 members") {
		t.Fatalf("interrupted run: %v %+v\n%s", err, sum, out.String())
	}
	first := sum.PointsNew
	if first <= 0 || first >= 40*2*10 {
		t.Fatalf("interrupted run credited %d points, want some of the %d", first, 40*2*10)
	}

	out.Reset()
	sum, err = Run(context.Background(), Options{BaseURL: srv.URL, APIKey: "k", Workers: 2,
		AsOf: asOf, Out: &out, Data: strings.NewReader(rows.String())})
	if err != nil || sum.Stopped || sum.PointsNew+sum.PointsReplayed != 40*2*10 ||
		sum.PointsReplayed < first || sum.LedgerPoints != 40*2*10 {
		t.Fatalf("second run: %v %+v\n%s", err, sum, out.String())
	}
}

func TestRunRefusesFutureBills(t *testing.T) {
	_, err := Run(context.Background(), Options{BaseURL: "http://127.0.0.1:1",
		AsOf: time.Now().AddDate(0, 2, 0)})
	if err == nil || !strings.Contains(err.Error(), "in the future") {
		t.Errorf("got %v", err)
	}
}

func TestGroup(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000",
		227990: "227,990", 15949098: "15,949,098", -1234: "-1,234"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %s, want %s", n, got, want)
		}
	}
}

// TestDemoAgainstThePlatform runs the demo twice against the platform
// started in-process (gateway, bus and core on a fresh database), on a slice
// of the real sample: the first 60 subscribers and the 11 with a blank
// TotalCharges. The second run must add nothing.
func TestDemoAgainstThePlatform(t *testing.T) {
	// The slice of the sample, and what it is worth.
	lines := strings.SplitAfter(string(telcoCSV), "\n")
	var slice strings.Builder
	for i, l := range lines {
		if i <= 60 || strings.Contains(l, ", ,") {
			slice.WriteString(l)
		}
	}
	subs, _, err := ParseSubscribers(strings.NewReader(slice.String()))
	if err != nil {
		t.Fatal(err)
	}
	var months int
	var points int64
	for _, s := range subs {
		months += s.Tenure
		whole, _ := new(big.Rat).SetString(s.MonthlyCharges)
		points += int64(s.Tenure) * new(big.Int).Quo(whole.Num(), whole.Denom()).Int64()
	}
	if len(subs) != 71 {
		t.Fatalf("slice has %d subscribers, want 71", len(subs))
	}

	// The platform, as `puntos run` starts it, minus the adapters.
	const key = "demo-test-key-0123456789"
	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t), NATSPort: -1,
		NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "demo=" + key, LogLevel: "error"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.Start(context.Background(), cfg, log, app.Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})

	run := func() Summary {
		t.Helper()
		var out bytes.Buffer
		sum, err := Run(context.Background(), Options{BaseURL: "http://" + a.Addr(),
			APIKey: key, Out: &out, Data: strings.NewReader(slice.String())})
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, out.String())
		}
		t.Logf("\n%s", out.String())
		return sum
	}
	blank := map[string]int{"bill_paid event: amount: is required": 11}

	// The demo defines the shipped rules: a point per whole dollar is the
	// floor, bonuses and tiers come on top.
	first := run()
	if first.MembersNew != 71 || first.EventsSent != months+11 || first.EventsNew != months ||
		first.PointsNew < points || first.Pending != 0 || first.FailedTotal() != 0 ||
		!reflect.DeepEqual(first.Rejected, blank) || first.LedgerMembers != 71 ||
		first.LedgerPoints <= 0 || first.LedgerPoints > first.PointsNew {
		t.Errorf("first run: %+v; want 71 members, %d events, at least %d points", first,
			months, points)
	}

	// What the demo counted is what the ledger posted, and each rule fired on
	// exactly the bills of the subscribers it is for.
	var posted int64
	var twoYear, automatic int
	err = a.Pool.QueryRow(context.Background(), `SELECT coalesce(sum(points + pending_delta), 0),
			count(*) FILTER (WHERE rule_version LIKE '%rule:two-year-contract@%'),
			count(*) FILTER (WHERE rule_version LIKE '%rule:automatic-payment@%')
		FROM postings WHERE kind = 'accrual'`).Scan(&posted, &twoYear, &automatic)
	if err != nil {
		t.Fatal(err)
	}
	var wantTwoYear, wantAutomatic int
	for _, s := range subs {
		if s.Attributes == nil {
			continue
		}
		if s.Attributes.Contract == "two_year" {
			wantTwoYear += s.Tenure
		}
		if strings.HasSuffix(s.Attributes.PaymentMethod, "_auto") {
			wantAutomatic += s.Tenure
		}
	}
	if posted != first.PointsNew || twoYear != wantTwoYear || automatic != wantAutomatic ||
		wantTwoYear == 0 || wantAutomatic == 0 {
		t.Errorf("ledger: %d points posted (demo counted %d); two-year bonus on %d bills "+
			"(want %d), automatic payment on %d (want %d)", posted, first.PointsNew, twoYear,
			wantTwoYear, automatic, wantAutomatic)
	}

	second := run()
	if second.MembersNew != 0 || second.MembersExisting != 71 || second.EventsNew != 0 ||
		second.EventsReplayed != months || second.PointsNew != 0 ||
		second.PointsReplayed != first.PointsNew || second.FailedTotal() != 0 ||
		!reflect.DeepEqual(second.Rejected, blank) || second.LedgerPoints != first.LedgerPoints {
		t.Errorf("second run added something: %+v", second)
	}
}
