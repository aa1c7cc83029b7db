package app

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// A conversion the other program does not answer is counted on /metrics,
// with the age of the oldest, by program and external program.
func TestMetricsCountPendingConversions(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true, Adapters: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "PUT", "/v1/programs/telco/external/sky", "ext-1", map[string]any{
		"name": "Sky", "ratio": "0.5", "flavour": "http",
		"endpoint": "https://127.0.0.1:9/api", "credentials": "token"})
	m := "/v1/programs/telco/members/m-1"
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	c.must(201, "POST", m+"/credits", "cr-1", map[string]any{"points": 5000, "reason": "seed"})
	var ids []string
	for i, n := range []int{1000, 2000} {
		r := c.must(201, "POST", m+"/conversions", "conv-"+string(rune('a'+i)),
			map[string]any{"external": "sky", "points": n})
		ids = append(ids, jstr(t, r, "data.id"))
	}
	const pending = `puntos_conversions_pending{external="sky",program="telco"}`
	const oldest = `puntos_conversions_pending_oldest_seconds{external="sky",program="telco"}`
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := scrape(t, a.Addr())
		if s[pending] == 2 && s[oldest] >= 0 && s["puntos_conversions_pending_up"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %v (oldest %v, up %v), want 2 conversions to sky", s[pending],
				s[oldest], s["puntos_conversions_pending_up"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	b := c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.held"); got != 3000 {
		t.Fatalf("held %d, want the 3000 of the two pending conversions", got)
	}

	// A person settles both: the first confirmed by the airline's desk,
	// the second never received there. Without X-Actor it is refused.
	res := m + "/conversions/" + ids[0] + "/resolve"
	c.must(400, "POST", res, "res-0", map[string]any{"outcome": "confirmed",
		"reason": "desk"})
	// The worker keeps trying the unreachable airline; while it holds a
	// conversion for a delivery, a resolution is refused (409, stored under
	// its key like any refusal), and sent again under a new key it goes.
	settle := func(path, txn string, body map[string]any) reply {
		t.Helper()
		for try, deadline := 0, time.Now().Add(15*time.Second); ; try++ {
			r := c.send("POST", path, txn+"-"+strconv.Itoa(try), body, "X-Actor", "ana")
			if r.status != 409 || !strings.Contains(r.raw, "being delivered") ||
				time.Now().After(deadline) {
				return r
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r := settle(res, "res-1", map[string]any{"outcome": "confirmed", "reference": "SKY-1",
		"reason": "confirmed by the airline's desk"})
	if r.status != 201 || jstr(t, r, "data.status") != "confirmed" ||
		jstr(t, r, "data.reference") != "SKY-1" {
		t.Fatalf("resolve: %d %s", r.status, r.raw)
	}
	if r := settle(m+"/conversions/"+ids[1]+"/resolve", "res-2", map[string]any{
		"outcome": "refused", "reason": "the airline has no record"}); r.status != 201 {
		t.Fatalf("resolve refused: %d %s", r.status, r.raw)
	}
	c.must(409, "POST", res, "res-3", map[string]any{"outcome": "refused",
		"reason": "again"}, "X-Actor", "ana")
	b = c.must(200, "GET", m+"/balance", "", nil)
	if jnum(t, b, "balance.held") != 0 || jnum(t, b, "balance.available") != 4000 {
		t.Fatalf("after resolving: %s, want 4000 available and nothing held", b.raw)
	}
	if s := scrape(t, a.Addr()); s[pending] != 0 {
		t.Fatalf("pending after resolving: %v", s[pending])
	}
	// The airline later says it did credit the second: a dispute, counted.
	const disputed = `puntos_conversions_disputed{external="sky",program="telco"}`
	if s := scrape(t, a.Addr()); s[disputed] != 0 {
		t.Fatalf("disputed before any dispute: %v", s[disputed])
	}
	if err := a.Ledger.DisputeConversion(t.Context(), ids[1],
		"the other program answers confirmed (reference SKY-9)", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s := scrape(t, a.Addr()); s[disputed] != 1 {
		t.Fatalf("disputed after one dispute: %v, want 1", s[disputed])
	}
	d := c.must(200, "GET", m+"/conversions/"+ids[1], "", nil)
	if !strings.Contains(jstr(t, d, "dispute"), "SKY-9") {
		t.Fatalf("the disputed conversion over REST: %s", d.raw)
	}
}
