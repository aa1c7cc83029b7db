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
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
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

// Exactly once. The reports read flows_hourly, which a materialized view
// fills from each block inserted into ledger_events; a view sees the block,
// not the table, so a copy of an event stored twice would count twice there
// even though ReplacingMergeTree folds the copies in ledger_events later.
// The bus does deliver an event more than once (a sink that crashed between
// its insert and its acknowledgement, a copy published again after the
// stream's de-duplication window). InsertEvents therefore stores only what
// ledger_events does not hold yet: it drops the copies within the batch,
// asks ledger_events which of the remaining ids it has (a lookup by program,
// event id and the batch's span of occurred_at, which the primary key and
// the monthly partitions narrow to a few granules: copies of an event are
// identical, so they share program and occurred_at) and inserts the rest.
// A batch whose insert failed half way (one part per month is written) is
// completed, not doubled, by inserting it again.
//
// Two inserts of the same event must not both pass the lookup: InsertEvents
// calls on one connection pool run one at a time, and every sink process
// of a deployment shares one durable consumer, which hands a message to one
// process at a time. What is left is a copy delivered to a second process
// while the first is still inserting it (its acknowledgement wait ran out
// mid-insert, or a copy published again under another message id arrived at
// the same moment); Reconcile reads flows_hourly, so it shows such a double
// count as a kind whose ClickHouse total exceeds the ledger's with no
// posting listed as extra, and RebuildFlows puts the figures right.

// insertLocks serialises InsertEvents per connection pool.
var insertLocks sync.Map // driver.Conn -> *sync.Mutex

// lookupChunk bounds the ids of one lookup query, whose text ClickHouse
// parses whole (max_query_size is 256 KiB by default).
const lookupChunk = 1000

// InsertEvents stores evs, each event once: an event already in
// ledger_events, or twice in evs, is stored once (see "Exactly once"), so
// inserting a batch again is harmless. Times lose their fraction of a
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

	mu, _ := insertLocks.LoadOrStore(conn, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	fresh, err := unstored(ctx, conn, evs)
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx, insertEvents)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer abortUnsent(batch)
	for _, ev := range fresh {
		err := batch.Append(ev.ID, ev.Kind, ev.Program, ev.Member, ev.MemberRef, ev.Points,
			ev.OccurredAt.UTC(), ev.RecordedAt.UTC(), ev.Source, ev.TxnID, ev.RuleVersion,
			ev.Partner, ev.Channel, ev.PostingID, ev.Tier)
		if err != nil {
			return fmt.Errorf("append event %s: %w", ev.ID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d events: %w", len(fresh), err)
	}
	return nil
}

// unstored is evs without the copies within evs and without the events
// ledger_events already holds, in the order of evs.
func unstored(ctx context.Context, conn driver.Conn, evs []bus.Event) ([]bus.Event, error) {
	type key struct{ program, id string }
	seen := make(map[key]bool, len(evs))
	uniq := make([]bus.Event, 0, len(evs))
	for _, ev := range evs {
		k := key{ev.Program, ev.ID}
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, ev)
		}
	}

	stored := map[key]bool{}
	for start := 0; start < len(uniq); start += lookupChunk {
		chunk := uniq[start:min(start+lookupChunk, len(uniq))]
		keys := make([]clickhouse.GroupSet, len(chunk))
		first, last := chunk[0].OccurredAt, chunk[0].OccurredAt
		for i, ev := range chunk {
			keys[i] = clickhouse.GroupSet{Value: []any{ev.Program, ev.ID}}
			if ev.OccurredAt.Before(first) {
				first = ev.OccurredAt
			}
			if ev.OccurredAt.After(last) {
				last = ev.OccurredAt
			}
		}
		rows, err := conn.Query(ctx, `SELECT DISTINCT program, event_id FROM ledger_events
			WHERE occurred_at >= ? AND occurred_at <= ? AND (program, event_id) IN (?)`,
			first.UTC().Truncate(time.Second), last.UTC().Truncate(time.Second),
			keys)
		if err != nil {
			return nil, fmt.Errorf("look up stored events: %w", err)
		}
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.program, &k.id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up stored events: %w", err)
			}
			stored[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("look up stored events: %w", err)
		}
	}
	if len(stored) == 0 {
		return uniq, nil
	}
	out := uniq[:0]
	for _, ev := range uniq {
		if !stored[key{ev.Program, ev.ID}] {
			out = append(out, ev)
		}
	}
	return out, nil
}
