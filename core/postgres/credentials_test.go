package postgres

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// The credentials of external programs are stored encrypted; these tests
// read the column itself, as a database dump would show it.

const partnerToken = "tok-Zq81-partner-secret"

// keyring makes a fresh random key for a test.
func keyring(t *testing.T) *secrets.Keyring {
	t.Helper()
	k, _, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sameDB is another Ledger on l's database, with keys k (nil: none).
func sameDB(l *Ledger, k *secrets.Keyring) *Ledger {
	other := New(l.Pool(), slog.New(slog.DiscardHandler))
	other.Clock, other.Secrets = l.Clock, k
	return other
}

// airline is an external program of the HTTP flavour with credentials.
func airline(code, credentials string) core.ExternalProgram {
	return core.ExternalProgram{Code: code, Name: "Airline " + code, Ratio: "0.5",
		Flavour: core.FlavourHTTP, Endpoint: "https://127.0.0.1:9/api",
		Credentials: credentials}
}

// storedCredentials is the credentials column of an external program.
func (f *fixture) storedCredentials(code string) string {
	f.t.Helper()
	var v string
	err := f.l.Pool().QueryRow(context.Background(), `SELECT e.credentials
		FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE p.code = $1 AND e.code = $2`, f.prog, code).Scan(&v)
	if err != nil {
		f.t.Fatalf("read the credentials column of %s: %v", code, err)
	}
	return v
}

// setStoredCredentials writes the column directly: a row from before
// encryption, or a value copied by someone with write access to the table.
func (f *fixture) setStoredCredentials(code, v string) {
	f.t.Helper()
	tag, err := f.l.Pool().Exec(context.Background(), `UPDATE external_programs e
		SET credentials = $3 FROM programs p
		WHERE p.id = e.program_id AND p.code = $1 AND e.code = $2`, f.prog, code, v)
	if err != nil || tag.RowsAffected() != 1 {
		f.t.Fatalf("write the credentials column of %s: %v (%d rows)", code, err,
			tag.RowsAffected())
	}
}

// partnerConfig is what the conversion adapter reads, or fails the test.
func (f *fixture) partnerConfig(code string) string {
	f.t.Helper()
	e, err := f.l.PartnerConfig(context.Background(), f.prog, code)
	if err != nil {
		f.t.Fatalf("partner config of %s: %v", code, err)
	}
	return e.Credentials
}

// wantSealed fails unless v is a value sealed with key id, holding no trace
// of the plain secret.
func wantSealed(t *testing.T, v, id, plain string) {
	t.Helper()
	if !strings.HasPrefix(v, "enc:v1:"+id+":") || strings.Contains(v, plain) {
		t.Fatalf("stored credentials %q, want enc:v1:%s:... without the secret", v, id)
	}
}

// sealedBody is the ciphertext part of a sealed value.
func sealedBody(v string) string { return v[strings.LastIndex(v, ":")+1:] }

// TestCredentialsStoredEncrypted: the column holds a sealed value naming
// the key, never the secret; the adapter's read gets the exact secret back;
// every other read and the stored result show it masked.
func TestCredentialsStoredEncrypted(t *testing.T) {
	l := isolatedLedger(t)
	k := keyring(t)
	l.Secrets = k
	f := newFixtureOn(t, l, core.Program{})
	ctx := context.Background()

	r := f.do(core.KindExternalUpsert, "skymiles", f.txn(), airline("skymiles", partnerToken))
	if r.Status != bus.StatusOK || strings.Contains(string(r.Data), partnerToken) ||
		!strings.Contains(string(r.Data), `"credentials":"****"`) {
		t.Fatalf("upsert: %s %s %+v, want ok with the secret masked", r.Status, r.Data, r.Error)
	}
	first := f.storedCredentials("skymiles")
	wantSealed(t, first, k.IDs()[0], partnerToken)
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("partner config: credentials %q, want %q", got, partnerToken)
	}
	pub, err := l.ExternalProgram(ctx, f.prog, "skymiles")
	if err != nil || pub.Credentials != core.Masked {
		t.Fatalf("read: %+v %v, want the credentials masked", pub, err)
	}
	list, err := l.ExternalPrograms(ctx, f.prog)
	if err != nil || len(list) != 1 || list[0].Credentials != core.Masked {
		t.Fatalf("list: %+v %v, want one with the credentials masked", list, err)
	}

	// The same secret again is sealed with a fresh nonce: equal secrets do
	// not show as equal values.
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	if again := f.storedCredentials("skymiles"); again == first {
		t.Fatalf("the same secret stored twice gave the same value %q", again)
	}
}

