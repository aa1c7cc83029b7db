package app

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakBook is what the soak's callers count from the answers they got: the
// points each member must hold in the end.
type soakBook struct {
	mu                          sync.Mutex
	accrued, redeemed, captured map[string]int64
	refused                     int
	latencies                   []time.Duration
	ops                         map[string]int
}

func (b *soakBook) add(m map[string]int64, member string, points int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m[member] += points
}

// TestSoakMixedTraffic sends mixed traffic for a bounded time from several
// callers at once: accruals, redemptions (some beyond the balance, so
// refused), balance reads and partner holds that are then captured. It
// reports throughput, errors and latency, and ends by checking that the
// ledger balances and that each member holds exactly what the answers add
// up to.
func TestSoakMixedTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("soak skipped with -short")
	}
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	const members = 16
	names := make([]string, members)
	for m := range names {
		names[m] = fmt.Sprintf("S%02d", m)
		op.must(201, "POST", "/v1/programs/telco/members", "enr-"+names[m],
			map[string]any{"customer_ref": names[m]})
	}
	partnerKey := partnerCredential(op, "telco", "kiosk")

	book := &soakBook{accrued: map[string]int64{}, redeemed: map[string]int64{},
		captured: map[string]int64{}, ops: map[string]int{}}
	hc := &http.Client{Timeout: 30 * time.Second}
	var errs atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
	fail := func(format string, args ...any) {
		errs.Add(1)
		errMu.Lock()
		defer errMu.Unlock()
		if len(firstErrs) < 5 {
			firstErrs = append(firstErrs, fmt.Sprintf(format, args...))
		}
	}
	// do sends one request, retrying with the same key while the answer is
	// not final (202, 5xx or a transport error), and returns the final one.
	do := func(key, method, path, txn string, body any, kind string) (reply, bool) {
		for range 20 {
			start := time.Now()
			r, err := call(hc, op.base, key, method, path, txn, body)
			d := time.Since(start)
			book.mu.Lock()
			book.latencies = append(book.latencies, d)
			book.ops[kind]++
			book.mu.Unlock()
			if err == nil && r.status != 202 && r.status < 500 {
				return r, true
			}
			if err != nil {
				fail("%s %s: %v", method, path, err)
			} else if r.status != 202 {
				fail("%s %s: %d %s", method, path, r.status, r.raw)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return reply{}, false
	}

	const workers = 6
	traffic := 15 * time.Second
	begin := time.Now()
	stop := begin.Add(traffic)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; time.Now().Before(stop); i++ {
				member := names[rng.IntN(members)]
				mpath := "/v1/programs/telco/members/" + member
				txn := fmt.Sprintf("w%d-%d", w, i)
				switch n := rng.IntN(100); {
				case n < 40:
					units := 5 + rng.IntN(50)
					r, ok := do(testKey, "POST", mpath+"/events", txn, map[string]any{
						"type": "top_up", "amount": fmt.Sprintf("%d.75", units)}, "accrue")
					switch {
					case !ok:
					case r.status == 201:
						book.add(book.accrued, member, int64(units))
					default:
						fail("accrual %s: %d %s", txn, r.status, r.raw)
					}
				case n < 60:
					points := 1 + rng.IntN(80)
					r, ok := do(testKey, "POST", mpath+"/redemptions", txn,
						map[string]any{"points": points}, "redeem")
					switch {
					case !ok:
					case r.status == 201:
						book.add(book.redeemed, member, int64(points))
					case r.status == 422 && r.body["kind"] == "insufficient":
						book.mu.Lock()
						book.refused++
						book.mu.Unlock()
					default:
						fail("redemption %s: %d %s", txn, r.status, r.raw)
					}
				case n < 90:
					r, ok := do(testKey, "GET", mpath+"/balance", "", nil, "balance")
					if ok && r.status != 200 {
						fail("balance %s: %d %s", member, r.status, r.raw)
					}
				default:
					points := 1 + rng.IntN(40)
					r, ok := do(partnerKey, "POST", "/v1/partner/transactions", txn,
						map[string]any{"member": member, "points": points}, "hold")
					switch {
					case !ok:
						continue
					case r.status == 422:
						book.mu.Lock()
						book.refused++
						book.mu.Unlock()
						continue
					case r.status != 201:
						fail("hold %s: %d %s", txn, r.status, r.raw)
						continue
					}
					r, ok = do(partnerKey, "POST", "/v1/partner/transactions/"+txn+"/capture",
						"cap-"+txn, map[string]any{"points": points}, "capture")
					switch {
					case !ok:
					case r.status == 201:
						book.add(book.captured, member, int64(points))
					default:
						fail("capture %s: %d %s", txn, r.status, r.raw)
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)

	lat := book.latencies
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("soak: %d requests in %s (%.0f/s) from %d callers; %v; %d refused as "+
		"insufficient; %d errors; latency p50 %s p99 %s max %s", len(lat),
		elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds(), workers,
		book.ops, book.refused, errs.Load(), pct(0.5).Round(time.Microsecond),
		pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	if errs.Load() > 0 {
		t.Errorf("%d errors; first ones: %v", errs.Load(), firstErrs)
	}
	if book.ops["accrue"] == 0 || book.ops["redeem"] == 0 || book.ops["capture"] == 0 {
		t.Errorf("the mix lacks a kind of traffic: %v", book.ops)
	}

	// Every final answer was 201 or a refusal, so each member holds exactly
	// what the answers add up to, and nothing stays held.
	for _, member := range names {
		b := op.must(200, "GET", "/v1/programs/telco/members/"+member+"/balance", "", nil)
		want := book.accrued[member] - book.redeemed[member] - book.captured[member]
		if got := jnum(t, b, "balance.available"); got != want {
			t.Errorf("%s available %d, want %d accrued - %d redeemed - %d captured", member,
				got, book.accrued[member], book.redeemed[member], book.captured[member])
		}
		if got := jnum(t, b, "balance.held"); got != 0 {
			t.Errorf("%s holds %d points after every hold was captured", member, got)
		}
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}
