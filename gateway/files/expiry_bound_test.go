package files

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// A line whose expiry is 9999-12-31 (the "never" of many billing systems)
// is refused naming expires_at, and the rest of the file posts: before,
// validation took it and posting stopped at it for good.
func TestFarExpiryLineIsRefusedAndTheRestPosts(t *testing.T) {
	f := newFixture(t, Options{}, "m1", "m2")
	content := "member,points,reason,expires_at,txn_id\n" +
		"m1,100,ok,,y-1\n" +
		"m2,50,far expiry,9999-12-31,y-2\n" +
		"m2,20,far enough,2199-12-30,y-3\n" +
		"m1,7,ok too,,y-4\n"
	v := f.wait(f.upload(content, "", nil).ID, core.BatchValidated)
	lines, err := f.ledger.BatchLines(f.ctx, v.ID, 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Valid != 3 || len(lines) != 1 || lines[0].Line != 3 ||
		lines[0].ErrorField != "expires_at" || !strings.Contains(lines[0].Error, "2200-01-01") {
		t.Fatalf("validated %d valid, invalid lines %+v; want line 3 refused on expires_at",
			v.Valid, lines)
	}
	if code, body := f.post(v.ID, "ana"); code != http.StatusAccepted {
		t.Fatalf("post answered %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for v.Status != core.BatchPosted && time.Now().Before(deadline) {
		v = f.wait(v.ID, core.BatchPosting, core.BatchPosted)
		time.Sleep(50 * time.Millisecond)
	}
	if v.Status != core.BatchPosted || v.Posted != 3 {
		t.Fatalf("batch %s with %d lines posted; want posted, 3", v.Status, v.Posted)
	}
	if m1, m2 := f.available("m1"), f.available("m2"); m1 != 107 || m2 != 20 {
		t.Fatalf("m1 %d and m2 %d points; want 107 and 20", m1, m2)
	}
	f.check()
}
