package app

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
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
