package rest

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// PostgreSQL cannot store NUL in text: a body that carries one must be
// refused at the gateway, or its command would fail in the ledger forever.
func TestBodyWithNULIsRefused(t *testing.T) {
	for body, field := range map[string]string{
		`{"type":"top_up","partner":"bad\u0000"}`:     "partner",
		`{"type":"top\u0000up"}`:                      "type",
		`{"type":"a\\u0000"}`:                         "", // a backslash, then text
		`{"type":"a\\\u0000"}`:                        "type",
		`{"type":"top_up","partner":"\u00e9t\u00e9"}`: "",
	} {
		refused := field != ""
		var in eventBody
		err := decodeBody(&http.Request{Body: io.NopCloser(strings.NewReader(body))}, &in)
		if !refused {
			if err != nil {
				t.Errorf("%s: refused (%v), want accepted", body, err)
			}
			continue
		}
		e, ok := core.AsError(err)
		if !ok || e.Kind != core.Invalid || e.Field != field ||
			!strings.Contains(e.Message, "NUL") {
			t.Errorf("%s: got %v, want %s refused for its NUL", body, err, field)
		}
	}
}

// The zero time would pass for "occurred_at not sent" and become now.
func TestZeroOccurredAtIsRefused(t *testing.T) {
	zero := time.Time{}
	if e, ok := core.AsError(checkOccurred(&zero)); !ok || e.Field != "occurred_at" {
		t.Fatalf("zero occurred_at: %v, want refused naming occurred_at", e)
	}
	at := time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)
	if err := checkOccurred(&at); err != nil {
		t.Fatalf("a real occurred_at: %v", err)
	}
	if err := checkOccurred(nil); err != nil {
		t.Fatalf("no occurred_at: %v", err)
	}
}
