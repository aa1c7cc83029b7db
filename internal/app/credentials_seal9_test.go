package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// streamBodies reads every message the stream holds, in order, each
// followed by a new line and its headers.
func streamBodies(t *testing.T, natsURL, stream string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq != 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, string(m.Data)+"\n"+fmt.Sprint(m.Header))
	}
	return out
}

// upsertsOn is the external.upsert commands among a stream's messages,
// decoded (a dead letter carries the command as it was sent).
func upsertsOn(t *testing.T, bodies []string) []bus.Command {
	t.Helper()
	var out []bus.Command
	for _, b := range bodies {
		var c bus.Command
		data, _, _ := strings.Cut(b, "\n")
		if json.Unmarshal([]byte(data), &c) == nil && c.Kind == core.KindExternalUpsert {
			out = append(out, c)
		}
	}
	return out
}

// guessedHashes are the digests someone holding a dump of the commands
// table computes for a guessed secret: the command hashed as the gateway
// hashed it before credentials were sealed on the bus (bus.Command.Seal
// over the JSON the gateway sends), with the credentials tried at every
// place among the other fields, whatever their order.
func guessedHashes(t *testing.T, program, code string, body map[string]any,
	guess string) []string {
	t.Helper()
	raw, _ := json.Marshal(body)
	var e core.ExternalProgram
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	e.Code, e.Credentials = "", ""
	e.Defaults()
	text, _ := json.Marshal(e)
	dec := json.NewDecoder(bytes.NewReader(text))
	if _, err := dec.Token(); err != nil { // {
		t.Fatal(err)
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys, vals = append(keys, k.(string)), append(vals, v)
	}
	cred, _ := json.Marshal(guess)
	var out []string
	for at := 0; at <= len(keys); at++ {
		var b strings.Builder
		b.WriteString("{")
		n := 0
		put := func(k string, v []byte) {
			if n > 0 {
				b.WriteString(",")
			}
			n++
			kt, _ := json.Marshal(k)
			b.Write(kt)
			b.WriteString(":")
			b.Write(v)
		}
		for i := range keys {
			if i == at {
				put("credentials", cred)
			}
			put(keys[i], vals[i])
		}
		if at == len(keys) {
			put("credentials", cred)
		}
		b.WriteString("}")
		c := bus.Command{Kind: core.KindExternalUpsert, Program: program, Member: code,
			Payload: json.RawMessage(b.String())}
		c.Seal()
		out = append(out, c.Hash)
	}
	return out
}

