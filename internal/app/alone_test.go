package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A second process with the embedded NATS is refused on a database one
// already uses (their buses are apart: the second would answer 202 and
// apply nothing) and on a data directory one already uses (two servers on
// one store lose commands); once the first stops, the second starts.
func TestEmbeddedRunIsAlone(t *testing.T) {
	first := testConfig(t)
	a := startApp(t, first, Roles{Gateway: true, Core: true, Adapters: true})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	all := Roles{Gateway: true, Core: true, Adapters: true}

	sameDB := testConfig(t)
	sameDB.DatabaseURL = first.DatabaseURL
	if b, err := Start(context.Background(), sameDB, log, all); err == nil ||
		!strings.Contains(err.Error(), "uses this database") {
		if b != nil {
			b.Close()
		}
		t.Fatalf("a second run on the same database: %v, want a refusal", err)
	}
	sameDir := testConfig(t)
	sameDir.DataDir = first.DataDir
	if b, err := Start(context.Background(), sameDir, log, all); err == nil ||
		!strings.Contains(err.Error(), "is in use by another puntos process") {
		if b != nil {
			b.Close()
		}
		t.Fatalf("a second run on the same data dir: %v, want a refusal", err)
	}

	a.Close()
	b, err := Start(context.Background(), sameDB, log, all)
	if err != nil {
		t.Fatalf("a run on the database after the first stopped: %v", err)
	}
	b.Close()
}

// A run whose database lock's connection ends (a PostgreSQL restart or
// failover) takes the lock again; when another process took it meanwhile,
// /readyz answers not ready.
func TestRunLockLostIsNoticed(t *testing.T) {
	defer func(d time.Duration) { runLockEvery = d }(runLockEvery)
	runLockEvery = 100 * time.Millisecond
	cfg := testConfig(t)
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	end := func() {
		t.Helper()
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND objid = $1 AND pid <> pg_backend_pid()`,
			runLockKey); err != nil {
			t.Fatal(err)
		}
	}
	ready := func() int {
		res, err := http.Get("http://" + a.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	wait := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ready() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz never answered %d", what, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	end()
	time.Sleep(500 * time.Millisecond)
	wait(http.StatusOK, "lock's connection ended, nobody else")
	var held bool
	err = admin.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, runLockKey).Scan(&held)
	if err != nil || held {
		t.Fatalf("the run did not take its lock again (another could take it: %t, %v)", held, err)
	}

	// Another process takes it the moment the run's connection ends.
	end()
	deadline := time.Now().Add(5 * time.Second)
	for !held && time.Now().Before(deadline) {
		if err := admin.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, runLockKey).Scan(&held); err != nil {
			t.Fatal(err)
		}
	}
	if !held {
		t.Fatal("the test could not take the lock after ending the run's connection")
	}
	wait(http.StatusServiceUnavailable, "lock taken by another")
}

// /metrics says how many partitions this process applies, so that an
// operator sees commands that would wait unapplied, and which build runs.
func TestMetricsShowLeasesAndBuild(t *testing.T) {
	cfg := testConfig(t)
	cfg.Version = "v-test-1"
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := scrape(t, a.Addr())
		if s["puntos_partitions_leased"] == float64(cfg.Partitions) &&
			s[`puntos_build_info{version="v-test-1"}`] == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions leased %v (want %d), build info %v", s["puntos_partitions_leased"],
				cfg.Partitions, s[`puntos_build_info{version="v-test-1"}`])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
