package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// Instants read through Open come back in UTC, alone and in arrays,
// whatever zone the process runs in, so that an answer prints every
// instant the same way (Z), those read from the ledger and those made in Go.
func TestOpenReadsInstantsInUTC(t *testing.T) {
	ctx := context.Background()
	pool, err := Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var one time.Time
	var many []time.Time
	err = pool.QueryRow(ctx, `SELECT '2026-03-01 10:00:00-03'::timestamptz,
		ARRAY['2026-03-01 10:00:00-03', '2026-07-01 00:00:00+02']::timestamptz[]`).
		Scan(&one, &many)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 30, 22, 0, 0, 0, time.UTC)}
	if one.Location() != time.UTC || !one.Equal(want[0]) ||
		one.Format(time.RFC3339) != "2026-03-01T13:00:00Z" {
		t.Errorf("timestamptz read as %s (%v), want 2026-03-01T13:00:00Z in UTC",
			one.Format(time.RFC3339), one.Location())
	}
	if len(many) != 2 {
		t.Fatalf("array read as %v", many)
	}
	for i, got := range many {
		if got.Location() != time.UTC || !got.Equal(want[i]) {
			t.Errorf("array element %d read as %s (%v), want %s in UTC", i,
				got.Format(time.RFC3339), got.Location(), want[i].Format(time.RFC3339))
		}
	}
}
