package app

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigPrecedence(t *testing.T) {
	e := env(map[string]string{"PUNTOS_HTTP_ADDR": "127.0.0.1:9000", "PUNTOS_PARTITIONS": "16",
		"PUNTOS_RESULT_WAIT": "250ms"})
	c, _, err := LoadConfig("run", []string{"--partitions=4"}, e, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9000" || c.Partitions != 4 || c.ResultWait != 250*time.Millisecond ||
		c.BatchSize != 2048 || c.LedgerWriters != 2 || c.GCPercent != 400 {
		t.Fatalf("config %+v: want env addr, flag partitions 4, env wait, default batch, "+
			"writers and GC target", c)
	}
}

// A gateway behind a TLS proxy that sets no X-Forwarded-Proto asks for
// Secure back-office cookies from the environment.
func TestSecureCookiesSetting(t *testing.T) {
	for val, want := range map[string]bool{"": false, "true": true, "1": true, "false": false} {
		c, _, err := LoadConfig("run", nil, env(map[string]string{"PUNTOS_SECURE_COOKIES": val}),
			&bytes.Buffer{})
		if err != nil || c.SecureCookies != want {
			t.Errorf("PUNTOS_SECURE_COOKIES=%q: %v (%v), want %v", val, c.SecureCookies, err, want)
		}
	}
}

// Reporting is switched off from the environment with "off" (an empty
// variable counts as unset) or with an empty flag.
func TestClickHouseOff(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, nil, "127.0.0.1:19000"},
		{map[string]string{"PUNTOS_CLICKHOUSE_ADDR": ""}, nil, "127.0.0.1:19000"},
		{map[string]string{"PUNTOS_CLICKHOUSE_ADDR": "off"}, nil, ""},
		{map[string]string{"PUNTOS_CLICKHOUSE_ADDR": "OFF"}, nil, ""},
		{nil, []string{"--clickhouse-addr="}, ""},
	} {
		c, _, err := LoadConfig("run", tc.args, env(tc.env), &bytes.Buffer{})
		if err != nil || c.ClickHouseAddr != tc.want {
			t.Errorf("env %v args %v: %q (%v), want %q", tc.env, tc.args, c.ClickHouseAddr,
				err, tc.want)
		}
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"--partitions=x", "partitions (PUNTOS_PARTITIONS): "},
		{"--secure-cookies=maybe", "secure-cookies (PUNTOS_SECURE_COOKIES): "},
		{"--partitions=0", "partitions (PUNTOS_PARTITIONS): must be between 1 and 1024"},
		{"--result-wait=5", "result-wait (PUNTOS_RESULT_WAIT): "},
		{"--nats-sync=sometimes", "nats-sync (PUNTOS_NATS_SYNC): must be always or interval"},
		{"--gc-percent=10", "gc-percent (PUNTOS_GC_PERCENT): "},
		{"--adjustment-approval-points=0",
			"adjustment-approval-points (PUNTOS_ADJUSTMENT_APPROVAL_POINTS): must be at least 1"},
		// A port alone is a mistake of the address, not of the API keys that
		// a non-loopback address would need.
		{"--http-addr=8080", "http-addr (PUNTOS_HTTP_ADDR): \"8080\" must be host:port"},
		{"--http-addr=127.0.0.1:", "http-addr"},
		{"--api-keys=web=short", "api-keys (PUNTOS_API_KEYS): "},
		// A source names a caller's commands on the bus and in the ledger:
		// no '/' (the bus's message ids separate source and txn with it),
		// no control characters, and no partner's name.
		{"--api-keys=shop/lima=key-0123456789", "api-keys (PUNTOS_API_KEYS): source \"shop/lima\""},
		{"--api-keys=shop\x1blima=key-0123456789", "renaming a source lets a request"},
		{"--api-keys=billing\u202eteam=key-0123456789", "api-keys (PUNTOS_API_KEYS): source"},
		{"--api-keys=billing\u200bteam=key-0123456789", "api-keys (PUNTOS_API_KEYS): source"},
		// Names Puntos gives its own commands: a key named so could answer
		// the back office's approvals with a transaction id of its own.
		{"--api-keys=backoffice=key-0123456789", "not a name Puntos gives its own commands"},
		{"--api-keys=BackOffice=key-0123456789", "not a name Puntos gives its own commands"},
		{"--api-keys=conversion=key-0123456789", "not a name Puntos gives its own commands"},
		{"--api-keys=file:telco=key-0123456789", "not a name Puntos gives its own commands"},
		{"--api-keys=\uff42\uff41\uff43\uff4b\uff4f\uff46\uff46\uff49\uff43\uff45=key-0123456789",
			"not a name Puntos gives its own commands"},
		{"--api-keys=file\uff1ax=key-0123456789", "not a name Puntos gives its own commands"},
		{"--api-keys=crm=key-0123456789,billing=key-0123456789", `sources "crm" and "billing" have the same key`},
		{"--api-keys=partner:acme=key-0123456789", "api-keys (PUNTOS_API_KEYS): source \"partner:acme\""},
	} {
		_, _, err := LoadConfig("run", []string{tc.args}, env(nil), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

// The GC target applies unless GOGC is in the environment, which the
// operator set on purpose.
func TestGCPercentLeavesGOGCAlone(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	setGCPercent(300)
	if got := debug.SetGCPercent(100); got != 300 {
		t.Errorf("GOGC unset: collector target %d, want 300", got)
	}

	t.Setenv("GOGC", "")
	setGCPercent(250)
	if got := debug.SetGCPercent(100); got != 250 {
		t.Errorf("GOGC empty: collector target %d, want 250", got)
	}

	t.Setenv("GOGC", "150")
	setGCPercent(300)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: collector target %d, want it left at 100", got)
	}
}

func TestSecretsAreMasked(t *testing.T) {
	e := env(map[string]string{
		"PUNTOS_DATABASE_URL": "postgres://ledger:hunter2pass@127.0.0.1:5432/puntos",
		"NATS_URL":            "nats://bus:natspass99@127.0.0.1:4222",
		"PUNTOS_API_KEYS":     "billing=billing-key-0001,web=web-key-000002",
	})
	var help bytes.Buffer
	_, _, err := LoadConfig("run", []string{"--help"}, e, &help)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	c, _, err := LoadConfig("run", nil, e, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	logged := fmt.Sprint(c.Masked()...) + help.String()
	for _, secret := range []string{"hunter2pass", "natspass99", "billing-key-0001",
		"web-key-000002"} {
		if strings.Contains(logged, secret) {
			t.Errorf("%q appears in the logged configuration or help", secret)
		}
	}
	if !strings.Contains(logged, "ledger:***@127.0.0.1") || !strings.Contains(logged, "billing=***") {
		t.Errorf("masked configuration lost what is not secret: %s", logged)
	}

	// A key/value connection string, and a NATS URL carrying a token as
	// its user name.
	e = env(map[string]string{
		"PUNTOS_DATABASE_URL": "host=127.0.0.1 port=5432 user=ledger password='Top Secret' " +
			"dbname=puntos sslpassword=KeyPass77",
		"NATS_URL": "nats://MyNatsToken987654@127.0.0.1:4222",
	})
	c, _, err = LoadConfig("run", nil, e, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	logged = fmt.Sprint(c.Masked()...)
	for _, secret := range []string{"Top Secret", "Secret'", "KeyPass77", "MyNatsToken987654"} {
		if strings.Contains(logged, secret) {
			t.Errorf("%q appears in the logged configuration: %s", secret, logged)
		}
	}
	if !strings.Contains(logged, "user=ledger") || !strings.Contains(logged, "dbname=puntos") ||
		!strings.Contains(logged, "@127.0.0.1:4222") {
		t.Errorf("masked configuration lost what is not secret: %s", logged)
	}
}

// A source named with inner spaces, as versions before 5 December 2026
// took, still loads under the same name: its callers' idempotency keys are
// stored under it, and a rename would let their retries apply again.
func TestAPIKeySourceWithSpacesKeepsItsName(t *testing.T) {
	cfg, _, err := LoadConfig("run", []string{"--api-keys=billing team=key-0123456789"},
		env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("a source with a space: %v", err)
	}
	keys, err := cfg.Keys()
	if err != nil || keys["key-0123456789"] != "billing team" {
		t.Fatalf("keys %v, %v; want the key under source \"billing team\"", keys, err)
	}
}
