package rest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// contractKeyring is the secrets key of the contract tests' reader: the
// documented examples set a partner secret, which a gateway seals with its
// ledger's key before it publishes.
var contractKeyring = func() *secrets.Keyring {
	k, _, err := secrets.Generate()
	if err != nil {
		panic(err)
	}
	return k
}()

func (contractReader) SecretsKeyring() *secrets.Keyring { return contractKeyring }

// keylessReader is contractReader without a secrets key.
type keylessReader struct{ Reader }

// TestRESTSealsCredentials: the command a PUT of an external program puts on
// the bus carries its secret sealed for the command, and a gateway whose
// reader holds no key refuses the secret, naming the setting, and
// publishes nothing; without a secret it needs no key.
func TestRESTSealsCredentials(t *testing.T) {
	const secret = "hunter2-rest"
	body := `{"name":"SkyMiles","ratio":"0.5","endpoint":"https://127.0.0.1:9/api",` +
		`"credentials":"` + secret + `"}`
	put := func(router http.Handler, txn, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPut, "/v1/programs/movil/external/skymiles",
			strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+contractKey)
		req.Header.Set("Idempotency-Key", txn)
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		return w
	}

	b := &contractBus{answer: true}
	router, _ := newContractServer(b, contractReader{}, 2*time.Second)
	if w := put(router, "seal-1", body); w.Code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", w.Code, w.Body)
	}
	sent := b.take()
	if len(sent) != 1 || strings.Contains(string(sent[0].Payload), secret) {
		t.Fatalf("sent %+v, want one command without the secret in clear", sent)
	}
	var out core.ExternalProgram
	if err := json.Unmarshal(sent[0].Payload, &out); err != nil {
		t.Fatal(err)
	}
	plain, err := contractKeyring.Open(out.Credentials, core.CommandCredentialsAD("movil",
		"skymiles"))
	if err != nil || plain != secret {
		t.Fatalf("the sent credentials open to %q (%v), want the secret", plain, err)
	}

	b = &contractBus{answer: true}
	router, _ = newContractServer(b, keylessReader{contractReader{}}, 2*time.Second)
	w := put(router, "seal-2", body)
	if w.Code != http.StatusServiceUnavailable ||
		!strings.Contains(w.Body.String(), "PUNTOS_SECRETS_KEY") ||
		!strings.Contains(w.Body.String(), `"field":"credentials"`) ||
		strings.Contains(w.Body.String(), secret) {
		t.Fatalf("PUT through a gateway without a key: %d %s, want 503 on credentials "+
			"naming PUNTOS_SECRETS_KEY", w.Code, w.Body)
	}
	if sent := b.take(); len(sent) != 0 {
		t.Fatalf("a gateway without a key published %d commands", len(sent))
	}
	masked := strings.Replace(body, secret, core.Masked, 1)
	if w := put(router, "seal-3", masked); w.Code != http.StatusCreated {
		t.Fatalf("PUT keeping the stored secret without a key: %d %s", w.Code, w.Body)
	}
}
