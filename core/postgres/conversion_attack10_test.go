package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// TestConversionsSameInstantAttack10: conversions requested at the very
// same instant (a clock that does not move, as many requests in one
// microsecond do) are paged by their id after their time, so every page
// size lists each of them once, newest first, the same as one big page;
// after a merge the list through the merged-away reference interleaves
// both members' conversions of that instant and still skips or repeats
// none.
func TestConversionsSameInstantAttack10(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	for _, m := range []string{"a", "b"} {
		f.enroll(m)
		f.ok(core.KindCredit, m, core.Credit{Points: 50000, Reason: "welcome"})
	}
	f.ok(core.KindExternalUpsert, "sky", airline("sky", ""))

	// Seven conversions of a and five of b, all at the fixture's one instant.
	var ofA, ofB []string
	for i := range 12 {
		who := "a"
		if i%5 == 4 || i%3 == 2 {
			who = "b"
		}
		id := f.convertGaps9(who, core.Points(100+2*i))
		if who == "a" {
			ofA = append(ofA, id)
		} else {
			ofB = append(ofB, id)
		}
	}

	ids := func(list []core.Conversion) []string {
		var out []string
		for _, c := range list {
			out = append(out, c.ID)
		}
		return out
	}
	whole := ids(f.listGaps9("a", 500))
	if len(whole) != len(ofA) {
		t.Fatalf("one page lists %d conversions of a, want %d", len(whole), len(ofA))
	}
	for _, limit := range []int{1, 2, 3, 4, 6} {
		got := ids(f.listGaps9("a", limit))
		if !slices.Equal(got, whole) {
			t.Fatalf("limit %d: listed %v, want %v (one page)", limit, got, whole)
		}
	}

	// Settle every conversion (holds stop a merge), then merge a into b.
	for _, id := range append(slices.Clone(ofA), ofB...) {
		owner := "a"
		if slices.Contains(ofB, id) {
			owner = "b"
		}
		c := f.command(core.KindCapture, owner, core.ConversionCaptureTxn(id),
			core.Capture{HoldTxnID: core.ConversionHoldTxn(id)})
		c.Source = core.SourceConversion
		c.Seal()
		if r := f.apply(c); r.Error != nil {
			t.Fatalf("capture %s: %+v", id, r.Error)
		}
		if _, err := f.l.FinishConversion(ctx, id, core.ConversionConfirmed, "R", "",
			f.now); err != nil {
			t.Fatal(err)
		}
	}
	f.ok(core.KindMerge, "a", core.Merge{Into: "b"})

	every := append(slices.Clone(ofA), ofB...)
	slices.Sort(every)
	for _, limit := range []int{1, 2, 5, 500} {
		got := ids(f.listGaps9("a", limit))
		sorted := slices.Clone(got)
		slices.Sort(sorted)
		if !slices.Equal(sorted, every) {
			t.Fatalf("merged a, limit %d: listed %d conversions %v, want the %d of a and b",
				limit, len(got), got, len(every))
		}
	}
}
