package main

import (
	"strings"
	"testing"
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
