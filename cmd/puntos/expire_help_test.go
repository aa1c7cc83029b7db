package main

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// puntos expire --help names its own --at flag beside the settings.
func TestExpireHelpNamesAt(t *testing.T) {
	out, _ := puntosCLI(t, "expire", "--help")
	for _, want := range []string{"-at string", "RFC 3339", "-database-url"} {
		if !strings.Contains(out, want) {
			t.Errorf("puntos expire --help does not mention %q:\n%s", want, out)
		}
	}
}

// puntos expire refuses an --at even half a minute ahead (up to a minute
// used to pass, and expired points still good, with postings dated in the
// future), and sweeps as of an instant just past.
func TestExpireRefusesAFutureInstant(t *testing.T) {
	db := testenv.Database(t)
	ahead := time.Now().Add(30 * time.Second).UTC().Format(time.RFC3339)
	out, err := puntosCLI(t, "expire", "--database-url", db, "--at", ahead)
	if err == nil || !strings.Contains(err.Error(), "--at") ||
		!strings.Contains(err.Error(), "future") {
		t.Fatalf("expire --at %s: %v\n%s; want it refused as in the future", ahead, err, out)
	}
	past := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	out, err = puntosCLI(t, "expire", "--database-url", db, "--at", past)
	if err != nil || !strings.Contains(out, "Swept 0 members") {
		t.Fatalf("expire --at %s: %v\n%s; want an empty ledger swept", past, err, out)
	}
}
