package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A read of a member names the program when the program is unknown, and
// the member when the program exists but the member does not.
func TestMemberReadsNameWhatIsMissing(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m-1")
	ctx := context.Background()
	reads := map[string]func(program, ref string) error{
		"Member": func(p, r string) error { _, err := f.l.Member(ctx, p, r); return err },
		"Balance": func(p, r string) error {
			_, err := f.l.Balance(ctx, p, r)
			return err
		},
		"BalanceSummary": func(p, r string) error {
			_, err := f.l.BalanceSummary(ctx, p, r)
			return err
		},
		"Conversions": func(p, r string) error {
			_, err := f.l.Conversions(ctx, p, r, "", 10)
			return err
		},
	}
	for name, read := range reads {
		for _, tc := range []struct{ program, ref, field string }{
			{"no-such-program", "m-1", "program"},
			{f.prog, "m-2", "member"},
		} {
			err := read(tc.program, tc.ref)
			var derr *core.Error
			if !errors.As(err, &derr) || derr.Kind != core.NotFound || derr.Field != tc.field {
				t.Errorf("%s(%s, %s): %v, want not_found on %s", name, tc.program, tc.ref, err,
					tc.field)
			}
		}
		if err := read(f.prog, "m-1"); err != nil {
			t.Errorf("%s of an enrolled member: %v", name, err)
		}
	}
}
