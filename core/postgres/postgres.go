// Package postgres stores the Puntos ledger in PostgreSQL. It is the only
// writer of the ledger: it applies bus commands in batches, one transaction
// per batch, and writes the resulting ledger events to an outbox in the same
// transaction.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Open connects to PostgreSQL and checks that it answers. The instants it
// reads come back in UTC (scanUTC).
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if cfg.MaxConns < 16 {
		cfg.MaxConns = 16
	}
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		scanUTC(conn.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return pool, nil
}

// scanUTC makes m read timestamptz values, alone and in arrays, as UTC
// times. pgx would give them in the process's local zone: on a server whose
// TZ is not UTC, an answer would then print some instants with that zone's
// offset (those read from the ledger) and others with Z (those made in Go).
// The instant is the same either way; the API and its files print UTC.
func scanUTC(m *pgtype.Map) {
	tz := &pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID,
		Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC}}
	m.RegisterType(tz)
	m.RegisterType(&pgtype.Type{Name: "_timestamptz", OID: pgtype.TimestamptzArrayOID,
		Codec: &pgtype.ArrayCodec{ElementType: tz}})
}

// CheckSchema refuses a database a newer Puntos migrated: it has tables
// and columns this version does not know to fill, and rows this version
// wrote there would lack them (an older binary started after an upgrade,
// or a rollback). Every process checks it at start, those that do not
// migrate (gateways, adapters) included. A database not migrated yet
// passes.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	return notNewer(ctx, conn)
}

// knownMigration is the newest migration this version carries.
func knownMigration() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	known := 0
	for _, name := range names {
		if v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "migrations/"),
			"_", 2)[0]); err == nil && v > known {
			known = v
		}
	}
	return known
}

func notNewer(ctx context.Context, conn *pgxpool.Conn) error {
	var newest int
	var newestName string
	err := conn.QueryRow(ctx, `SELECT version, name FROM schema_migrations
		ORDER BY version DESC LIMIT 1`).Scan(&newest, &newestName)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // no schema_migrations yet
		return nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	if known := knownMigration(); newest > known {
		return fmt.Errorf("the database was migrated by a newer Puntos (migration %s); this "+
			"version knows migrations up to %d and would write rows the newer one reads "+
			"wrong: run that version or a later one", newestName, known)
	}
	return nil
}

// Migrate applies the embedded migrations that the database lacks, in order,
// each in its own transaction, after refusing a database a newer version
// migrated (CheckSchema). Concurrent callers wait on an advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(7263001)`); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(7263001)`)

	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	if err := notNewer(ctx, conn); err != nil {
		return err
	}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number", base)
		}
		var done bool
		err = conn.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`,
			version).Scan(&done)
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if done {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx,
				`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, version, base)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", base, err)
		}
		log.Info("Applied migration", "migration", base)
	}
	return nil
}

// pgError maps a PostgreSQL error to a domain error where the database
// enforced a business rule; other errors come back unchanged.
func pgError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.ConstraintName == "postings_reverses_key":
		return core.Errorf(core.Conflict, "posting_id", "the posting was already reversed")
	case pe.ConstraintName == "members_program_ref_key":
		return core.Errorf(core.Conflict, "customer_ref", "already enrolled in this program")
	case pe.ConstraintName == "holds_source_txn_key":
		return core.Errorf(core.Conflict, "txn_id", "a hold with this transaction id exists")
	case pe.Code == "22003": // numeric_value_out_of_range
		return core.Errorf(core.Invalid, "points", "the result is out of range")
	case pe.Code == "23514" && strings.HasPrefix(pe.ConstraintName, "members_available"):
		return core.Errorf(core.Invalid, "points", "the balance would go out of range")
	}
	return err
}

// Unreachable reports whether err says the database could not be reached
// or the connection to it broke, rather than that a statement failed: the
// caller may answer that the service is unavailable for now.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return true
	}
	// A connection pgx found dead ("conn closed") names no error value.
	return strings.Contains(err.Error(), "conn closed")
}
