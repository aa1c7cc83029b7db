package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestBulkRefusesReasonsOtherChannelsRefuse: a bulk credit or debit whose
// reason holds a bidirectional override or a control character is refused
// naming reason, as every other channel refuses it, and posts nothing; a
// reason with joiners posts.
func TestBulkRefusesReasonsOtherChannelsRefuse(t *testing.T) {
	ctx := context.Background()
	w := newBulkTwin(t)
	at := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	w.now = at
	if _, err := w.l.ApplyBatch(ctx, []bus.Command{
		bulkCmd(core.KindProgramUpsert, "p1", "", "prog-p1", map[string]any{"name": "One",
			"time_zone": "UTC"}, at),
		bulkCmd(core.KindEnroll, "p1", "a", "e-a", core.Enroll{}, at),
	}); err != nil {
		t.Fatal(err)
	}
	var cmds []bus.Command
	for i, reason := range []string{"refund \u202e001 stniop", "bell\x07", "regalo 👨\u200d👧"} {
		cmds = append(cmds, bulkCmd(core.KindCredit, "p1", "a", "c-"+string(rune('0'+i)),
			core.Credit{Points: 10, Reason: reason}, at))
	}
	debit := bulkCmd(core.KindAdjust, "p1", "a", "d-0",
		core.Adjust{Points: -5, Reason: "fix\u2066"}, at)
	debit.Actor = "ana"
	debit.Seal()
	cmds = append(cmds, debit)
	out, err := w.l.ApplyBulk(ctx, cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{bus.StatusRejected, bus.StatusRejected, bus.StatusOK,
		bus.StatusRejected} {
		r := out[i].Result
		if r.Status != want || (want == bus.StatusRejected &&
			(r.Error == nil || r.Error.Field != "reason")) {
			t.Errorf("line %d: %s %+v, want %s", i, r.Status, r.Error, want)
		}
	}
	b, err := w.l.Balance(ctx, "p1", "a")
	if err != nil {
		t.Fatal(err)
	}
	if b.Balance.Available != 10 {
		t.Fatalf("available %d, want the 10 of the one plain reason", b.Balance.Available)
	}
}
