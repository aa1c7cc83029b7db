package core

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// TestSealCommandCredentials: what the gateway hashes and sends for an
// external program's upsert. A payload without a secret is left as it is;
// a secret is a keyed digest in what is hashed (the same on a retry, not
// the same for another secret, key or external program) and sealed in what
// is sent; without a key a secret is refused, naming the setting.
func TestSealCommandCredentials(t *testing.T) {
	k, _, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "hunter2"
	body := func(cred string) []byte {
		return []byte(`{"name":"SkyMiles","ratio":"0.5","credentials":` + cred + `}`)
	}
	for _, tc := range []struct{ name, payload string }{
		{"left out", `{"name":"SkyMiles","ratio":"0.5"}`},
		{"null", string(body("null"))},
		{"empty", string(body(`""`))},
		{"masked", string(body(`"` + Masked + `"`))},
	} {
		for _, key := range []*secrets.Keyring{k, nil} {
			hashed, sent, err := SealCommandCredentials(key, "telco", "skymiles",
				[]byte(tc.payload))
			if err != nil || string(hashed) != tc.payload || string(sent) != tc.payload {
				t.Fatalf("%s (key %v): %s %s %v, want the payload as it is", tc.name,
					key != nil, hashed, sent, err)
			}
		}
	}

	in := body(`"` + secret + `"`)
	hashed, sent, err := SealCommandCredentials(k, "telco", "skymiles", in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(hashed), secret) || strings.Contains(string(sent), secret) {
		t.Fatalf("the secret in clear: hashed %s, sent %s", hashed, sent)
	}
	var out struct{ Name, Credentials string }
	if err := json.Unmarshal(sent, &out); err != nil || out.Name != "SkyMiles" {
		t.Fatalf("sent %s: %v", sent, err)
	}
	if plain, err := k.Open(out.Credentials, CommandCredentialsAD("telco",
		"skymiles")); err != nil || plain != secret {
		t.Fatalf("sent credentials open to %q (%v), want the secret", plain, err)
	}
	again, sentAgain, _ := SealCommandCredentials(k, "telco", "skymiles", in)
	if string(again) != string(hashed) || string(sentAgain) == string(sent) {
		t.Fatalf("a retry: hashed %s then %s (want equal), sent equal %v (want a fresh "+
			"nonce)", hashed, again, string(sentAgain) == string(sent))
	}
	other, _, _ := secrets.Generate()
	for name, h := range map[string]func() ([]byte, []byte, error){
		"another secret": func() ([]byte, []byte, error) {
			return SealCommandCredentials(k, "telco", "skymiles", body(`"hunter3"`))
		},
		"another key": func() ([]byte, []byte, error) {
			return SealCommandCredentials(other, "telco", "skymiles", in)
		},
		"another external program": func() ([]byte, []byte, error) {
			return SealCommandCredentials(k, "telco", "latam", in)
		},
	} {
		if got, _, err := h(); err != nil || string(got) == string(hashed) {
			t.Fatalf("%s: hashed %s (%v), want it to differ from %s", name, got, err, hashed)
		}
	}

	_, _, err = SealCommandCredentials(nil, "telco", "skymiles", in)
	if ce, ok := AsError(err); !ok || ce.Kind != Unavailable || ce.Field != "credentials" ||
		!strings.Contains(ce.Message, "PUNTOS_SECRETS_KEY") {
		t.Fatalf("no key: %v, want unavailable on credentials naming PUNTOS_SECRETS_KEY", err)
	}
}
