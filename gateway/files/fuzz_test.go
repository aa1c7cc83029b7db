package files

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/puntos-loyalty/puntos/core"
)

// FuzzReader: whatever the file and its declared format, the bulk reader
// never panics; a file it cannot read is refused as invalid naming a field;
// a line it accepts is one the ledger may post; a line it refuses names the
// field at fault.
func FuzzReader(f *testing.F) {
	loc := time.FixedZone("CLT", -3*3600)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data, charset, dates string) {
		format, err := ParseFormat(charset, dates)
		if err != nil {
			if de, ok := core.AsError(err); !ok || de.Kind != core.Invalid || de.Field == "" {
				t.Fatalf("ParseFormat(%q, %q): %v", charset, dates, err)
			}
			return
		}
		rd, err := newReader(strings.NewReader(data), format, loc, now)
		if err != nil {
			if de, ok := core.AsError(err); !ok || de.Kind != core.Invalid || de.Field == "" {
				t.Fatalf("newReader: %v is not an invalid error naming a field", err)
			}
			return
		}
		for range 10_000 {
			x, err := rd.next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("next: %v", err)
			}
			if x.Status != core.LineValid {
				if x.Status != core.LineInvalid || x.ErrorField == "" || x.Error == "" {
					t.Fatalf("line %d refused without a field: %+v", x.Line, x)
				}
				continue
			}
			if !core.ValidRef(x.Member) || !core.ValidRef(x.TxnID) || x.Points == 0 ||
				x.Points > core.MaxPoints || x.Points < -core.MaxPoints ||
				strings.TrimSpace(x.Reason) == "" || !utf8.ValidString(x.Reason) {
				t.Fatalf("line %d accepted: %+v", x.Line, x)
			}
			if x.ExpiresAt != nil && (x.Points < 0 || !x.ExpiresAt.After(now)) {
				t.Fatalf("line %d accepted with expiry: %+v", x.Line, x)
			}
		}
	})
}
