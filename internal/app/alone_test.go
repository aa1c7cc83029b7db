package app

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
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