// filesHolding lists the files under dir whose bytes contain s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCredentialsSealedOnTheBus runs a core (with its embedded NATS) and,
// apart from it, a gateway with the same secrets key, and sets a partner's
// weak secret through the gateway. The secret is in clear neither in the
// command on the command stream (nor anywhere in the NATS store on disk),
// nor in a refused command's dead letter, and the hash stored in the
// commands table is not the one a guesser computes from the secret. A
// retry with the same key and body is a replay, through either gateway;
// the same key with another secret is a conflict; the adapter still reads
// the exact secret. A gateway without a key refuses a secret, naming the
// setting, and publishes nothing.
func TestCredentialsSealedOnTheBus(t *testing.T) {
	const secret = "hunter2"
	ctx := context.Background()
	_, key, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.SecretsKey = key
	core1 := startApp(t, cfg, Roles{Gateway: true, Core: true})
	natsURL := core1.nats.ClientURL()

	gcfg := *cfg
	gcfg.NATSURL, gcfg.DataDir = natsURL, t.TempDir()
	gw := startApp(t, &gcfg, Roles{Gateway: true})
	c := &client{t: t, base: "http://" + gw.Addr(), key: testKey}
	setupProgram(c)

	// The secret, set through the gateway apart.
	ext := map[string]any{"name": "SkyMiles", "ratio": "0.5", "flavour": "http",
		"endpoint": "https://127.0.0.1:9/api", "credentials": secret}
	const path = "/v1/programs/telco/external/skymiles"
	first := c.must(201, "PUT", path, "ext-seal-1", ext)
	if strings.Contains(first.raw, secret) {
		t.Fatalf("the answer shows the secret: %s", first.raw)
	}

	// On the command stream: sealed, for this command, with the core's key.
	bodies := streamBodies(t, natsURL, bus.CommandStream)
	ups := upsertsOn(t, bodies)
	if len(ups) != 1 {
		t.Fatalf("%d external.upsert commands on the stream, want 1", len(ups))
	}
	for _, b := range bodies {
		if strings.Contains(b, secret) {
			t.Fatalf("a command on the stream holds the secret in clear: %s", b)
		}
	}
	var sent struct {
		Credentials string `json:"credentials"`
	}
	if err := json.Unmarshal(ups[0].Payload, &sent); err != nil {
		t.Fatal(err)
	}
	k, _ := secrets.Parse(key)
	if !strings.HasPrefix(sent.Credentials, "enc:v1:"+k.IDs()[0]+":") {
		t.Fatalf("credentials on the stream %q, want enc:v1:%s:...", sent.Credentials,
			k.IDs()[0])
	}
	if plain, err := k.Open(sent.Credentials, core.CommandCredentialsAD("telco",
		"skymiles")); err != nil || plain != secret {
		t.Fatalf("the sealed value on the stream opens to %q (%v)", plain, err)
	}

	// The stored hash is not what a guesser computes.
	var hash string
	var rows int
	if err := core1.Pool.QueryRow(ctx, `SELECT max(hash), count(*) FROM commands
		WHERE source = 'billing' AND txn_id = 'ext-seal-1'`).Scan(&hash, &rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || hash != ups[0].Hash {
		t.Fatalf("commands rows %d hash %q, want one with the command's hash %q", rows, hash,
			ups[0].Hash)
	}
	for _, g := range guessedHashes(t, "telco", "skymiles", ext, secret) {
		if g == hash {
			t.Fatalf("the stored hash %s is the plain SHA-256 of the request with the "+
				"secret: a dump tells the secret to whoever guesses it", hash)
		}
	}

	// A retry is a replay, here and through the core's own gateway.
	other := &client{t: t, base: "http://" + core1.Addr(), key: testKey}
	for _, cl := range []*client{c, other} {
		again := cl.must(201, "PUT", path, "ext-seal-1", ext)
		if again.header.Get("Idempotent-Replayed") != "true" ||
			!jsonEqual(again.body["data"], first.body["data"]) {
			t.Fatalf("retry: %s %v, want the first answer replayed (%s)", again.raw,
				again.header, first.raw)
		}
	}
	if err := core1.Pool.QueryRow(ctx, `SELECT count(*) FROM commands
		WHERE source = 'billing' AND txn_id = 'ext-seal-1'`).Scan(&rows); err != nil ||
		rows != 1 {
		t.Fatalf("commands rows after the retries: %d (%v), want 1", rows, err)
	}

	// The same key with another secret is another request.
	changed := map[string]any{}
	for k, v := range ext {
		changed[k] = v
	}
	changed["credentials"] = "hunter3"
	c.must(409, "PUT", path, "ext-seal-1", changed)

	// The adapter reads the secret as given.
	cfgRead, err := core1.Ledger.PartnerConfig(ctx, "telco", "skymiles")
	if err != nil || cfgRead.Credentials != secret {
		t.Fatalf("partner config: %+v %v, want the credentials %q", cfgRead, err, secret)
	}

	// Refused commands go to the dead-letter stream as they were sent,
	// sealed: one for a program that does not exist, one that the ledger
	// opens and then refuses (a code the gateway leaves to it).
	ghost := map[string]any{"name": "Ghost", "ratio": "1", "flavour": "http",
		"endpoint": "https://127.0.0.1:9/api", "credentials": secret + "-dead"}
	c.must(404, "PUT", "/v1/programs/nosuch/external/skymiles", "ext-seal-dead1", ghost)
	c.must(400, "PUT", "/v1/programs/telco/external/bad.code", "ext-seal-dead2", ghost)
	var dead []bus.Command
	deadline := time.Now().Add(10 * time.Second)
	for len(dead) < 2 && time.Now().Before(deadline) {
		dead = upsertsOn(t, streamBodies(t, natsURL, bus.DeadStream))
		time.Sleep(50 * time.Millisecond)
	}
	if len(dead) != 2 {
		t.Fatalf("dead letters of external.upsert: %+v, want the two refused", dead)
	}
	for _, b := range streamBodies(t, natsURL, bus.DeadStream) {
		if strings.Contains(b, secret) {
			t.Fatalf("a dead letter holds the secret in clear: %s", b)
		}
	}
	for _, d := range dead {
		if !strings.Contains(string(d.Payload), `"enc:v1:`) {
			t.Fatalf("the dead letter's payload %s, want its credentials sealed", d.Payload)
		}
	}

	// Nor is it anywhere in the NATS store on disk.
	if files := filesHolding(t, cfg.DataDir, secret); len(files) != 0 {
		t.Fatalf("files holding the secret in clear: %v", files)
	}

	// A gateway with no key (no PUNTOS_SECRETS_KEY and no data directory
	// for a development key) refuses a secret before it publishes.
	ncfg := gcfg
	ncfg.SecretsKey, ncfg.DataDir = "", ""
	bare := startApp(t, &ncfg, Roles{Gateway: true})
	nc := &client{t: t, base: "http://" + bare.Addr(), key: testKey}
	before := len(streamBodies(t, natsURL, bus.CommandStream))
	refused := nc.must(503, "PUT", "/v1/programs/telco/external/latam", "ext-seal-nokey",
		map[string]any{"name": "LATAM", "ratio": "1", "flavour": "http",
			"endpoint": "https://127.0.0.1:9/api", "credentials": "latam-secret"})
	detail, _ := refused.body["detail"].(string)
	if refused.body["field"] != "credentials" || !strings.Contains(detail, "PUNTOS_SECRETS_KEY") ||
		strings.Contains(refused.raw, "latam-secret") {
		t.Fatalf("a secret through a gateway without a key: %s, want 503 on credentials "+
			"naming PUNTOS_SECRETS_KEY", refused.raw)
	}
	if after := len(streamBodies(t, natsURL, bus.CommandStream)); after != before {
		t.Fatalf("the gateway without a key published %d commands", after-before)
	}
	// What needs no key still goes through it.
	nc.must(201, "PUT", path, "ext-seal-masked", map[string]any{"name": "SkyMiles",
		"ratio": "0.75", "flavour": "http", "endpoint": "https://127.0.0.1:9/api",
		"credentials": core.Masked})
	// Nothing was stored for the refused request: the same key works once
	// a gateway has the key.
	c.must(201, "PUT", "/v1/programs/telco/external/latam", "ext-seal-nokey",
		map[string]any{"name": "LATAM", "ratio": "1", "flavour": "http",
			"endpoint": "https://127.0.0.1:9/api", "credentials": "latam-secret"})
	for code, want := range map[string]string{"skymiles": secret, "latam": "latam-secret"} {
		e, err := core1.Ledger.PartnerConfig(ctx, "telco", code)
		if err != nil || e.Credentials != want {
			t.Fatalf("partner config of %s: %v, want %q", code, err, want)
		}
	}
}

// jsonEqual tells whether two decoded JSON values are the same.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
