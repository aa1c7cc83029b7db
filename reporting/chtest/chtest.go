// Package chtest gives reporting tests the real services they run on: a
// ClickHouse database of their own (Database) and a PostgreSQL ledger of
// their own (NewLedger). The servers are the ones `make services` starts, or
// the ones PUNTOS_TEST_CLICKHOUSE_ADDR and PUNTOS_TEST_DATABASE_URL name;
// the databases are new for each test and dropped when it ends, so that test
// packages running at once never meet. A test that cannot reach a server
// fails; it never skips.
package chtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

// Addr is the native address of the test server.
func Addr() string {
	if a := os.Getenv("PUNTOS_TEST_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:19000"
}

// adminDB is the database tests connect through to create their own.
func adminDB() string {
	if db := os.Getenv("PUNTOS_TEST_CLICKHOUSE_DB"); db != "" {
		return db
	}
	return "puntos_test"
}

// Database creates an empty database for t and returns a connection to it
// and its name. Both go away when t ends.
func Database(t testing.TB) (driver.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	admin, err := clickhouse.Open(ctx, Addr(), adminDB())
	if err != nil {
		t.Fatalf("ClickHouse at %s, database %s, is unreachable (run `make services`): %v",
			Addr(), adminDB(), err)
	}
	name := fmt.Sprintf("puntos_t_%d_%06d", time.Now().UnixNano()%1e9, rand.IntN(1e6))
	if err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		t.Fatalf("create ClickHouse database %s: %v", name, err)
	}
	conn, err := clickhouse.Open(ctx, Addr(), name)
	if err != nil {
		_ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
		_ = admin.Close()
		t.Fatalf("open ClickHouse database %s: %v", name, err)
	}

	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop ClickHouse database %s: %v", name, err)
		}
		_ = admin.Close()
	})
	return conn, name
}
