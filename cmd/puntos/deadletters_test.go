package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

const deadKey = "dead-key-0123456789"

// startRole starts one role of the platform on cfg, stopped when t ends.
func startRole(t *testing.T, cfg app.Config, roles app.Roles) *app.App {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.Start(context.Background(), &cfg, log, roles)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

// puntosCLI runs the command line with args and returns what it printed.
func puntosCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := func(string) string { return "" }
	err := run(context.Background(), args, env, &out, &errOut)
	return out.String() + errOut.String(), err
}

// An operator lists the command core failed to apply, re-drives it once
// core works again (the program it creates then exists), and finds the
// dead-letter stream empty; bad arguments are refused naming what is wrong.
func TestDeadLettersCommand(t *testing.T) {
	ctx := context.Background()
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	db := testenv.Database(t)
	pool, err := postgres.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	cfg := app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: db, NATSURL: url,
		NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		LedgerWriters: 2, ResultWait: 300 * time.Millisecond, MaxDeliver: 1,
		APIKeys: "billing=" + deadKey, LogLevel: "warn", GCPercent: 100,
		EventsMaxAge: 720 * time.Hour, NATSReplicas: 1}
	gw := startRole(t, cfg, app.Roles{Gateway: true})
	base := "http://" + gw.Addr()
	send := func(method, path, key, body string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+deadKey)
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := send("PUT", "/v1/programs/telco", "prog-1", `{"name":"Telco"}`); s != 202 {
		t.Fatalf("program with no core: %d, want 202", s)
	}

	// A core that cannot reach its ledger: the command is set aside.
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range gw.Bus.Partitions() {
		wg.Go(func() {
			_ = gw.Bus.Consume(cctx, p, 10, 100*time.Millisecond,
				func(context.Context, []*natsbus.Delivery) error {
					return errors.New("ledger unreachable")
				})
		})
	}
	var listed string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(listed, "prog-1") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		listed, err = puntosCLI(t, "deadletters", "list", "--nats-url", url)
		if err != nil {
			t.Fatalf("list: %v\n%s", err, listed)
		}
	}
	cancel()
	wg.Wait()
	row := regexp.MustCompile(`(?m)^(\d+) .* failed +telco +- +billing +prog-1 +program\.upsert +max deliveries: ledger unreachable$`).
		FindStringSubmatch(listed)
	if row == nil {
		t.Fatalf("list does not show the command set aside with its reason:\n%s", listed)
	}
	seq := row[1]

	for _, bad := range [][]string{
		{"deadletters", "redrive"},
		{"deadletters", "redrive", "abc"},
		{"deadletters", "redrive", seq, "--all"},
		{"deadletters", "list", seq},
		{"deadletters", "discard", "--all"},
		{"deadletters", "undo", seq},
		{"deadletters", "redrive", "--nats-url", url, seq},
	} {
		out, err := puntosCLI(t, bad...)
		if err == nil {
			t.Fatalf("%v: accepted, want an error\n%s", bad, out)
		}
	}
	if out, err := puntosCLI(t, "deadletters", "discard", "999", "--nats-url", url); err == nil ||
		!strings.Contains(out, "999: not discarded: dead letter 999: no such dead letter") {
		t.Fatalf("discard of an unknown sequence: %v\n%s", err, out)
	}

	// Core works again: the operator re-drives the command, which is applied.
	startRole(t, cfg, app.Roles{Core: true})
	out, err := puntosCLI(t, "deadletters", "redrive", seq, "--nats-url", url)
	if err != nil || !strings.Contains(out, seq+": re-driven (source billing, txn prog-1): ok") {
		t.Fatalf("redrive: %v\n%s", err, out)
	}
	if s := send("GET", "/v1/programs/telco", "", ""); s != 200 {
		t.Fatalf("program after the re-drive: %d, want 200", s)
	}
	if out, err := puntosCLI(t, "deadletters", "list", "--nats-url", url); err != nil ||
		strings.TrimSpace(out) != "No dead letters." {
		t.Fatalf("list after the re-drive: %v\n%s", err, out)
	}
	if out, err := puntosCLI(t, "deadletters", "redrive", seq, "--nats-url", url); err == nil ||
		!strings.Contains(out, "no such dead letter") {
		t.Fatalf("second redrive: %v\n%s", err, out)
	}
}
