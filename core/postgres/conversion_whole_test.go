package postgres

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestConversionChargesNoPointForNothing: rounding down, a conversion whose
// last points would buy no unit of the other program is refused naming
// points and the counts that convert whole, and holds nothing; an exact
// count converts, and rounding up in the member's favour is left alone.
func TestConversionChargesNoPointForNothing(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m")
	f.ok(core.KindCredit, "m", core.Credit{Points: 1000, Reason: "welcome"})
	sky := airline("sky", "")
	sky.Ratio = "0.37"
	f.ok(core.KindExternalUpsert, "sky", sky)

	r := f.do(core.KindConvert, "m", f.txn(), core.ConvertRequest{External: "sky", Points: 101})
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "points" {
		t.Fatalf("101 points at 0.37 rounding down: %s %+v", r.Status, r.Error)
	}
	for _, want := range []string{"gives 37", "which 100 points already buy", "convert 100 points", "or 103 for 38"} {
		if !strings.Contains(r.Error.Message, want) {
			t.Errorf("the refusal %q does not say %q", r.Error.Message, want)
		}
	}
	f.wantBalance("m", 1000, 0, 0)

	// 100 points buy 37 exactly: held whole.
	r = f.do(core.KindConvert, "m", f.txn(), core.ConvertRequest{External: "sky", Points: 100})
	var c core.Conversion
	if err := json.Unmarshal(r.Data, &c); r.Status != bus.StatusOK || err != nil {
		t.Fatalf("100 points: %s %+v", r.Status, r.Error)
	}
	if c.Points != 100 || c.Amount != 37 {
		t.Fatalf("100 points converted as %d for %d, want 100 for 37", c.Points, c.Amount)
	}
	f.wantBalance("m", 900, 0, 100)

	// Rounding up, 3 points at 0.5 give 2: more than they are worth, kept.
	up := airline("up", "")
	up.Rounding = core.RoundUp
	f.ok(core.KindExternalUpsert, "up", up)
	r = f.do(core.KindConvert, "m", f.txn(), core.ConvertRequest{External: "up", Points: 3})
	c = core.Conversion{}
	if err := json.Unmarshal(r.Data, &c); r.Status != bus.StatusOK || err != nil || c.Amount != 2 {
		t.Fatalf("3 points rounding up: %s %+v amount %d, want 2", r.Status, r.Error, c.Amount)
	}
	f.wantBalance("m", 897, 0, 103)
	f.check()
}
