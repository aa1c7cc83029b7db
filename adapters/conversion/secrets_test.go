package conversion

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// exactSecret has the characters a careless encoding would change.
const exactSecret = "s3cr3t/+=_Tok:en-Zq81 ~!"

// recorder is a partner that confirms every credit and records the
// Authorization header of each request that reaches it.
type recorder struct {
	mu   sync.Mutex
	auth []string
	srv  *httptest.Server
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		rec.mu.Lock()
		rec.auth = append(rec.auth, r.Header.Get("Authorization"))
		rec.mu.Unlock()
		var in creditBody
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&in) != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answerBody{TxnID: in.TxnID, Status: "confirmed",
			Reference: "REC-" + in.TxnID[len(in.TxnID)-6:]})
	})) // listens on 127.0.0.1
	t.Cleanup(rec.srv.Close)
	return rec
}

// calls returns the Authorization headers received so far.
func (rec *recorder) calls() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.auth...)
}

// column is the credentials column of an external program, as a database
// dump shows it.
func (e *env) column(program, code string) string {
	e.t.Helper()
	var v string
	err := e.ledger.Pool().QueryRow(context.Background(), `SELECT e.credentials
		FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE p.code = $1 AND e.code = $2`, program, code).Scan(&v)
	if err != nil {
		e.t.Fatalf("read the credentials column: %v", err)
	}
	return v
}

// TestPartnerGetsTheExactSecret: the database holds the secret encrypted,
// and the partner receives it exactly as configured.
func TestPartnerGetsTheExactSecret(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder(t)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = rec.srv.URL, exactSecret
	const member, account = "56911111112", "CL100001"
	prog := e.program(ext, member, 5000)
	if v := e.column(prog, ext.Code); !strings.HasPrefix(v, "enc:v1:") ||
		strings.Contains(v, exactSecret) {
		t.Fatalf("stored credentials %q, want them encrypted", v)
	}

	c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: account})
	w := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
		t.Fatalf("conversion %s (%q), want confirmed", got.Status, got.LastError)
	}
	if got := rec.calls(); len(got) != 1 || got[0] != "Bearer "+exactSecret {
		t.Fatalf("the partner received %q, want one call with Bearer %q", got, exactSecret)
	}
	e.check()
}

// TestLegacyPlainCredentialsConvert: credentials stored in plain text
// before encryption still reach the partner, before and after the seal
// pass the core runs at start encrypts them.
func TestLegacyPlainCredentialsConvert(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder(t)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint = rec.srv.URL
	const member = "56911111113"
	prog := e.program(ext, member, 5000)
	_, err := e.ledger.Pool().Exec(context.Background(), `UPDATE external_programs e
		SET credentials = $2 FROM programs p WHERE p.id = e.program_id AND p.code = $1`,
		prog, exactSecret)
	if err != nil {
		t.Fatal(err)
	}
	w := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})

	for i, account := range []string{"CL100002", "CL100003"} {
		if i == 1 {
			if n, err := e.ledger.SealCredentials(context.Background()); err != nil || n != 1 {
				t.Fatalf("seal pass: %d, %v; want 1", n, err)
			}
			if v := e.column(prog, ext.Code); !strings.HasPrefix(v, "enc:v1:") ||
				strings.Contains(v, exactSecret) {
				t.Fatalf("after the seal pass the column holds %q", v)
			}
		}
		c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
			AccountID: account})
		if _, err := w.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
			t.Fatalf("conversion %d: %s (%q), want confirmed", i+1, got.Status, got.LastError)
		}
		if got := rec.calls(); len(got) != i+1 || got[i] != "Bearer "+exactSecret {
			t.Fatalf("conversion %d: the partner received %q", i+1, got)
		}
	}
	e.check()
}

// TestUndecryptableCredentialsWait: when the worker's key does not open
// the stored credentials (another key, or none), it calls nobody: the
// conversion stays pending with its points held and a reason that names
// the external program and the setting, the log says so without the secret
// or the stored value, and the right key settles it later.
func TestUndecryptableCredentialsWait(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder(t)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = rec.srv.URL, exactSecret
	other, _, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}

	for i, tc := range []struct {
		name string
		keys *secrets.Keyring
		want string
	}{
		{"another key", other, "sealed with a key that is not configured"},
		{"no key", nil, "no secrets key is configured"},
	} {
		member := "5692222222" + string(rune('0'+i))
		prog := e.program(ext, member, 5000)
		stored := e.column(prog, ext.Code)
		c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
			AccountID: "CL20000" + string(rune('0'+i))})

		var logs bytes.Buffer
		wrong := postgres.New(e.ledger.Pool(), slog.New(slog.DiscardHandler))
		wrong.Clock, wrong.Secrets = e.clock, tc.keys
		w := New(wrong, slog.New(slog.NewTextHandler(&logs, nil)),
			Options{HTTP: testHTTP, Clock: e.clock})
		if _, err := w.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := e.conversion(prog, member, c.ID)
		if got.Status != core.ConversionPending || got.Attempts != 1 ||
			!strings.Contains(got.LastError, prog+"/"+ext.Code) ||
			!strings.Contains(got.LastError, "cannot be decrypted") ||
			!strings.Contains(got.LastError, tc.want) ||
			!strings.Contains(got.LastError, "PUNTOS_SECRETS_KEY") {
			t.Fatalf("%s: %s after %d attempts, reason %q; want pending after 1, the reason "+
				"naming %s/%s, %q and the setting", tc.name, got.Status, got.Attempts,
				got.LastError, prog, ext.Code, tc.want)
		}
		if calls := rec.calls(); len(calls) != i {
			t.Fatalf("%s: the partner was called (%d calls, want %d)", tc.name, len(calls), i)
		}
		e.wantBalance(prog, member, 4000, 1000)
		body := stored[strings.LastIndex(stored, ":")+1:]
		if out := logs.String(); !strings.Contains(out, "External program unusable") ||
			!strings.Contains(out, tc.want) || strings.Contains(out, exactSecret) ||
			strings.Contains(out, body) || strings.Contains(got.LastError, body) {
			t.Fatalf("%s: log %q; want the cause without the secret or the stored value",
				tc.name, out)
		}

		// With the right key, the next attempt delivers.
		e.advance(time.Hour)
		right := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
		if _, err := right.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
			t.Fatalf("%s: with the right key %s (%q), want confirmed", tc.name, got.Status,
				got.LastError)
		}
		if calls := rec.calls(); len(calls) != i+1 || calls[i] != "Bearer "+exactSecret {
			t.Fatalf("%s: the partner received %q", tc.name, calls)
		}
	}
	e.check()
}
