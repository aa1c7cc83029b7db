package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// These tests talk to a real ClickHouse: the one `make services` starts, or the one that
// PUNTOS_TEST_CLICKHOUSE_ADDR and PUNTOS_TEST_CLICKHOUSE_DB name. They fail, never skip,
// when it does not answer.
//
// What they found on Debian's 18.16.1 with clickhouse-go v2.51 (native protocol):
//   - DDL through conn.Exec works: CREATE TABLE, CREATE TABLE IF NOT EXISTS, ALTER TABLE
//     ADD COLUMN and DROP TABLE each return within milliseconds.
//   - INSERT ... VALUES through conn.Exec never returns: the server waits for a data
//     block the driver does not send. It ends only at the context's deadline (an i/o
//     timeout) and no row is written. TestExecInsertValuesNeverReturns pins this.
//   - INSERT ... SELECT through conn.Exec works, since no data comes from the client.
//   - PrepareBatch("INSERT INTO t") without a column list prepares without error, but
//     then Append fails with "expected 0 arguments, got 3": always name the columns.

// testConn opens the test database, failing the test when ClickHouse is unreachable.
func testConn(t *testing.T) driver.Conn {
	t.Helper()
	addr := envOr("PUNTOS_TEST_CLICKHOUSE_ADDR", "127.0.0.1:19000")
	db := envOr("PUNTOS_TEST_CLICKHOUSE_DB", "puntos_test")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Open(ctx, addr, db)
	if err != nil {
		t.Fatalf("ClickHouse at %s, database %s, is unreachable (run `make services`): %v",
			addr, db, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// testTable creates a MergeTree table with a name of its own, so that test runs at the
// same time do not meet, and drops it when the test ends.
func testTable(t *testing.T, conn driver.Conn) string {
	t.Helper()
	name := fmt.Sprintf("test_points_%d", time.Now().UnixNano())
	ddl := "CREATE TABLE " + name + ` (id UInt64, points Int64, day Date)
		ENGINE = MergeTree() PARTITION BY toYYYYMM(day) ORDER BY id`

	if err := conn.Exec(t.Context(), ddl); err != nil {
		t.Fatalf("create table through Exec: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			t.Errorf("drop table %s: %v", name, err)
		}
	})
	return name
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func TestBatchInsertSumsExactly(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)
	ctx := t.Context()

	// Insert 1,000 rows in one batch: row i (0..999) has id i+1, points 3i-500
	// and day 2024-01-01 plus i%30 days.
	const rows = 1000
	first := time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" (id, points, day)")
	if err != nil {
		t.Fatalf("prepare batch: %v", err)
	}
	for i := range rows {
		day := first.AddDate(0, 0, i%30)
		if err := batch.Append(uint64(i+1), int64(3*i-500), day); err != nil {
			t.Fatalf("append row %d: %v", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch: %v", err)
	}

	// Whole table: 3*(0+1+...+999) - 500*1000 = 1,498,500 - 500,000 = 998,500.
	var (
		count          uint64
		sum            int64
		minDay, maxDay time.Time
	)
	err = conn.QueryRow(ctx,
		"SELECT count(), sum(points), min(day), max(day) FROM "+table,
	).Scan(&count, &sum, &minDay, &maxDay)
	if err != nil {
		t.Fatalf("select totals: %v", err)
	}
	if count != rows || sum != 998_500 {
		t.Errorf("count, sum = %d, %d; want 1000, 998500", count, sum)
	}
	if !minDay.Equal(first) || !maxDay.Equal(first.AddDate(0, 0, 29)) {
		t.Errorf("days run %s..%s; want 2024-01-01..2024-01-30",
			minDay.Format(time.DateOnly), maxDay.Format(time.DateOnly))
	}

	// One day: rows i = 0, 30, ..., 990 (34 rows), 3*30*(0+1+...+33) - 500*34 = 33,490.
	err = conn.QueryRow(ctx,
		"SELECT count(), sum(points) FROM "+table+" WHERE day = toDate('2024-01-01')",
	).Scan(&count, &sum)
	if err != nil {
		t.Fatalf("select one day: %v", err)
	}
	if count != 34 || sum != 33_490 {
		t.Errorf("2024-01-01: count, sum = %d, %d; want 34, 33490", count, sum)
	}
}

// TestExecInsertValuesNeverReturns pins the trap that makes PrepareBatch the only way
// to insert: should it start to pass through, the package doc needs an update.
func TestExecInsertValuesNeverReturns(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := conn.Exec(ctx,
		"INSERT INTO "+table+" (id, points, day) VALUES (1, 10, '2024-01-01')")
	if err == nil {
		t.Fatal("INSERT ... VALUES through Exec returned; update the package doc")
	}
	if !strings.Contains(err.Error(), "timeout") && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("INSERT ... VALUES through Exec: %v; want a timeout", err)
	}

	var count uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM "+table).Scan(&count); err != nil {
		t.Fatalf("select count: %v", err)
	}
	if count != 0 {
		t.Errorf("count = %d after the stalled insert; want 0", count)
	}
}

func TestOpenMissingDatabase(t *testing.T) {
	testConn(t) // Fails the test first when ClickHouse itself is down.
	addr := envOr("PUNTOS_TEST_CLICKHOUSE_ADDR", "127.0.0.1:19000")

	conn, err := Open(t.Context(), addr, "puntos_no_such_database")
	if err == nil {
		_ = conn.Close()
		t.Fatal("Open of a missing database succeeded")
	}
	if !strings.Contains(err.Error(), "puntos_no_such_database") {
		t.Errorf("error %q does not name the database", err)
	}
}

// A database named by hand that does not exist yet is created by
// OpenCreating (the reporting sink's way in), once; a name that would need
// quoting is left to the person.
func TestOpenCreatingMakesTheDatabase(t *testing.T) {
	testConn(t)
	addr := envOr("PUNTOS_TEST_CLICKHOUSE_ADDR", "127.0.0.1:19000")
	name := fmt.Sprintf("puntos_created_%d", time.Now().UnixNano()%1e9)
	conn, created, err := OpenCreating(t.Context(), addr, name)
	if err != nil || !created {
		t.Fatalf("OpenCreating(%s): created %t, %v; want created", name, created, err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name)
		_ = conn.Close()
	})
	var db string
	if err := conn.QueryRow(t.Context(), "SELECT currentDatabase()").Scan(&db); err != nil || db != name {
		t.Fatalf("the connection's database: %q, %v; want %s", db, err, name)
	}
	again, created, err := OpenCreating(t.Context(), addr, name)
	if err != nil || created {
		t.Fatalf("OpenCreating of an existing database: created %t, %v", created, err)
	}
	_ = again.Close()

	if _, _, err := OpenCreating(t.Context(), addr, "puntos-dash"); err == nil ||
		!strings.Contains(err.Error(), "by hand") {
		t.Fatalf("OpenCreating of a name that needs quoting: %v", err)
	}
}

func TestOpenClosedPortFailsFast(t *testing.T) {
	// Port 1 on the loopback address: nothing listens there.
	start := time.Now()
	conn, err := Open(t.Context(), "127.0.0.1:1", "puntos_test")
	if err == nil {
		_ = conn.Close()
		t.Fatal("Open of 127.0.0.1:1 succeeded")
	}
	if took := time.Since(start); took > DialTimeout+time.Second {
		t.Errorf("Open took %v; want at most about DialTimeout (%v)", took, DialTimeout)
	}
}
