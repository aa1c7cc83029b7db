package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// A bad secrets key stops the process at start, with an error that names
// the setting and the fault and never repeats the value.
func TestSecretsKeySettingRefused(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	_, good, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value, why string
		fromEnv          bool
	}{
		{"not base64", "not*base64*at*all", "key 1 is not standard base64", false},
		{"too short", short, "key 1 is 16 bytes", false},
		{"from the environment", "c2hvcnQ=", "key 1 is 5 bytes", true},
		{"an old key bad", good + ",oops!", "key 2 is not standard base64", true},
		{"a key twice", good + "," + good, "key 2 repeats", false},
		{"a trailing comma", good + ",", "key 2 is empty", false},
		{"hex", strings.Repeat("ab", 32), "key 1 is written in hex", true},
	} {
		var args []string
		e := env(nil)
		if tc.fromEnv {
			e = env(map[string]string{"PUNTOS_SECRETS_KEY": tc.value})
		} else {
			args = []string{"--secrets-key=" + tc.value}
		}
		_, _, err := LoadConfig("run", args, e, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "secrets-key (PUNTOS_SECRETS_KEY)") ||
			!strings.Contains(err.Error(), tc.why) || strings.Contains(err.Error(), tc.value) {
			t.Errorf("%s: error %v, want one naming the setting and %q, without the value",
				tc.name, err, tc.why)
		}
	}

	// A good key is taken, and the start-up log shows its id only.
	c, _, err := LoadConfig("run", nil, env(map[string]string{"PUNTOS_SECRETS_KEY": good}),
		&bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := secrets.Parse(good)
	logged := fmt.Sprint(c.Masked()...)
	if strings.Contains(logged, good) || !strings.Contains(logged, "key ids "+k.IDs()[0]) {
		t.Fatalf("masked configuration %s, want the key id and not the key", logged)
	}

	// A configuration made in code is checked at Start too.
	cfg := testConfig(t)
	cfg.SecretsKey = short
	_, err = Start(context.Background(), cfg, slog.New(slog.DiscardHandler),
		Roles{Gateway: true, Core: true})
	if err == nil || !strings.Contains(err.Error(), "secrets-key (PUNTOS_SECRETS_KEY)") {
		t.Fatalf("start with a short key: %v, want an error naming the setting", err)
	}
}

// Without PUNTOS_SECRETS_KEY, a process on a loopback address makes a
// development key in its data directory once, private to its owner, and
// keeps using it; a process reachable from elsewhere gets no key.
func TestDevelopmentSecretsKey(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{HTTPAddr: "127.0.0.1:8080", DataDir: dir}
	k, file, err := cfg.secretsKeyring()
	if err != nil || k == nil || file != filepath.Join(dir, devKeyFile) {
		t.Fatalf("loopback without a key: %v %q %v, want the development key in %s", k, file,
			err, dir)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", st.Mode(), err)
	}
	again, _, err := (&Config{HTTPAddr: "localhost:9000", DataDir: dir}).secretsKeyring()
	if err != nil || again.IDs()[0] != k.IDs()[0] {
		t.Fatalf("second start: %v %v, want the same key %s", again.IDs(), err, k.IDs()[0])
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".secrets.key-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	for _, addr := range []string{"0.0.0.0:8080", ":8080", "10.0.0.5:8080"} {
		other := t.TempDir()
		k, _, err := (&Config{HTTPAddr: addr, DataDir: other}).secretsKeyring()
		if err != nil || k != nil {
			t.Errorf("%s without a key: %v %v, want no key", addr, k.IDs(), err)
		}
		if _, err := os.Stat(filepath.Join(other, devKeyFile)); !os.IsNotExist(err) {
			t.Errorf("%s: a development key was made (%v)", addr, err)
		}
	}

	// A configured key wins and no file is made.
	_, good, _ := secrets.Generate()
	other := t.TempDir()
	k, file, err = (&Config{HTTPAddr: "127.0.0.1:8080", DataDir: other,
		SecretsKey: good}).secretsKeyring()
	if err != nil || k == nil || file != "" {
		t.Fatalf("configured key: %v %q %v", k, file, err)
	}
	if _, err := os.Stat(filepath.Join(other, devKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("a development key was made beside a configured one (%v)", err)
	}

	// A key file others may read is refused, naming the file.
	if err := os.Chmod(filepath.Join(dir, devKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = cfg.secretsKeyring()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, devKeyFile)) ||
		!strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("key file of mode 0644: %v, want it refused", err)
	}
}

