// Package reporting owns the ClickHouse side of Puntos: the schema of the
// copy of the ledger events that the reporting sink keeps there, and the
// report queries the back office and analysts run on it.
//
// ClickHouse holds events, not balances. Every posting of the ledger is one
// event whose points are the posting's change to the member's available and
// pending points (see bus.Event), so sums of events give flows over a period
// and, summed from the beginning, what the program owes its members.
//
// The server is Debian's ClickHouse 18.16 driven with clickhouse-go/v2 over
// the native protocol; see package reporting/clickhouse for what that pairing
// allows. In short: rows go in through PrepareBatch with the columns named,
// everything else through Exec and Query.
package reporting

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/puntos-loyalty/puntos/bus"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string // the file name, such as 0001_ledger_events.sql

	statements []string
}

// createSchemaVersion makes the table that records the applied migrations.
// Two processes migrating at once may both record a version; readers take
// the distinct versions.
const createSchemaVersion = `CREATE TABLE IF NOT EXISTS schema_version (
	version    UInt32,
	name       String,
	applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree() ORDER BY version`

// Migrations lists the embedded migrations in order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)

	out := make([]Migration, 0, len(names))
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil || version <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", base)
		}
		if len(out) > 0 && out[len(out)-1].Version == version {
			return nil, fmt.Errorf("migration %s: version %d used twice", base, version)
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return nil, err
		}
		stmts := splitStatements(string(body))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s: no statement", base)
		}
		out = append(out, Migration{Version: version, Name: base, statements: stmts})
	}
	return out, nil
}

// splitStatements cuts a migration file into statements: comment lines
// (starting with --) are dropped, and a statement ends with a line that ends
// with ';'. The native protocol takes one statement per query.
func splitStatements(body string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(body) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, stmt)
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		out = append(out, rest)
	}
	return out
}

// Migrate brings the schema of conn's database up to date: it applies, in
// order, the embedded migrations that schema_version does not list, and
// records each one after its statements ran. It is safe to call at every
// start and from several processes at once, since every statement is
// idempotent. It returns the first error, with the migrations before it
// applied and recorded.
func Migrate(ctx context.Context, conn driver.Conn) error {
	all, err := Migrations()
	if err != nil {
		return err
	}
	if err := conn.Exec(ctx, createSchemaVersion); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return err
	}

	for _, m := range all {
		if done[m.Version] {
			continue
		}
		for i, stmt := range m.statements {
			if err := conn.Exec(ctx, stmt); err != nil && !columnThere(stmt, err) {
				return fmt.Errorf("apply migration %s, statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := recordVersion(ctx, conn, m); err != nil {
			return err
		}
	}
	return nil
}

// errColumnExists is ClickHouse's ILLEGAL_COLUMN, which an ADD COLUMN of a
// column the table has fails with.
const errColumnExists = 44

// columnThere tells whether err is stmt, an ADD COLUMN, failing because the
// column is already there: 18.16 knows no ADD COLUMN IF NOT EXISTS, so
// this is how such a migration is safe to run twice, or from two processes
// at once.
func columnThere(stmt string, err error) bool {
	var ex *proto.Exception
	return errors.As(err, &ex) && ex.Code == errColumnExists &&
		strings.Contains(strings.ToUpper(stmt), "ADD COLUMN") &&
		strings.Contains(ex.Message, "already exists")
}

// SchemaVersion is the highest migration applied to conn's database, 0 when
// there is none. It changes nothing.
func SchemaVersion(ctx context.Context, conn driver.Conn) (int, error) {
	var tables uint64
	err := conn.QueryRow(ctx, `SELECT count() FROM system.tables
		WHERE database = currentDatabase() AND name = 'schema_version'`).Scan(&tables)
	if err != nil {
		return 0, fmt.Errorf("read schema_version: %w", err)
	}
	if tables == 0 {
		return 0, nil
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return 0, err
	}
	v := 0
	for version := range done {
		v = max(v, version)
	}
	return v, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn) (map[int]bool, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT version FROM schema_version`)
	if err != nil {
		return nil, fmt.Errorf("read schema_version: %w", err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_version: %w", err)
		}
		done[int(v)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_version: %w", err)
	}
	return done, nil
}

func recordVersion(ctx context.Context, conn driver.Conn, m Migration) error {
	batch, err := conn.PrepareBatch(ctx,
		`INSERT INTO schema_version (version, name, applied_at)`)
	if err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	defer abortUnsent(batch)
	if err := batch.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	return nil
}

// abortUnsent gives back the connection of a batch that failed before Send.
func abortUnsent(batch driver.Batch) {
	if !batch.IsSent() {
		_ = batch.Abort()
	}
}

// insertEvents names the columns, as an insert must on ClickHouse 18.16.
const insertEvents = `INSERT INTO ledger_events (event_id, kind, program, member, member_ref,
	points, occurred_at, recorded_at, source, txn_id, rule_version, partner, channel, posting_id,
	tier)`

// ClickHouse's DateTime holds whole seconds from 1970 to early 2106, in a UInt32.
var (
	minDateTime = time.Unix(0, 0).UTC()
	maxDateTime = time.Unix(1<<32-1, 0).UTC()
)

// ErrUnstorable marks an event that ClickHouse can never hold; inserting it
// again will not help.
var ErrUnstorable = errors.New("event cannot be stored")

// CheckEvent reports, with an error wrapping ErrUnstorable, why ev cannot be
// stored: no id, kind or program, or a time outside 1970-2106.
func CheckEvent(ev bus.Event) error {
	switch {
	case ev.ID == "" || ev.Kind == "" || ev.Program == "":
		return fmt.Errorf("%w: no event_id, kind or program", ErrUnstorable)
	case ev.OccurredAt.Before(minDateTime) || ev.OccurredAt.After(maxDateTime):
		return fmt.Errorf("%w: occurred_at %s out of range", ErrUnstorable,
			ev.OccurredAt.Format(time.RFC3339))
	case ev.RecordedAt.Before(minDateTime) || ev.RecordedAt.After(maxDateTime):
		return fmt.Errorf("%w: recorded_at %s out of range", ErrUnstorable,
			ev.RecordedAt.Format(time.RFC3339))
	}
	return nil
}

// InsertEvents stores evs in one insert. Storing an event again is harmless:
// the reports count each event id once. Times lose their fraction of a
// second. It checks every event first (CheckEvent) and stores none when one
// is unstorable; any other error leaves it unknown whether the rows arrived,
// and inserting them all again is the remedy.
func InsertEvents(ctx context.Context, conn driver.Conn, evs []bus.Event) error {
	if len(evs) == 0 {
		return nil
	}
	for _, ev := range evs {
		if err := CheckEvent(ev); err != nil {
			return fmt.Errorf("event %q: %w", ev.ID, err)
		}
	}

	batch, err := conn.PrepareBatch(ctx, insertEvents)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer abortUnsent(batch)
	for _, ev := range evs {
		err := batch.Append(ev.ID, ev.Kind, ev.Program, ev.Member, ev.MemberRef, ev.Points,
			ev.OccurredAt.UTC(), ev.RecordedAt.UTC(), ev.Source, ev.TxnID, ev.RuleVersion,
			ev.Partner, ev.Channel, ev.PostingID, ev.Tier)
		if err != nil {
			return fmt.Errorf("append event %s: %w", ev.ID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d events: %w", len(evs), err)
	}
	return nil
}
