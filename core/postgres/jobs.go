package postgres

import (
	"context"
	"fmt"
	"sync"
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
// lock); the others return at once with ran=false. A large sweep works on
// sweepWorkers batches at once, taken in order from the list; batches
// never share a member, so they never wait for each other.
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
	workers := 1
	if len(ids) >= sweepParallelFrom*batch {
		workers = sweepWorkers
	}
	res, err = l.sweepBatches(ctx, at, ids, batch, workers)
	return res, true, err
}

// sweepWorkers is how many batches a large sweep works on at once: one per
// core of the machine the figures are for, PostgreSQL doing most of
// the work. sweepParallelFrom is, in batches, what makes a sweep large;
// a small one keeps to one batch after the other.
const (
	sweepWorkers      = 2
	sweepParallelFrom = 16
)

// sweepBatches brings the members ids up to date in batches of batch
// members, one transaction each, taken in order by workers goroutines. It
// stops at the first error; batches already committed stay done.
func (l *Ledger) sweepBatches(ctx context.Context, at time.Time, ids [][16]byte, batch,
	workers int) (SweepResult, error) {
	var (
		mu       sync.Mutex
		res      SweepResult
		next     int
		firstErr error
		wg       sync.WaitGroup
	)
	// take returns the next batch, or nil once the list is done or a batch
	// failed.
	take := func() [][16]byte {
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || next >= len(ids) {
			return nil
		}
		chunk := ids[next:min(next+batch, len(ids))]
		next += len(chunk)
		return chunk
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for chunk := take(); chunk != nil; chunk = take() {
				err := retryDeadlock(func() error {
					return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
						return l.sweepBatch(ctx, tx, at, chunk)
					})
				})
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("sweep batch: %w", err)
					}
				} else {
					res.Members += len(chunk)
					res.Batches++
					if l.afterSweepBatch != nil {
						l.afterSweepBatch(res)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res, firstErr
}

// Publisher publishes ledger events as the outbox keeps them; the bus
// implements it.
type Publisher interface {
	PublishStoredEvents(ctx context.Context, evs []bus.StoredEvent) error
}

// RelayOutbox publishes up to limit outbox events in order and deletes them
// once the bus acknowledged them. Events carry their id as the bus's
// de-duplication id, so a crash between publish and delete publishes nothing
// twice. Concurrent relays skip each other's rows. It returns how many it
// published.
func (l *Ledger) RelayOutbox(ctx context.Context, pub Publisher, limit int) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, event_id::text, subject, body FROM outbox
			ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		var ids []int64
		var evs []bus.StoredEvent
		for rows.Next() {
			var id int64
			var ev bus.StoredEvent
			if err := rows.Scan(&id, &ev.ID, &ev.Subject, &ev.Body); err != nil {
				rows.Close()
				return err
			}
			ids, evs = append(ids, id), append(evs, ev)
		}
		rows.Close()
		if len(ids) == 0 {
			return rows.Err()
		}
		if err := pub.PublishStoredEvents(ctx, evs); err != nil {
			return fmt.Errorf("publish events: %w", err)
		}
		n = len(ids)
		_, err = tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids)
		return err
	})
	return n, err
}

// OutboxWaiting is how many ledger events the outbox holds (written by
// ledger transactions, not yet relayed to the bus) and when the oldest of
// them was written; oldest is zero when there is none. The relay keeps the
// outbox near empty, so the count is a short scan; it grows only while the
// bus does not take the events.
func (l *Ledger) OutboxWaiting(ctx context.Context) (n int64, oldest time.Time, err error) {
	var at *time.Time
	err = l.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM outbox`).Scan(&n, &at)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count outbox: %w", err)
	}
	if at != nil {
		oldest = *at
	}
	return n, oldest, nil
}
