package files

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// GET .../batches lists the program's batches newest first, a page at a
// time, so that the batch an inbox file made can be found without the log;
// bad paging and an unknown program are refused naming the field.
func TestListBatchesNewestFirst(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	var ids []string
	for i := range 3 {
		v := f.upload(fmt.Sprintf("member,points,reason,txn_id\nm1,%d,bonus,l-%d\n", i+1, i),
			"", nil)
		f.wait(v.ID, core.BatchValidated)
		if code, body := f.post(v.ID, "ana"); code != http.StatusAccepted {
			t.Fatalf("post answered %d %s", code, body)
		}
		f.wait(v.ID, core.BatchPosted)
		ids = append(ids, v.ID)
	}
	page := func(query string) BatchPage {
		t.Helper()
		code, body := f.do(http.MethodGet, "/v1/programs/telco/batches"+query, nil, nil)
		if code != http.StatusOK {
			t.Fatalf("list%s: %d %s", query, code, body)
		}
		var p BatchPage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := page("?limit=2")
	if len(first.Batches) != 2 || first.Batches[0].ID != ids[2] ||
		first.Batches[1].ID != ids[1] || first.Next != ids[1] {
		t.Fatalf("first page %+v, want batches %s and %s, then a cursor", first, ids[2], ids[1])
	}
	if first.Batches[0].Posted != 1 || first.Batches[0].Status != core.BatchPosted {
		t.Fatalf("listed batch %+v, want posted with 1 line", first.Batches[0].Batch)
	}
	second := page("?limit=2&cursor=" + first.Next)
	if len(second.Batches) != 1 || second.Batches[0].ID != ids[0] || second.Next != "" {
		t.Fatalf("second page %+v, want batch %s alone", second, ids[0])
	}
	if all := page(""); len(all.Batches) != 3 {
		t.Fatalf("default page holds %d batches, want 3", len(all.Batches))
	}

	for query, field := range map[string]string{"?limit=0": "limit", "?limit=x": "limit",
		"?cursor=nope": "cursor"} {
		code, body := f.do(http.MethodGet, "/v1/programs/telco/batches"+query, nil, nil)
		var p struct{ Field string }
		_ = json.Unmarshal(body, &p)
		if code < 400 || code >= 500 || p.Field != field {
			t.Errorf("list%s: %d %s, want a refusal naming %s", query, code, body, field)
		}
	}
	code, body := f.do(http.MethodGet, "/v1/programs/nowhere/batches", nil, nil)
	var p struct{ Field string }
	_ = json.Unmarshal(body, &p)
	if code != http.StatusNotFound || p.Field != "program" {
		t.Errorf("list of an unknown program: %d %s, want 404 naming program", code, body)
	}
}
