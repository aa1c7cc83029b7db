package postgres

import (
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// accruePayloads are accrual payloads as gateways write them and as other
// producers might: each must decode exactly as encoding/json decodes it.
var accruePayloads = []string{
	`{"event_type":"purchase","amount":"25.50"}`,
	`{"event_type":"purchase","amount":"25","currency":"EUR","partner":"shop-1"}`,
	`{"event_type":"topup"}`,
	`{"event_type":"purchase","partner":"shop-1"}`,
	`{"event_type":"purchase","amount":"25"}  ` + "\n",
	`{"amount":"25","event_type":"purchase"}`,
	`{"event_type":"purchase","amount":"25","event_type":"bill"}`,
	`{"Event_Type":"purchase","amount":"25"}`,
	`{"event_type":"pur\u0063hase","amount":"25"}`,
	`{"event_type":"purchase","amount":25}`,
	`{"event_type":"purchase","amount":"25","points":10}`,
	`{"event_type":"purchase","amount":"25"}{}`,
	`{"event_type":"purchase","amount":"25"} x`,
	`{"event_type":"purchase", "amount":"25"}`,
	`{"event_type":null,"amount":"25"}`,
	`{"event_type":"caf` + "\xe9" + `","amount":"1"}`,
	`{"event_type":"café","amount":"1"}`,
	`{"event_type":"purchase","amount":"25"`,
	`{"event_type":"purchase","amount":""}`,
	`[]`,
	``,
}

func TestDecodeAccrueAsEncodingJSON(t *testing.T) {
	for _, p := range accruePayloads {
		checkDecodeAccrue(t, []byte(p))
	}
}

func FuzzDecodeAccrue(f *testing.F) {
	for _, p := range accruePayloads {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkDecodeAccrue(t, raw) })
}

// checkDecodeAccrue fails when decodeAccrue and decode disagree on raw:
// on the value read, or on whether it is refused and for which field.
func checkDecodeAccrue(t *testing.T, raw []byte) {
	t.Helper()
	var fast, slow core.Accrue
	ferr, serr := decodeAccrue(raw, &fast), decode(raw, &slow)
	if (ferr == nil) != (serr == nil) {
		t.Fatalf("%q: decodeAccrue error %v, decode error %v", raw, ferr, serr)
	}
	if ferr != nil {
		if ferr.Error() != serr.Error() {
			t.Fatalf("%q: decodeAccrue error %q, decode error %q", raw, ferr, serr)
		}
		return
	}
	if fast != slow {
		t.Fatalf("%q: decodeAccrue read %+v, decode %+v", raw, fast, slow)
	}
}
