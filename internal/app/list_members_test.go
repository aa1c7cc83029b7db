package app

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
)

// An operator lists its programs, and a program's members page by page in
// order of reference, of one status when it asks; a merged member names
// its survivor and holds nothing.
func TestListProgramsAndMembers(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "PUT", "/v1/programs/shop", "prog-2", map[string]any{
		"name": "Shop", "currency": "USD", "points_per_unit": "1"})

	for i := 5; i >= 1; i-- {
		ref := fmt.Sprintf("m-%d", i)
		c.must(201, "POST", "/v1/programs/telco/members", "enr-"+ref,
			map[string]any{"customer_ref": ref, "channel": "web"})
		c.must(201, "POST", "/v1/programs/telco/members/"+ref+"/credits", "cr-"+ref,
			map[string]any{"points": 10 * i, "reason": "welcome"})
	}
	c.must(201, "POST", "/v1/programs/telco/members/m-4/suspend", "sus-4",
		map[string]any{"reason": "fraud check"})
	c.must(201, "POST", "/v1/programs/telco/members/m-2/merge", "merge-2",
		map[string]any{"into": "m-3"})

	var progs struct {
		Programs []struct{ Code, Name string } `json:"programs"`
	}
	r := c.must(200, "GET", "/v1/programs", "", nil)
	if err := json.Unmarshal([]byte(r.raw), &progs); err != nil {
		t.Fatal(err)
	}
	if len(progs.Programs) != 2 || progs.Programs[0].Code != "shop" ||
		progs.Programs[1].Code != "telco" || progs.Programs[1].Name != "Telco" {
		t.Fatalf("programs: %s; want shop and telco", r.raw)
	}

	type member struct {
		Ref     string `json:"customer_ref"`
		Status  string `json:"status"`
		Merged  string `json:"merged_into"`
		Balance struct {
			Available int64 `json:"available"`
		} `json:"balance"`
	}
	type page struct {
		Members []member `json:"members"`
		Next    string   `json:"next_cursor"`
	}
	list := func(query url.Values) page {
		t.Helper()
		r := c.must(200, "GET", "/v1/programs/telco/members?"+query.Encode(), "", nil)
		var p page
		if err := json.Unmarshal([]byte(r.raw), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Pages of two: m-1 m-2, m-3 m-4, m-5.
	var all []member
	q := url.Values{"limit": {"2"}}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than three pages of two for five members")
		}
		p := list(q)
		all = append(all, p.Members...)
		if p.Next == "" {
			break
		}
		q.Set("cursor", p.Next)
	}
	want := []member{{Ref: "m-1"}, {Ref: "m-2", Status: "merged", Merged: "m-3"},
		{Ref: "m-3"}, {Ref: "m-4", Status: "suspended"}, {Ref: "m-5"}}
	wantPoints := []int64{10, 0, 50, 40, 50}
	if len(all) != len(want) {
		t.Fatalf("listed %+v; want m-1 to m-5", all)
	}
	for i, m := range all {
		st := want[i].Status
		if st == "" {
			st = "active"
		}
		if m.Ref != want[i].Ref || m.Status != st || m.Merged != want[i].Merged ||
			m.Balance.Available != wantPoints[i] {
			t.Errorf("member %d: %+v; want %s, %s, merged into %q, %d points", i, m,
				want[i].Ref, st, want[i].Merged, wantPoints[i])
		}
	}
	// One status.
	if p := list(url.Values{"status": {"suspended"}}); len(p.Members) != 1 ||
		p.Members[0].Ref != "m-4" || p.Next != "" {
		t.Fatalf("suspended members: %+v; want m-4 alone", p)
	}
	// Another program's members are its own.
	r = c.must(200, "GET", "/v1/programs/shop/members", "", nil)
	if r.raw == "" || len(r.body["members"].([]any)) != 0 {
		t.Fatalf("shop's members: %s; want none", r.raw)
	}
	// Bad input names its field.
	for query, field := range map[string]string{"status=gone": "status", "limit=0": "limit",
		"limit=501": "limit"} {
		r := c.must(400, "GET", "/v1/programs/telco/members?"+query, "", nil)
		if r.body["field"] != field {
			t.Errorf("?%s: %s; want the field %s named", query, r.raw, field)
		}
	}
	r = c.must(404, "GET", "/v1/programs/nope/members", "", nil)
	if r.body["field"] != "program" {
		t.Errorf("unknown program: %s; want the field program named", r.raw)
	}
}
