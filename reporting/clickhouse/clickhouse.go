// Package clickhouse connects Puntos to ClickHouse, where the reporting side keeps its
// copy of the ledger for analytical queries.
//
// The servers we run are Debian's clickhouse-server 18.16 (from 2018), driven with
// clickhouse-go/v2. Only part of that pairing works, and the rules below come from
// trying it (see reporting/clickhouse/clickhouse_test.go for the ones a test pins):
//
//   - Use the native protocol. clickhouse-go's HTTP protocol does not work with 18.16.
//   - Insert with PrepareBatch and name the columns:
//     PrepareBatch(ctx, "INSERT INTO t (a, b, c)"). An INSERT sent through Exec
//     does not return; async insert is refused.
//   - DDL (CREATE, DROP, ALTER) and SELECT through Exec and Query work.
//   - Missing on 18.16: DateTime64, TTL, Map, async insert. LowCardinality needs the
//     setting allow_experimental_low_cardinality_type=1.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DialTimeout bounds how long opening a connection to ClickHouse may take. The server
// is on the same machine or close by, so a few seconds tell a stopped one apart.
const DialTimeout = 3 * time.Second

// PingTimeout bounds Ping when the caller's context has no earlier deadline.
const PingTimeout = 5 * time.Second

// Open connects to the ClickHouse server at addr ("host:port" of the native protocol,
// 19000 on a machine set up by deploy/local/services.sh) and checks that database
// exists and answers. It logs in as the user "default" with no password.
//
// The returned connection is a pool; close it when done. Open fails, without leaving a
// connection behind, when the server cannot be reached or the database is missing.
func Open(ctx context.Context, addr, database string) (driver.Conn, error) {
	if addr == "" {
		return nil, errors.New("open clickhouse: no address")
	}

	conn, err := ch.Open(&ch.Options{
		Protocol: ch.Native,
		Addr:     []string{addr},
		Auth: ch.Auth{
			Database: database,
			Username: "default",
		},
		DialTimeout: DialTimeout,
		ClientInfo: ch.ClientInfo{
			Products: []struct{ Name, Version string }{{Name: "puntos"}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", addr, err)
	}

	// clickhouse-go dials lazily: ping now, so that a wrong address or database
	// shows up here rather than at the first query.
	if err := Ping(ctx, conn); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("open clickhouse %s/%s: %w", addr, database, err)
	}
	return conn, nil
}

// Ping checks that the server behind conn answers, waiting at most PingTimeout.
func Ping(ctx context.Context, conn driver.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()

	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse: %w", err)
	}
	return nil
}

// codeUnknownDatabase is ClickHouse's error code for a database that does
// not exist.
const codeUnknownDatabase = 81

// databaseName is what OpenCreating creates: a plain identifier, so that
// it needs no quoting.
var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// OpenCreating is Open, creating the database first when the server says
// it does not exist: the reporting sink owns its schema, so a database
// named by hand (PUNTOS_CLICKHOUSE_DB) needs no step of its own. created
// reports whether it made the database.
func OpenCreating(ctx context.Context, addr, database string) (conn driver.Conn,
	created bool, err error) {
	conn, err = Open(ctx, addr, database)
	var exc *ch.Exception
	if err == nil || !errors.As(err, &exc) || exc.Code != codeUnknownDatabase {
		return conn, false, err
	}
	if !databaseName.MatchString(database) {
		return nil, false, fmt.Errorf("clickhouse database %q does not exist, and is not "+
			"a name Puntos creates (letters, digits and _): create it by hand: %w",
			database, err)
	}
	admin, aerr := Open(ctx, addr, "default")
	if aerr != nil {
		return nil, false, fmt.Errorf("create clickhouse database %s: %w", database, aerr)
	}
	defer admin.Close()
	if aerr := admin.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+database); aerr != nil {
		return nil, false, fmt.Errorf("create clickhouse database %s: %w", database, aerr)
	}
	conn, err = Open(ctx, addr, database)
	return conn, err == nil, err
}
