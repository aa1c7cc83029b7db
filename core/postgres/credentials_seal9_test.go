package postgres

import (
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestCredentialsSealedByTheGateway: the ledger opens credentials the
// gateway sealed for the command and stores the secret sealed for its row,
// as it stores one an earlier gateway sent in clear. A value sealed with a
// key the ledger does not hold, or reaching a ledger with no key, is
// refused naming PUNTOS_SECRETS_KEY, and the stored secret stays: stored as
// given, the sealed text would become the partner's token.
func TestCredentialsSealedByTheGateway(t *testing.T) {
	l := isolatedLedger(t)
	k := keyring(t)
	l.Secrets = k
	f := newFixtureOn(t, l, core.Program{})
	inTransit := func(key interface {
		Seal(string, []byte) (string, error)
	}, code, plain string) string {
		t.Helper()
		v, err := key.Seal(plain, core.CommandCredentialsAD(f.prog, code))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles",
		inTransit(k, "skymiles", partnerToken)))
	wantSealed(t, f.storedCredentials("skymiles"), k.IDs()[0], partnerToken)
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("partner config: %q, want %q", got, partnerToken)
	}
	kept := f.storedCredentials("skymiles")

	// A gateway with another key, and a ledger with none.
	other := keyring(t)
	for _, tc := range []struct {
		name string
		l    *Ledger
		want string
	}{
		{"another key", l, "key id " + other.IDs()[0]},
		{"no key", sameDB(l, nil), "no secrets key is configured"},
	} {
		f.l = tc.l
		v := inTransit(other, "skymiles", "new-token")
		r := f.do(core.KindExternalUpsert, "skymiles", f.txn(), airline("skymiles", v))
		if r.Status != bus.StatusRejected || r.Error == nil ||
			r.Error.Kind != string(core.Unavailable) || r.Error.Field != "credentials" ||
			!strings.Contains(r.Error.Message, "PUNTOS_SECRETS_KEY") ||
			!strings.Contains(r.Error.Message, tc.want) ||
			strings.Contains(r.Error.Message, sealedBody(v)) {
			t.Fatalf("%s: %s %+v, want refused as unavailable on credentials, naming "+
				"PUNTOS_SECRETS_KEY and %q", tc.name, r.Status, r.Error, tc.want)
		}
		if got := f.storedCredentials("skymiles"); got != kept {
			t.Fatalf("%s: the stored credentials changed to %q", tc.name, got)
		}
	}
	f.l = l
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("partner config after the refusals: %q, want %q", got, partnerToken)
	}
}
