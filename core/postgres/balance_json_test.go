package postgres

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// The hand-written encoding of a balance is byte for byte what
// encoding/json writes, for the views a member can have and for strings
// and instants that need escaping or an offset.
func TestBalanceJSON(t *testing.T) {
	lima := time.FixedZone("Lima", -5*3600)
	at := time.Date(2026, 12, 5, 1, 2, 3, 450_000_000, time.UTC)
	exp := at.AddDate(1, 0, 0).In(lima)
	views := []*BalanceView{
		{Member: "c-1", Program: "telco", Status: "active", Lots: []core.Lot{},
			NextExpiries: []ExpiryBucket{}, AsOf: at},
		{Member: `quote " back \ <b>&`, Program: "tél", Status: "closed\n",
			Balance: core.Balance{Available: -5, Pending: 7, Held: 3},
			Lots: []core.Lot{
				{ID: 1, EarnedAt: at, SpendableFrom: at.Add(time.Hour), Original: 10,
					Remaining: 4, Held: 2},
				{ID: 2, EarnedAt: at.In(lima), SpendableFrom: at, ExpiresAt: &exp,
					Pending: true, Original: 9, Remaining: 9},
			},
			NextExpiries: []ExpiryBucket{{ExpiresAt: exp, Points: 2}}, AsOf: at},
		{Member: "nil-slices", AsOf: at},
		{Member: "summary", Program: "telco", Status: "active", NextExpiries: []ExpiryBucket{},
			AsOf: at},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		v := &BalanceView{Member: string(rune(rng.IntN(0x3000))) + "x", Program: "p",
			Status: "active", Balance: core.Balance{Available: core.Points(rng.Int64())},
			AsOf: at.Add(time.Duration(rng.Int64N(1e15))), Lots: []core.Lot{}}
		summary := rng.IntN(3) == 0 // without lots, as BalanceSummary reads
		for j := range rng.IntN(30) {
			when := at.Add(-time.Duration(rng.Int64N(1e16)))
			l := core.Lot{ID: int64(j + 1), EarnedAt: when, SpendableFrom: when,
				Original: core.Points(rng.IntN(1e6)), Pending: rng.IntN(2) == 0}
			if rng.IntN(3) > 0 {
				e := when.AddDate(2, 0, 0)
				l.ExpiresAt = &e
				v.NextExpiries = append(v.NextExpiries, ExpiryBucket{ExpiresAt: e,
					Points: l.Original})
			}
			v.Lots = append(v.Lots, l)
		}
		if summary {
			v.Lots = nil
		}
		views = append(views, v)
	}
	for i, v := range views {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.AppendJSON(nil)
		if err != nil {
			t.Fatalf("view %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("view %d:\n got %s\nwant %s", i, got, want)
		}
	}

	// An instant RFC 3339 cannot write fails as encoding/json fails.
	bad := &BalanceView{AsOf: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := json.Marshal(bad); err == nil {
		t.Fatal("encoding/json encoded the year 10000")
	}
	if _, err := bad.AppendJSON(nil); err == nil {
		t.Error("AppendJSON encoded the year 10000")
	}
}
