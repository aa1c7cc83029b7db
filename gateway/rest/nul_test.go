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