// TestMaskedCredentialsKeepTheStoredOnes: an upsert that gives back "****"
// (what reads show; the back office sends it for a blank field) keeps the
// stored secret as it is, and stores none where there was none.
func TestMaskedCredentialsKeepTheStoredOnes(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})

	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	before := f.storedCredentials("skymiles")
	changed := airline("skymiles", core.Masked)
	changed.Ratio = "0.75"
	f.ok(core.KindExternalUpsert, "skymiles", changed)
	if after := f.storedCredentials("skymiles"); after != before {
		t.Fatalf("credentials after an upsert with %q: %q, want %q kept", core.Masked, after,
			before)
	}
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("partner config after the ratio change: %q, want %q", got, partnerToken)
	}

	// A new program has nothing to keep: the mask is refused, naming the
	// field, and nothing is stored (it would silently get no credentials).
	r := f.do(core.KindExternalUpsert, "newair", f.txn(), airline("newair", core.Masked))
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "credentials" ||
		r.Error.Kind != string(core.Invalid) {
		t.Fatalf("new program with %q: %s %+v, want rejected as invalid credentials",
			core.Masked, r.Status, r.Error)
	}
	var n int
	if err := f.l.Pool().QueryRow(context.Background(), `SELECT count(*)
		FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE p.code = $1 AND e.code = 'newair'`, f.prog).Scan(&n); err != nil || n != 0 {
		t.Fatalf("new program with %q stored %d rows (%v), want none", core.Masked, n, err)
	}
}

// TestLegacyPlainCredentials: a row written before encryption still works
// as plain text, and ends up encrypted: by the pass the core runs at start,
// or when an upsert keeps it.
func TestLegacyPlainCredentials(t *testing.T) {
	l := isolatedLedger(t)
	k := keyring(t)
	l.Secrets = k
	f := newFixtureOn(t, l, core.Program{})
	ctx := context.Background()
	for _, code := range []string{"skymiles", "latam", "none"} {
		f.ok(core.KindExternalUpsert, code, airline(code, ""))
	}
	f.setStoredCredentials("skymiles", partnerToken)
	f.setStoredCredentials("latam", "latam-plain-token")

	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("legacy row: partner config %q, want %q", got, partnerToken)
	}

	// An upsert keeping the secret encrypts it.
	f.ok(core.KindExternalUpsert, "latam", airline("latam", core.Masked))
	wantSealed(t, f.storedCredentials("latam"), k.IDs()[0], "latam-plain-token")
	if got := f.partnerConfig("latam"); got != "latam-plain-token" {
		t.Fatalf("kept legacy secret: partner config %q", got)
	}

	// The pass at start encrypts what is left, once.
	n, err := l.SealCredentials(ctx)
	if err != nil || n != 1 {
		t.Fatalf("seal pass: %d, %v; want 1 (skymiles)", n, err)
	}
	wantSealed(t, f.storedCredentials("skymiles"), k.IDs()[0], partnerToken)
	if got := f.storedCredentials("none"); got != "" {
		t.Fatalf("an external program without credentials got %q", got)
	}
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("after the seal pass: partner config %q, want %q", got, partnerToken)
	}
	if n, err := l.SealCredentials(ctx); err != nil || n != 0 {
		t.Fatalf("second seal pass: %d, %v; want nothing to do", n, err)
	}
}

