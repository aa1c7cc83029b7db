package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
)

// SweepResult counts what one sweep did.
type SweepResult struct {
	Members int `json:"members"`
	Batches int `json:"batches"`
}

// Sweep brings every member with due work up to date as of at: pending
// points that became spendable, holds past their time, lots past their
// expiry (one expiry posting per member, listing the lots it took). It
// reads the members with due work once, then works through them in batches
// of batch members, one transaction each, so it can stop at any point
// (an error, a cancelled ctx, a crash) and start again without doing
// anything twice or skipping anything: a member already brought up to date
// has nothing due, and one not reached yet is still due. A run missed by
// downtime is caught up by the next, whatever is due by then going at once.
// Only one sweep runs at a time across all instances (a PostgreSQL advisory
// lock); the others return at once with ran=false.
func (l *Ledger) Sweep(ctx context.Context, at time.Time, batch int) (res SweepResult,
	ran bool, err error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return res, false, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(7263002)`).Scan(&got); err != nil {
		return res, false, fmt.Errorf("sweep lock: %w", err)
	}
	if !got {
		return res, false, nil
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock(7263002)`)
	if batch <= 0 {
		batch = 500
	}
	ids, err := dueMembers(ctx, conn, at)
	if err != nil {
		return res, true, err
	}
	for start := 0; start < len(ids); start += batch {
		chunk := ids[start:min(start+batch, len(ids))]
		err := retryDeadlock(func() error {
			return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
				return l.sweepBatch(ctx, tx, at, chunk)
			})
		})
		if err != nil {
			return res, true, fmt.Errorf("sweep batch: %w", err)
		}
		res.Members += len(chunk)
		res.Batches++
		if l.afterSweepBatch != nil {
			l.afterSweepBatch(res)
		}
	}
	return res, true, nil
}

// Publisher publishes ledger events; the bus implements it.
type Publisher interface {
	PublishEvents(ctx context.Context, evs []bus.Event) error
}

// RelayOutbox publishes up to limit outbox events in order and deletes them
// once the bus acknowledged them. Events carry their id as the bus's
// de-duplication id, so a crash between publish and delete publishes nothing
// twice. Concurrent relays skip each other's rows. It returns how many it
// published.
func (l *Ledger) RelayOutbox(ctx context.Context, pub Publisher, limit int) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, body FROM outbox ORDER BY id LIMIT $1
			FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		var ids []int64
		var evs []bus.Event
		for rows.Next() {
			var id int64
			var ev bus.Event
			if err := rows.Scan(&id, &ev); err != nil {
				rows.Close()
				return err
			}
			ids, evs = append(ids, id), append(evs, ev)
		}
		rows.Close()
		if len(ids) == 0 {
			return rows.Err()
		}
		if err := pub.PublishEvents(ctx, evs); err != nil {
			return fmt.Errorf("publish events: %w", err)
		}
		n = len(ids)
		_, err = tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids)
		return err
	})
	return n, err
}
