package app

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core/postgres"
)

// user18LotsOf reads a member's live lots as id → remaining points.
func user18LotsOf(c *client, program, member string) (map[int64]int64, reply) {
	c.t.Helper()
	r := c.must(200, "GET", "/v1/programs/"+program+"/members/"+member+"/balance?lots=true",
		"", nil)
	out := map[int64]int64{}
	lots, _ := r.body["lots"].([]any)
	for _, l := range lots {
		m := l.(map[string]any)
		out[int64(m["id"].(float64))] = int64(m["remaining"].(float64))
	}
	return out, r
}

// An operator's day with one member, in points a person can check by hand:
// three bills earn three lots with different expiries; a catalog order
// takes the soonest-expiring points first and its cancellation puts them
// back in the same lots; a partner payment is captured in part, refunded
// in part and settles at the partner's point value; the expiry sweep then
// takes what is left of the lots that are due, and only those.
func TestUser18OperatorDayOldestPointsGoFirst(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	op.must(201, "PUT", "/v1/programs/movil", "prog", map[string]any{
		"name": "Movil", "currency": "CLP", "points_per_unit": "0.01",
		"expiry_unit": "months", "expiry_length": 12})
	op.must(201, "POST", "/v1/programs/movil/members", "enr",
		map[string]any{"customer_ref": "CL-1001"})

	// Bills of 25,000, 30,000 and 40,000 CLP, 1 point per 100 CLP, earned
	// 11, 10 and 6 months ago: 250, 300 and 400 points.
	now := time.Now()
	earn := []struct {
		txn    string
		amount string
		months int
	}{{"b-1", "25000", 11}, {"b-2", "30000", 10}, {"b-3", "40000", 6}}
	var lotIDs []int64
	for _, e := range earn {
		r := op.must(201, "POST", "/v1/programs/movil/members/CL-1001/events", e.txn,
			map[string]any{"type": "bill_paid", "amount": e.amount,
				"occurred_at": now.AddDate(0, -e.months, 0).Format(time.RFC3339)})
		lots := r.body["data"].(map[string]any)["lots"].([]any)
		lotIDs = append(lotIDs, int64(lots[0].(map[string]any)["lot_id"].(float64)))
	}
	l1, l2, l3 := lotIDs[0], lotIDs[1], lotIDs[2]

	// A reward of 450 points: 250 from the oldest lot, 200 from the next.
	op.must(201, "POST", "/v1/programs/movil/rewards", "rw", map[string]any{
		"code": "cinema-2x1", "name": "Two cinema tickets", "points": 450, "stock": 5,
		"cancel_window_seconds": 86400})
	r := op.must(201, "POST", "/v1/programs/movil/members/CL-1001/orders", "ord-1",
		map[string]any{"reward": "cinema-2x1", "quantity": 1, "price": "points"})
	order := jstr(t, r, "data.id")
	lots, b := user18LotsOf(op, "movil", "CL-1001")
	if lots[l1] != 0 || lots[l2] != 100 || lots[l3] != 400 ||
		jnum(t, b, "balance.available") != 500 {
		t.Fatalf("after the order: lots %v; want %d:0 %d:100 %d:400; %s", lots, l1, l2, l3,
			b.raw)
	}
	// Cancelled: the same lots get their points back, the stock its unit.
	op.must(201, "POST", "/v1/programs/movil/members/CL-1001/orders/"+order+"/cancel",
		"ord-1-cancel", map[string]any{})
	op.must(409, "POST", "/v1/programs/movil/members/CL-1001/orders/"+order+"/cancel",
		"ord-1-cancel-again", map[string]any{})
	lots, b = user18LotsOf(op, "movil", "CL-1001")
	if lots[l1] != 250 || lots[l2] != 300 || lots[l3] != 400 ||
		jnum(t, b, "balance.available") != 950 {
		t.Fatalf("after the cancellation: lots %v; %s", lots, b.raw)
	}
	rw := op.must(200, "GET", "/v1/programs/movil/rewards/cinema-2x1", "", nil)
	if jnum(t, rw, "stock") != 5 || jnum(t, rw, "redeemed") != 0 {
		t.Fatalf("reward after the cancellation: %s", rw.raw)
	}

	// A partner holds 300, captures 250 and refunds 100: it is owed 150
	// points, 1,125 CLP at 7.5 a point; the member has 800 left.
	op.must(201, "POST", "/v1/programs/movil/partners", "pt", map[string]any{
		"code": "cafe-sur-u18", "name": "Cafe Sur", "currency": "CLP", "point_value": "7.5",
		"can_burn": true})
	r = op.must(201, "POST", "/v1/programs/movil/partners/cafe-sur-u18/keys", "pt-key",
		map[string]any{"scopes": []string{"authorize", "capture", "refund", "settlement"}})
	pc := &client{t: t, base: op.base, key: jstr(t, r, "key")}
	pc.must(201, "POST", "/v1/partner/transactions", "cafe-t1",
		map[string]any{"member": "CL-1001", "points": 300})
	pc.must(201, "POST", "/v1/partner/transactions/cafe-t1/capture", "cafe-t1-cap",
		map[string]any{"points": 250})
	pc.must(201, "POST", "/v1/partner/transactions/cafe-t1/refunds", "cafe-t1-ref",
		map[string]any{"points": 100})
	pc.must(400, "POST", "/v1/partner/transactions/cafe-t1/refunds", "cafe-t1-ref2",
		map[string]any{"points": 151})
	span := "?from=" + now.Add(-time.Hour).UTC().Format(time.RFC3339) + "&to=" +
		now.Add(time.Hour).UTC().Format(time.RFC3339)
	s := pc.must(200, "GET", "/v1/partner/settlement"+span, "", nil)
	if jnum(t, s, "captured") != 250 || jnum(t, s, "refunded") != 100 ||
		jnum(t, s, "net") != 150 || jstr(t, s, "value") != "1125" {
		t.Fatalf("settlement: %s", s.raw)
	}
	// The capture took the oldest points (lot 1: 250 → 0); the refund gives
	// them back to the lot with the latest expiry among those it took.
	lots, b = user18LotsOf(op, "movil", "CL-1001")
	if jnum(t, b, "balance.available") != 800 || lots[l1]+lots[l2] != 400 ||
		lots[l3] != 400 {
		t.Fatalf("after the partner: lots %v; %s", lots, b.raw)
	}

	// Eleven months and a half from the first bill, lots 1 and 2 are due
	// (they end 12 months after they were earned: 1 and 2 months from now)
	// and lot 3 is not.
	ledger := postgres.New(a.Pool, slog.New(slog.NewTextHandler(os.Stderr,
		&slog.HandlerOptions{Level: slog.LevelError})))
	at := now.AddDate(0, 2, 5)
	if _, ran, err := ledger.Sweep(context.Background(), at, 500); err != nil || !ran {
		t.Fatalf("sweep: ran %v, %v", ran, err)
	}
	lots, b = user18LotsOf(op, "movil", "CL-1001")
	if jnum(t, b, "balance.available") != 400 || len(lots) != 1 || lots[l3] != 400 {
		t.Fatalf("after the sweep as of %s: lots %v; want only lot %d with 400; %s",
			at.Format(time.RFC3339), lots, l3, b.raw)
	}
	m := op.must(200, "GET", "/v1/programs/movil/members/CL-1001/movements", "", nil)
	first := m.body["postings"].([]any)[0].(map[string]any)
	if first["kind"] != "expiry" || first["points"].(float64) != -400 {
		t.Fatalf("the newest posting should expire 400 points: %s", m.raw)
	}
}