// TestMovedCredentialsDoNotDecrypt: a sealed value copied onto another
// external program's row, of the same program or of another program under
// the same code, does not decrypt there; the error names the external
// program and shows neither the secret nor the value.
func TestMovedCredentialsDoNotDecrypt(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})
	g := newFixtureOn(t, l, core.Program{})
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	f.ok(core.KindExternalUpsert, "latam", airline("latam", "latam-token"))
	g.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", "other-token"))
	sealed := f.storedCredentials("skymiles")

	for _, tc := range []struct {
		name string
		to   *fixture
		code string
	}{{"another code", f, "latam"}, {"another program", g, "skymiles"}} {
		tc.to.setStoredCredentials(tc.code, sealed)
		_, err := l.PartnerConfig(context.Background(), tc.to.prog, tc.code)
		if err == nil {
			t.Fatalf("%s: the moved value decrypted", tc.name)
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.to.prog+"/"+tc.code) ||
			!strings.Contains(msg, "cannot be decrypted") ||
			!strings.Contains(msg, "copied from another record") ||
			strings.Contains(msg, partnerToken) || strings.Contains(msg, sealedBody(sealed)) {
			t.Fatalf("%s: error %q, want one naming %s/%s and the cause, without secrets",
				tc.name, msg, tc.to.prog, tc.code)
		}
	}
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("the original row: %q, want %q", got, partnerToken)
	}
}

// TestWrongOrMissingKey: with another key, or none, the sealed secret is
// not read, with an error that says which; the reads for display still work.
func TestWrongOrMissingKey(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	sealed := f.storedCredentials("skymiles")
	ctx := context.Background()

	wrong := keyring(t)
	for _, tc := range []struct {
		name string
		k    *secrets.Keyring
		want string
	}{
		{"another key", wrong, "sealed with a key that is not configured (key id " +
			l.Secrets.IDs()[0] + ")"},
		{"no key", nil, "no secrets key is configured"},
	} {
		other := sameDB(l, tc.k)
		_, err := other.PartnerConfig(ctx, f.prog, "skymiles")
		if err == nil || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), "PUNTOS_SECRETS_KEY") ||
			!strings.Contains(err.Error(), f.prog+"/skymiles") ||
			strings.Contains(err.Error(), partnerToken) ||
			strings.Contains(err.Error(), sealedBody(sealed)) {
			t.Fatalf("%s: %v, want an error naming the external program, %q and the "+
				"setting", tc.name, err, tc.want)
		}
		pub, err := other.ExternalProgram(ctx, f.prog, "skymiles")
		if err != nil || pub.Credentials != core.Masked {
			t.Fatalf("%s: read for display %+v %v, want it masked", tc.name, pub, err)
		}
	}

	// A seal pass with the wrong key leaves the value alone and says so.
	n, err := sameDB(l, wrong).SealCredentials(ctx)
	if n != 0 || err == nil || !strings.Contains(err.Error(), f.prog+"/skymiles") {
		t.Fatalf("seal pass with another key: %d, %v; want the row reported", n, err)
	}
	if got := f.storedCredentials("skymiles"); got != sealed {
		t.Fatalf("the seal pass with another key changed the value to %q", got)
	}
}

// TestNoKeyRefusesToStoreCredentials: a ledger with no key refuses an
// external program with credentials, naming the setting, and stores
// nothing; one without credentials is accepted.
func TestNoKeyRefusesToStoreCredentials(t *testing.T) {
	l := isolatedLedger(t)
	f := newFixtureOn(t, l, core.Program{})

	r := f.do(core.KindExternalUpsert, "skymiles", f.txn(), airline("skymiles", partnerToken))
	if r.Status != bus.StatusRejected || r.Error == nil ||
		r.Error.Kind != string(core.Unavailable) || r.Error.Field != "credentials" ||
		!strings.Contains(r.Error.Message, "PUNTOS_SECRETS_KEY") {
		t.Fatalf("upsert without a key: %s %+v, want refused as unavailable on credentials, "+
			"naming PUNTOS_SECRETS_KEY", r.Status, r.Error)
	}
	var n int
	err := l.Pool().QueryRow(context.Background(), `SELECT count(*) FROM external_programs
		WHERE credentials LIKE '%' || $1 || '%'`, partnerToken).Scan(&n)
	if err != nil || n != 0 {
		t.Fatalf("rows holding the secret: %d (%v), want 0", n, err)
	}
	if _, err := l.ExternalProgram(context.Background(), f.prog, "skymiles"); core.KindOf(
		err) != core.NotFound {
		t.Fatalf("the refused external program exists: %v", err)
	}

	f.ok(core.KindExternalUpsert, "files", core.ExternalProgram{Name: "Files", Ratio: "1",
		Flavour: core.FlavourFile})
}

