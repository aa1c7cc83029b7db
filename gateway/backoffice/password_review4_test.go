package backoffice

import (
	"strings"
	"testing"
)

// Six accented letters typed decomposed (NFD: each a base letter and a
// combining accent, as some keyboards, input methods and copy-pastes from
// macOS file names give them) are still six characters: the minimum of 12
// characters must refuse them, as it refuses the same six letters
// precomposed. passwordProblem's first form counted code points, so the
// decomposed form (12 code points, 18 bytes) passed as "12 characters"; it
// now counts them once composed (NFC).
func TestReview4DecomposedAccentsAreNotTwiceAsLong(t *testing.T) {
	nfc := "ñáéíóú"
	nfd := "n\u0303a\u0301e\u0301i\u0301o\u0301u\u0301"
	if got := passwordProblem(nfc); !strings.Contains(got, "at least 12 characters") {
		t.Fatalf("6 precomposed accented letters: %q, want refused as under 12 characters",
			got)
	}
	if got := passwordProblem(nfd); !strings.Contains(got, "at least 12 characters") {
		t.Errorf("the same 6 accented letters, decomposed (NFD, %d bytes): %q, want "+
			"\"must be at least 12 characters\"", len(nfd), got)
	}
}

// The bounds as the commit states them, pinned (these pass): the least in
// characters, the most in bytes, on every string a form or the command line
// may carry.
func TestReview4PasswordBounds(t *testing.T) {
	for _, c := range []struct {
		p    string
		want string // substring of the problem, "" when taken
	}{
		{strings.Repeat("a", 11), "at least 12 characters"},
		{strings.Repeat("a", 12), ""},
		{strings.Repeat("a", 72), ""},
		{strings.Repeat("a", 73), "at most 72 bytes"},
		{strings.Repeat("ñ", 36), ""},                       // 36 characters, 72 bytes
		{strings.Repeat("ñ", 36) + "a", "at most 72 bytes"}, // 73 bytes
		{strings.Repeat("ñ", 11), "at least 12 characters"},
		{"ñandú-ñandú!", ""},
		{strings.Repeat("€", 12), ""},                 // 36 bytes
		{strings.Repeat("€", 25), "at most 72 bytes"}, // 75 bytes
		{"contrase\xf1a-12", ""},                      // Latin-1 from a terminal: 13 bytes
	} {
		got := passwordProblem(c.p)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("passwordProblem(%q) = %q, want %q", c.p, got, c.want)
		}
	}
}
