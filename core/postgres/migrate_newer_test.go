package postgres

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// A database a newer Puntos migrated is refused by this one (an older
// binary after an upgrade, or a rollback): it would write rows without the
// newer columns. Migrating twice with the same version changes nothing.
func TestMigrateRefusesANewerDatabase(t *testing.T) {
	ctx := context.Background()
	pool, err := Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, pool, log); err != nil {
			t.Fatalf("migrate, time %d: %v", i+1, err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO schema_migrations (version, name)
		VALUES (9999, '9999_from_the_future.sql')`); err != nil {
		t.Fatal(err)
	}
	err = Migrate(ctx, pool, log)
	if err == nil || !strings.Contains(err.Error(), "newer Puntos (migration 9999_from_the_future.sql)") {
		t.Fatalf("migrate a database a newer version migrated: %v", err)
	}
	// The processes that do not migrate (gateways, adapters) check too.
	if err := CheckSchema(ctx, pool); err == nil || !strings.Contains(err.Error(), "newer Puntos") {
		t.Fatalf("CheckSchema of a database a newer version migrated: %v", err)
	}
}

// A database nothing migrated yet passes the check: the core migrates it.
func TestCheckSchemaOfAnEmptyDatabase(t *testing.T) {
	ctx := context.Background()
	pool, err := Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := CheckSchema(ctx, pool); err != nil {
		t.Fatalf("CheckSchema of an empty database: %v", err)
	}
}