// TestRotatedKey: with a new key first and the old one after it, the old
// values still decrypt, and the seal pass moves them to the new key, after
// which the old key is no longer needed.
func TestRotatedKey(t *testing.T) {
	l := isolatedLedger(t)
	_, oldKey, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, newKey, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	parse := func(s string) *secrets.Keyring {
		k, err := secrets.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	l.Secrets = parse(oldKey)
	f := newFixtureOn(t, l, core.Program{})
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	oldID := l.Secrets.IDs()[0]

	both := sameDB(l, parse(newKey+","+oldKey))
	if got, err := both.PartnerConfig(context.Background(), f.prog, "skymiles"); err != nil ||
		got.Credentials != partnerToken {
		t.Fatalf("with the old key second: %v, want the secret", err)
	}
	if n, err := both.SealCredentials(context.Background()); err != nil || n != 1 {
		t.Fatalf("seal pass after the rotation: %d, %v; want 1", n, err)
	}
	newID := both.Secrets.IDs()[0]
	if newID == oldID {
		t.Fatal("two random keys have the same id")
	}
	wantSealed(t, f.storedCredentials("skymiles"), newID, partnerToken)
	f.l = sameDB(l, parse(newKey))
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("with the new key alone: %q, want %q", got, partnerToken)
	}
}

// Stored credentials stay with the address they were given for. The back
// office's blank field (and a REST client leaving the field out, or
// sending the mask back) keeps them; an operator who also moved the
// endpoint to a server of theirs used to receive the partner's secret with
// the next conversion. Such an upsert is now refused and changes nothing;
// giving the credentials again, or a path on the same host, is accepted.
func TestCredentialsStayWithTheirAddress(t *testing.T) {
	l := isolatedLedger(t)
	l.Secrets = keyring(t)
	f := newFixtureOn(t, l, core.Program{})
	f.ok(core.KindExternalUpsert, "skymiles", airline("skymiles", partnerToken))
	before := f.storedCredentials("skymiles")

	for _, endpoint := range []string{"https://127.0.0.1:18998/steal", "http://127.0.0.1:9/api",
		"https://localhost:9/api", ""} {
		for _, kept := range []*string{nil, ptr(core.Masked)} {
			u := core.ExternalUpsert{ExternalProgram: airline("skymiles", "")}
			u.Endpoint, u.Credentials = endpoint, kept
			if endpoint == "" {
				u.Flavour = core.FlavourFile
			}
			r := f.do(core.KindExternalUpsert, "skymiles", f.txn(), u)
			if r.Status != bus.StatusRejected || r.Error == nil ||
				r.Error.Field != "credentials" || !strings.Contains(r.Error.Message,
				"give the credentials again") {
				t.Fatalf("endpoint moved to %q, credentials kept: %s %+v; want refused on "+
					"credentials", endpoint, r.Status, r.Error)
			}
		}
	}
	if got := f.partnerConfig("skymiles"); got != partnerToken ||
		f.storedCredentials("skymiles") != before {
		t.Fatalf("after the refusals the partner config has %q; want the secret as it was", got)
	}
	var endpoint string
	if err := f.l.Pool().QueryRow(context.Background(), `SELECT e.endpoint
		FROM external_programs e JOIN programs p ON p.id = e.program_id
		WHERE p.code = $1 AND e.code = 'skymiles'`, f.prog).Scan(&endpoint); err != nil ||
		endpoint != "https://127.0.0.1:9/api" {
		t.Fatalf("endpoint after the refusals: %q %v; want it unmoved", endpoint, err)
	}

	// Another path on the same host and port (the default port written
	// out) keeps them.
	same := core.ExternalUpsert{ExternalProgram: airline("skymiles", "")}
	same.Endpoint = "HTTPS://127.0.0.1:9/v2/api"
	f.ok(core.KindExternalUpsert, "skymiles", same)
	if got := f.partnerConfig("skymiles"); got != partnerToken {
		t.Fatalf("after a new path on the same host: %q, want the secret kept", got)
	}
	// A new address with the credentials given again is accepted.
	moved := core.ExternalUpsert{ExternalProgram: airline("skymiles", "")}
	moved.Endpoint, moved.Credentials = "https://127.0.0.1:10/api", ptr("new-token")
	f.ok(core.KindExternalUpsert, "skymiles", moved)
	if got := f.partnerConfig("skymiles"); got != "new-token" {
		t.Fatalf("after a move with new credentials: %q, want new-token", got)
	}
}
