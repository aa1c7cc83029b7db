package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// An enrollment dated in the future is refused naming enrolled_at, as an
// accrual dated in the future is; one dated in the past is taken as given.
func TestEnrollmentInTheFutureIsRefused(t *testing.T) {
	f := newFixture(t, core.Program{})
	future := f.now.AddDate(4, 0, 0)
	r := f.do(core.KindEnroll, "ana", f.txn(), core.Enroll{EnrolledAt: &future})
	wantRefused(t, r, core.Invalid, "enrolled_at")
	if _, err := f.l.Member(t.Context(), f.prog, "ana"); core.KindOf(err) != core.NotFound {
		t.Fatalf("member after the refused enrollment: %v, want not found", err)
	}

	past := f.now.AddDate(-1, 0, 0)
	f.ok(core.KindEnroll, "ana", core.Enroll{EnrolledAt: &past})
	m, err := f.l.Member(t.Context(), f.prog, "ana")
	if err != nil || !m.EnrolledAt.Equal(past.Truncate(time.Microsecond)) {
		t.Fatalf("member %+v, %v; want enrolled at %s", m, err, past)
	}
}
