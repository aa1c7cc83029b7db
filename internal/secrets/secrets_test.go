package secrets

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, _, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("row 1")
	sealed, err := k.Seal("partner token", ad)
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(sealed) || !strings.HasPrefix(sealed, "enc:v1:"+k.IDs()[0]+":") ||
		strings.Contains(sealed, "partner token") || !k.Current(sealed) {
		t.Fatalf("sealed value %q", sealed)
	}
	if got, err := k.Open(sealed, ad); err != nil || got != "partner token" {
		t.Fatalf("open: %q %v", got, err)
	}
	if got := KeyID(sealed); got != k.IDs()[0] {
		t.Fatalf("KeyID of a sealed value: %q, want %q", got, k.IDs()[0])
	}
	if got := KeyID("partner token"); got != "" {
		t.Fatalf("KeyID of a plain value: %q, want none", got)
	}

	// One byte of the ciphertext changed.
	i := strings.LastIndex(sealed, ":") + 1
	raw, _ := base64.StdEncoding.DecodeString(sealed[i:])
	raw[len(raw)-1] ^= 1
	tampered := sealed[:i] + base64.StdEncoding.EncodeToString(raw)

	other, _, _ := Generate()
	var none *Keyring
	for _, tc := range []struct {
		name   string
		k      *Keyring
		sealed string
		ad     string
		want   error
	}{
		{"other record", k, sealed, "row 2", ErrOpen},
		{"tampered", k, tampered, "row 1", ErrOpen},
		{"other key", other, sealed, "row 1", ErrUnknownKey},
		{"no key", none, sealed, "row 1", ErrNoKey},
		{"unknown version", k, "enc:v9:" + sealed[7:], "row 1", ErrMalformed},
		{"not base64", k, sealed[:i] + "***", "row 1", ErrMalformed},
		{"too short", k, sealed[:i] + "AAAA", "row 1", ErrMalformed},
	} {
		got, err := tc.k.Open(tc.sealed, []byte(tc.ad))
		if !errors.Is(err, tc.want) || got != "" {
			t.Errorf("%s: %q %v, want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := none.Seal("x", ad); !errors.Is(err, ErrNoKey) {
		t.Errorf("seal without a key: %v", err)
	}
}
