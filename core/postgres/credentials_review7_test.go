package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// TestSealedValueSentBackKeepsTheSecret: the back office of the version
// before encryption kept a secret by reading the credentials column
// (PartnerConfig then returned it as stored) and sending it back in the
// upsert. During a rolling upgrade such a gateway sends the sealed value
// itself; it must not be sealed a second time as if it were a new secret,
// or the adapter would send the sealed text to the partner as its token.
// A sealed value of another row is no such echo: it is taken as the secret
// it was given as.
func TestSealedValueSentBackKeepsTheSecret(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	f.ok(core.KindExternalUpsert, "latam", airline("latam", "latam-token"))

	// What the earlier back office sent for a ratio change with the
	// credentials field left blank.
	echoed := airline("skymiles", f.storedCredentials("skymiles"))
	echoed.Ratio = "0.75"
	f.ok(core.KindExternalUpsert, "skymiles", echoed)
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("after an upsert that sent the stored value back: the adapter would send "+
			"%q, want %q", got, partnerToken)
	}
	wantSealed(t, f.storedCredentials("skymiles"), l.Secrets.IDs()[0], partnerToken)

	// latam's sealed value given to skymiles opens for latam only: it is a
	// secret like any other for skymiles.
	foreign := f.storedCredentials("latam")
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", foreign))
	if got := f.partnerConfig("skymiles"); got != foreign {
		t.Fatalf("a sealed value of another row given as the secret: %q, want it as given",
			got)
	}
	if got := f.partnerConfig("latam"); got != "latam-token" {
		t.Fatalf("latam: %q", got)
	}
	if _, err := l.PartnerConfig(context.Background(), f.prog, "skymiles"); err != nil {
		t.Fatal(err)
	}
}
