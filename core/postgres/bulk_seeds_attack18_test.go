package postgres

import (
	"fmt"
	"testing"
)

// TestAttack18BulkMatchesCommandPathMoreSeeds runs the set-based path
// against the command path on more random loads than the checked-in seeds:
// every result and the whole ledger state must be the same.
func TestAttack18BulkMatchesCommandPathMoreSeeds(t *testing.T) {
	for seed := uint64(3); seed < 15; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			s := makeBulkScenario(seed)
			slow, fast := newBulkTwin(t), newBulkTwin(t)
			want := slow.run(s, slow.l.ApplyBatch)
			got := fast.run(s, fast.l.ApplyBulk)
			wantState, wantNames := slow.snapshot()
			gotState, gotNames := fast.snapshot()
			for i := range want {
				for j := range want[i] {
					ws := normResult(wantNames, mustJSON(t, want[i][j].Result))
					gs := normResult(gotNames, mustJSON(t, got[i][j].Result))
					if ws != gs {
						t.Errorf("load %d command %d (%s):\n got %s\nwant %s", i, j,
							s.loads[i][j].TxnID, gs, ws)
					}
				}
			}
			if d := diffLines(wantState, gotState); d != "" {
				t.Errorf("ledger state differs (- command path, + set-based):\n%s", d)
			}
		})
	}
}
