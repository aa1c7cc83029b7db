package app

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
)

// The expiry engine seen from outside: campaign points with a fixed last
// day, the REST listing of coming expiries, and the warnings that reach the
// bus once.
func TestExpiringEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.NoticeDays = []int{30, 7, 1}
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	c.must(201, "PUT", "/v1/programs/camp", "prog-1", map[string]any{
		"name": "Campaigns", "time_zone": "America/Santiago", "currency": "CLP"})
	for _, ref := range []string{"ana", "ben"} {
		c.must(201, "POST", "/v1/programs/camp/members", "enr-"+ref,
			map[string]any{"customer_ref": ref})
	}

	// Ana's campaign points last through the local day ten days from now;
	// ben has 200 points for three days and 100 for sixty.
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lastDay := now.In(loc).AddDate(0, 0, 10).Format(time.DateOnly)
	r := c.must(201, "POST", "/v1/programs/camp/members/ana/credits", "cr-1",
		map[string]any{"points": 500, "reason": "spring campaign", "expires_on": lastDay})
	if got := jnum(t, r, "data.balance.available"); got != 500 {
		t.Fatalf("ana's balance %d, want 500", got)
	}
	for i, life := range []time.Duration{3 * day, 60 * day} {
		c.must(201, "POST", "/v1/programs/camp/members/ben/credits", fmt.Sprintf("cr-b%d", i),
			map[string]any{"points": 200 - 100*i, "reason": "bonus",
				"expires_at": now.Add(life).Format(time.RFC3339)})
	}
	c.must(400, "POST", "/v1/programs/camp/members/ana/credits", "cr-bad",
		map[string]any{"points": 5, "reason": "x", "expires_on": "31/12/2026"})

	// The listing, one member per page: ben first (3 days), then ana.
	r = c.must(200, "GET", "/v1/programs/camp/expiring?days=30&limit=1", "", nil)
	members := r.body["members"].([]any)
	first := members[0].(map[string]any)
	if len(members) != 1 || first["member"] != "ben" || first["points"] != 200.0 ||
		r.body["next_cursor"] == nil {
		t.Fatalf("first page: %s", r.raw)
	}
	r = c.must(200, "GET", "/v1/programs/camp/expiring?days=30&limit=1&cursor="+
		r.body["next_cursor"].(string), "", nil)
	members = r.body["members"].([]any)
	second := members[0].(map[string]any)
	prog := core.Program{TimeZone: "America/Santiago"}
	wantEnd, err := prog.ExpiresOn(lastDay)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || second["member"] != "ana" || second["points"] != 500.0 ||
		second["earliest_expiry"] != wantEnd.UTC().Format(time.RFC3339) ||
		r.body["next_cursor"] != nil {
		t.Fatalf("second page: %s (want ana's points to end at %s)", r.raw, wantEnd.UTC())
	}
	r = c.must(200, "GET", "/v1/programs/camp/expiring?days=90", "", nil)
	if n := len(r.body["members"].([]any)); n != 2 {
		t.Fatalf("90 days: %d members, want 2: %s", n, r.raw)
	}
	c.must(400, "GET", "/v1/programs/camp/expiring?days=0", "", nil)
	c.must(400, "GET", "/v1/programs/camp/expiring?cursor=zzz", "", nil)
	c.must(404, "GET", "/v1/programs/nope/expiring", "", nil)

	// Warnings: written by the ledger, relayed to the bus. A second run at
	// the same instant writes none.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []string
	go func() {
		_ = a.Bus.ConsumeEvents(ctx, "expiry-test", 100, 100*time.Millisecond,
			func(_ context.Context, batch []*natsbus.EventDelivery) error {
				mu.Lock()
				defer mu.Unlock()
				for _, d := range batch {
					if d.Event.Kind != core.EventExpiryNotice {
						continue
					}
					var n core.ExpiryNotice
					if err := json.Unmarshal(d.Event.Detail, &n); err != nil {
						t.Errorf("notice detail %s: %v", d.Event.Detail, err)
					}
					got = append(got, fmt.Sprintf("%s %s/%d: %d points in %d lots",
						d.Subject, d.Event.MemberRef, n.ThresholdDays, n.Points, len(n.Lots)))
				}
				return nil
			})
	}()
	a.notifyUpcoming(context.Background(), now)
	res, err := a.Ledger.NotifyUpcoming(context.Background(), now, cfg.NoticeDays)
	if err != nil || res.Events != 0 {
		t.Fatalf("second run: %+v, %v; want nothing new", res, err)
	}
	want := []string{"puntos.evt.camp.expiry_notice ana/30: 500 points in 1 lots",
		"puntos.evt.camp.expiry_notice ben/7: 200 points in 1 lots"}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		seen := slices.Clone(got)
		mu.Unlock()
		slices.Sort(seen)
		if slices.Equal(seen, want) {
			break
		}
		if time.Now().After(deadline) || len(seen) > len(want) {
			t.Fatalf("notices on the bus:\n%q\nwant\n%q", seen, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const day = 24 * time.Hour

func TestNoticeDaysSetting(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"30,7,1", "30,7,1", true}, {" 14 , 2 ", "14,2", true}, {"", "none", true},
		{"none", "none", true}, {"7,x", "", false}, {"0", "", false}, {"7,7", "", false},
	} {
		var c Config
		err := noticeDays(&c, tc.in)
		if (err == nil) != tc.ok || (tc.ok && formatNoticeDays(c.NoticeDays) != tc.want) {
			t.Errorf("noticeDays(%q): %v %v; want %q ok %v", tc.in, c.NoticeDays, err, tc.want,
				tc.ok)
		}
	}
}
