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
// expiry. It works in batches of members, one transaction each, so it can
// stop at any point and start again without doing anything twice: a member
// already brought up to date has nothing due. Only one sweep runs at a time
// across all instances (a PostgreSQL advisory lock); the others return at
// once with ran=false.
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
	after := "00000000-0000-0000-0000-000000000000"
	for {
		var ids []string
		rows, err := l.pool.Query(ctx, `SELECT id FROM (
				SELECT member_id AS id FROM lots
				WHERE remaining > held AND expires_at <= $1 AND member_id > $2
				UNION
				-- A pending lot emptied before it matured (reversed, expired,
				-- forfeited) has nothing to mature and stays pending.
				SELECT member_id FROM lots
				WHERE pending AND remaining > 0 AND spendable_from <= $1 AND member_id > $2
				UNION
				SELECT member_id FROM holds WHERE status = 'open' AND expires_at <= $1
				  AND member_id > $2) d
			ORDER BY id LIMIT $3`, at, after, batch)
		if err != nil {
			return res, true, fmt.Errorf("select due members: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return res, true, err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) == 0 {
			return res, true, rows.Err()
		}
		err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
			t := l.newTxn(tx)
			t.now = at.UTC()
			t.system = "puntos.sweep"
			for _, id := range ids {
				m, err := lockMemberID(ctx, tx, id)
				if err != nil {
					return err
				}
				prog, err := t.programByID(ctx, m.programID)
				if err != nil {
					return err
				}
				if err := t.refresh(ctx, prog, m); err != nil {
					return err
				}
			}
			return t.flushEvents(ctx)
		})
		if err != nil {
			return res, true, fmt.Errorf("sweep batch: %w", err)
		}
		res.Members += len(ids)
		res.Batches++
		after = ids[len(ids)-1]
	}
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
