package rest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// PostgreSQL cannot store NUL in text: a body that carries one must be
// refused at the gateway, or its command would fail in the ledger forever.
func TestBodyWithNULIsRefused(t *testing.T) {
	for body, refused := range map[string]bool{
		`{"type":"top_up","partner":"bad\u0000"}`:     true,
		`{"type":"top\u0000up"}`:                      true,
		`{"type":"a\\u0000"}`:                         false, // a backslash, then text
		`{"type":"a\\\u0000"}`:                        true,
		`{"type":"top_up","partner":"\u00e9t\u00e9"}`: false,
	} {
		var in eventBody
		err := decodeBody(&http.Request{Body: io.NopCloser(strings.NewReader(body))}, &in)
		if !refused {
			if err != nil {
				t.Errorf("%s: refused (%v), want accepted", body, err)
			}
			continue
		}
		e, ok := core.AsError(err)
		if !ok || e.Kind != core.Invalid || e.Field != "body" ||
			!strings.Contains(e.Message, "NUL") {
			t.Errorf("%s: got %v, want invalid body naming NUL", body, err)
		}
	}
}