// TestStartEncryptsStoredCredentials: `puntos run` with no key on a
// loopback address encrypts credentials with the development key, and at
// its next start encrypts a row still in plain text from before.
func TestStartEncryptsStoredCredentials(t *testing.T) {
	cfg := testConfig(t)
	log := slog.New(slog.DiscardHandler)
	a, err := Start(context.Background(), cfg, log, Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	ext := map[string]any{"name": "SkyMiles", "ratio": "0.5", "flavour": "http",
		"endpoint": "https://127.0.0.1:9/api", "credentials": "start-test-token"}
	c.must(201, "PUT", "/v1/programs/telco/external/skymiles", "ext-1", ext)
	c.must(201, "PUT", "/v1/programs/telco/external/latam", "ext-2", ext)
	k, err := readKeyFile(filepath.Join(cfg.DataDir, devKeyFile))
	if err != nil {
		t.Fatalf("development key: %v", err)
	}
	pool := a.Pool
	column := func(code string) string {
		var v string
		err := pool.QueryRow(context.Background(), `SELECT credentials
			FROM external_programs WHERE code = $1`, code).Scan(&v)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := column("skymiles"); !strings.HasPrefix(v, "enc:v1:"+k.IDs()[0]+":") {
		t.Fatalf("stored credentials %q, want them encrypted with the development key", v)
	}

	// A row as it was before encryption, then a new start.
	if _, err := a.Pool.Exec(context.Background(), `UPDATE external_programs
		SET credentials = 'legacy-plain-token' WHERE code = 'latam'`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b := startApp(t, cfg, Roles{Gateway: true, Core: true})
	pool = b.Pool
	if v := column("latam"); !strings.HasPrefix(v, "enc:v1:"+k.IDs()[0]+":") ||
		strings.Contains(v, "legacy-plain-token") {
		t.Fatalf("legacy row after the start: %q, want it encrypted", v)
	}
	for code, want := range map[string]string{"latam": "legacy-plain-token",
		"skymiles": "start-test-token"} {
		e, err := b.Ledger.PartnerConfig(context.Background(), "telco", code)
		if err != nil || e.Credentials != want {
			t.Fatalf("%s after the restart: %v, want %q", code, err, want)
		}
	}
}

// TestCredentialsNeverLogged runs the whole platform, the conversion
// worker included, with a JSON log at debug level and a configured key:
// credentials stored, refused, sent to a partner that rejects them, and
// moved onto another external program's row. Neither the key, nor the
// secrets, nor their encrypted values appear in the log or in an answer;
// the conversion whose credentials do not decrypt waits with the reason.
func TestCredentialsNeverLogged(t *testing.T) {
	const token, other = "cred-token-4f1e9b7a55", "cred-token-other-0c3d"
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter,
		_ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // as a partner that no longer knows the token
	})) // listens on 127.0.0.1
	defer partner.Close()
	_, key, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.SecretsKey, cfg.LogLevel = key, "debug"
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Info("Starting Puntos", cfg.Masked()...) // as main logs it
	a, err := Start(context.Background(), cfg, log, Roles{Gateway: true, Core: true,
		Adapters: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	}()
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	c.must(201, "POST", "/v1/programs/telco/members/C1/credits", "cr-1",
		map[string]any{"points": 5000, "reason": "seed"})
	ext := func(secret string) map[string]any {
		return map[string]any{"name": "Partner", "ratio": "1", "flavour": "http",
			"endpoint": partner.URL, "credentials": secret}
	}
	var answers []string
	answers = append(answers,
		c.must(201, "PUT", "/v1/programs/telco/external/skymiles", "ext-1", ext(token)).raw,
		c.must(201, "PUT", "/v1/programs/telco/external/latam", "ext-2", ext(other)).raw)
	bad := ext(token)
	bad["endpoint"] = "ftp://127.0.0.1/x"
	answers = append(answers,
		c.must(400, "PUT", "/v1/programs/telco/external/skymiles", "ext-3", bad).raw,
		c.must(200, "GET", "/v1/programs/telco/external/skymiles", "", nil).raw)

	// latam's row gets skymiles' encrypted value, as someone with write
	// access to the table could do.
	var sealed string
	err = a.Pool.QueryRow(context.Background(), `UPDATE external_programs l
		SET credentials = s.credentials FROM external_programs s
		WHERE l.code = 'latam' AND s.code = 'skymiles' AND l.program_id = s.program_id
		RETURNING l.credentials`).Scan(&sealed)
	if err != nil || !strings.HasPrefix(sealed, "enc:v1:") {
		t.Fatalf("move the encrypted value: %q %v", sealed, err)
	}

	// One conversion into each: the partner refuses skymiles' token; latam's
	// credentials do not decrypt, so its partner is never called.
	reasons := map[string]string{}
	for _, code := range []string{"skymiles", "latam"} {
		r := c.must(201, "POST", "/v1/programs/telco/members/C1/conversions", "conv-"+code,
			map[string]any{"external": code, "points": 100})
		data, _ := r.body["data"].(map[string]any)
		id, _ := data["id"].(string)
		deadline := time.Now().Add(20 * time.Second)
		for reasons[code] == "" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			got := c.must(200, "GET", "/v1/programs/telco/members/C1/conversions/"+id, "", nil)
			answers = append(answers, got.raw)
			reasons[code], _ = got.body["last_error"].(string)
		}
	}
	if !strings.Contains(reasons["latam"], "telco/latam: its credentials cannot be decrypted") ||
		!strings.Contains(reasons["latam"], "copied from another record") {
		t.Fatalf("latam's conversion: reason %q, want the decryption failure", reasons["latam"])
	}
	if reasons["skymiles"] == "" {
		t.Fatal("skymiles' conversion was never attempted")
	}

	logged := buf.String()
	if !strings.Contains(logged, "External program unusable") ||
		!strings.Contains(logged, `"msg":"Request refused"`) {
		t.Fatalf("the log lacks the decryption failure or the refusal, so it proves "+
			"nothing:\n%s", logged)
	}
	body := sealed[strings.LastIndex(sealed, ":")+1:]
	for name, s := range map[string]string{"secrets key": key, "credentials": token,
		"other credentials": other, "encrypted credentials": body} {
		if i := strings.Index(logged, s); i >= 0 {
			t.Errorf("the %s appear in the log: ...%s...", name,
				logged[max(0, i-200):min(len(logged), i+len(s)+50)])
		}
		for _, ans := range answers {
			if strings.Contains(ans, s) {
				t.Errorf("the %s appear in an answer: %s", name, ans)
			}
		}
	}
}
