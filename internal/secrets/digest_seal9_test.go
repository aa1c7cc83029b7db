package secrets

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestDigest: a keyed digest is the same for the same secret, record and
// current key; it changes with any of them, names the key, holds neither
// the secret nor its plain SHA-256, and needs a key.
func TestDigest(t *testing.T) {
	k, text, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, otherText, _ := Generate()
	ad := []byte("record-1")
	d, err := k.Digest("hunter2", ad)
	if err != nil {
		t.Fatal(err)
	}
	plain := sha256.Sum256([]byte("hunter2"))
	if !strings.HasPrefix(d, k.IDs()[0]+":") || strings.Contains(d, "hunter2") ||
		strings.Contains(d, hex.EncodeToString(plain[:])) {
		t.Fatalf("digest %q, want the key id and no trace of the secret", d)
	}
	if again, _ := k.Digest("hunter2", ad); again != d {
		t.Fatalf("the same digest twice: %q then %q", d, again)
	}
	// The last key, the oldest kept, decides: a rotation that puts a new
	// key first keeps the digest; a ring that ends with another key, or
	// the new key alone once the old one is dropped, changes it.
	rotated, _ := Parse(otherText + "," + text)
	kept, _ := Parse(text + "," + otherText)
	for name, got := range map[string][2]string{
		"another secret":   {digest(t, k, "hunter3", ad), "diff"},
		"another record":   {digest(t, k, "hunter2", []byte("record-2")), "diff"},
		"another key":      {digest(t, other, "hunter2", ad), "diff"},
		"a new key first":  {digest(t, rotated, "hunter2", ad), "same"},
		"another key last": {digest(t, kept, "hunter2", ad), "diff"},
		// The length of the record comes first: moving bytes between the
		// record and the secret changes the digest.
		"bytes moved": {digest(t, k, "2", []byte("record-1hunter")), "diff"},
	} {
		if (got[0] == d) != (got[1] == "same") {
			t.Errorf("%s: %q against %q, want %s", name, got[0], d, got[1])
		}
	}
	var none *Keyring
	if _, err := none.Digest("hunter2", ad); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no keyring: %v, want ErrNoKey", err)
	}
}

func digest(t *testing.T, k *Keyring, plain string, ad []byte) string {
	t.Helper()
	d, err := k.Digest(plain, ad)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
