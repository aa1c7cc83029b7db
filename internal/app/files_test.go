package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBulkFileEndToEnd uploads a file through the running gateway (API key,
// caller as uploader), posts it, and picks a second file from the inbox
// folder; both reach the ledger and the balance says so.
func TestBulkFileEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.InboxPoll = 50 * time.Millisecond
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "7590-VHVEG"})

	r := c.must(202, "POST", "/v1/programs/telco/batches", "",
		"member;points;reason;txn_id\r\n7590-VHVEG;1200;Bono aniversario;f-1\r\n",
		"Content-Type", "text/csv")
	id, _ := r.body["id"].(string)
	if r.body["uploaded_by"] != "billing" || id == "" {
		t.Fatalf("upload: %s", r.raw)
	}
	waitBatch := func(id, status string) reply {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.must(200, "GET", "/v1/programs/telco/batches/"+id, "", nil)
			if r.body["status"] == status {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch %s: %s, want %s", id, r.raw, status)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitBatch(id, "validated")
	c.must(202, "POST", "/v1/programs/telco/batches/"+id+"/post", "", nil)
	r = waitBatch(id, "posted")
	if jnum(t, r, "progress.lines_done") != 1 || jnum(t, r, "posted_lines") != 1 {
		t.Fatalf("posted batch: %s", r.raw)
	}

	dir := filepath.Join(cfg.DataDir, "inbox", "telco")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(dir, "extra.csv"),
		[]byte("member,points,reason,txn_id\n7590-VHVEG,-200,Ajuste,f-2\n"), 0o640)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := c.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/balance", "", nil)
		if jnum(t, b, "balance.available") == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("balance %s, want 1200 - 200 = 1000", b.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "done", "extra.csv")); err != nil {
		t.Errorf("inbox file not in done/: %v", err)
	}
	res := c.must(200, "GET", "/v1/programs/telco/batches/"+id+"/result", "", nil)
	if !strings.Contains(res.raw, "2,f-1,7590-VHVEG,1200,posted,,,,\n") {
		t.Errorf("result file %q", res.raw)
	}
}
