package app

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// partitionLockBase is added to a partition number to form the PostgreSQL
// advisory lock that makes one core instance the only consumer of it.
const partitionLockBase = 7263100

// startCore runs the command consumers, the outbox relay and the sweep.
// Consumers stop with cctx; the relay and sweep with bg.
func (a *App) startCore(cctx, bg context.Context) {
	a.leases = &leases{url: a.cfg.DatabaseURL}
	if a.cfg.LedgerWriters > 0 {
		a.group = newGroupCommit(a.applyLedger, a.cfg.LedgerWriters, a.cfg.BatchSize)
	}
	var consumers sync.WaitGroup
	for p := 0; p < a.Bus.Partitions(); p++ {
		a.wg.Add(1)
		consumers.Add(1)
		go func() {
			defer a.wg.Done()
			defer consumers.Done()
			a.leasePartition(cctx, p)
		}()
	}
	consumersDone := make(chan struct{})
	go func() {
		consumers.Wait()
		close(consumersDone)
	}()
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		a.relayLoop(bg, cctx, consumersDone)
	}()
	go func() {
		defer a.wg.Done()
		a.sweepLoop(cctx)
	}()
}

// leases holds the partition leases of this process: PostgreSQL advisory
// locks taken on one dedicated connection, so that leases never use up the
// pool that applies batches. If that connection breaks, every lease is lost
// with it, and every consumer stops until its lease is taken again.
type leases struct {
	mu   sync.Mutex
	url  string
	conn *pgx.Conn
	gen  int // bumped when the connection is replaced
}

// acquire tries to take the lease of partition p. It returns the generation
// of the connection that holds it.
func (l *leases) acquire(ctx context.Context, p int) (bool, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil || l.conn.IsClosed() {
		conn, err := pgx.Connect(ctx, l.url)
		if err != nil {
			return false, 0, err
		}
		l.conn = conn
		l.gen++
	}
	var got bool
	err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, partitionLockBase+p).Scan(&got)
	if err != nil {
		_ = l.conn.Close(context.Background())
		return false, 0, err
	}
	return got, l.gen, nil
}

// held reports whether the connection of generation gen still holds its locks.
func (l *leases) held(ctx context.Context, gen int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil || l.gen != gen || l.conn.IsClosed() {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.conn.Ping(pctx); err != nil {
		_ = l.conn.Close(context.Background())
		return false
	}
	return true
}

func (l *leases) release(p, gen int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil && l.gen == gen && !l.conn.IsClosed() {
		_, _ = l.conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`,
			partitionLockBase+p)
	}
}

func (l *leases) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		_ = l.conn.Close(context.Background())
	}
}

// tellLeaseHeld says that another core on the same database holds the
// lease of partition p. Beside a NATS server of its own that is a standby,
// which takes over when the other stops. With the embedded NATS it is a
// mistake: this process's commands are on its own bus, which no other
// process reads, so they wait (answered 202) until the other stops.
func (a *App) tellLeaseHeld(p int) {
	if a.cfg.NATSURL != "" {
		a.log.Info("Partition leased by another core on this database; standing by",
			"partition", p)
		return
	}
	a.log.Warn("Partition leased by another process on this database: the commands this "+
		"process takes wait until that one stops (two `puntos run` on one database, each "+
		"with its embedded NATS, do not share work; run one, or set NATS_URL for all)",
		"partition", p)
}

// leasePartition consumes partition p while this process holds its lease,
// so that one member's commands are applied by one consumer, in order.
func (a *App) leasePartition(ctx context.Context, p int) {
	told := false // that another process holds the lease, said once per wait
	for ctx.Err() == nil {
		got, gen, err := a.leases.acquire(ctx, p)
		if err != nil || !got {
			if err != nil && ctx.Err() == nil {
				a.leaseFail.fail(a.log, "Partition lease not taken", "partition", p,
					"error", err)
			}
			if err == nil && !told {
				told = true
				a.tellLeaseHeld(p)
			}
			sleep(ctx, 2*time.Second)
			continue
		}
		a.leaseFail.ok(a.log, "Partition leases taken again")
		if told {
			a.log.Info("Partition lease taken: applying its commands", "partition", p)
		}
		told = false
		a.log.Debug("Consuming partition", "partition", p)

		// Consume until ctx ends or the lease is lost.
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			for sleep(lctx, 5*time.Second) {
				if !a.leases.held(lctx, gen) {
					a.log.Warn("Partition lease lost; pausing", "partition", p)
					cancel()
				}
			}
		}()
		a.metrics.leased.Inc()
		err = a.Bus.Consume(lctx, p, a.cfg.BatchSize, 100*time.Millisecond,
			func(ctx context.Context, batch []*natsbus.Delivery) error {
				return a.handleBatch(ctx, batch)
			})
		a.metrics.leased.Dec()
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Error("Consumer stopped", "partition", p, "error", err)
		}
		a.leases.release(p, gen)
		sleep(ctx, time.Second)
	}
}

// handleBatch applies a batch in one ledger transaction. When the
// transaction fails, the commands are tried one by one, in order, so that
// those before a poisonous command are not held back by it; from the first
// that still fails, the rest are redelivered (and a command that keeps
// failing is dead-lettered after too many attempts).
//
// A failure caused by PostgreSQL rather than by the commands uses up none of
// those attempts: while PostgreSQL does not answer, the batch waits for it
// (however long that takes) and is then applied again; a transient refusal
// (a deadlock, a serialization failure, a dropped connection) is retried in
// place a few times. If the wait is cut short (the lease is lost, the
// process stops) the batch goes back to the bus marked as an outage.
func (a *App) handleBatch(ctx context.Context, batch []*natsbus.Delivery) error {
	// A batch that started is finished even during shutdown.
	work := context.WithoutCancel(ctx)
	transient := 0
	for {
		n, why, err := a.applyBatch(work, batch)
		batch = batch[n:]
		switch {
		case err == nil:
			return nil
		case why == pgDown:
			transient = 0
			if !a.awaitPostgres(ctx, batch, err) {
				return natsbus.Unavailable(err)
			}
		case why == pgTransient && transient < maxTransientRetries:
			transient++
			if !sleep(ctx, time.Duration(transient)*100*time.Millisecond) {
				return natsbus.Unavailable(err)
			}
		default:
			a.log.Warn("Command failed; it will be redelivered", "txn_id",
				batch[0].Command.TxnID, "source", batch[0].Command.Source, "error", err)
			return err
		}
	}
}

// maxTransientRetries bounds the immediate retries of a batch refused with a
// transient error while PostgreSQL answers; after them the failure counts
// as an attempt, so that a command that always causes one is not retried in
// place forever.
const maxTransientRetries = 5

// failure says why applying commands failed.
type failure int

const (
	byCommands  failure = iota // the commands, as sent (or a fault not known to pass)
	pgTransient                // a refusal of PostgreSQL that passes when tried again
	pgDown                     // PostgreSQL does not answer
)

// applyBatch applies batch and announces the results. It returns how many
// commands at the head of batch are done (applied or handed back for
// redelivery), and, when the others are not, the error and its cause.
func (a *App) applyBatch(ctx context.Context, batch []*natsbus.Delivery) (int, failure, error) {
	start := time.Now()
	cmds := make([]bus.Command, len(batch))
	for i, d := range batch {
		cmds[i] = d.Command
	}
	var (
		applied []postgres.Applied
		err     error
	)
	if a.group != nil {
		applied, err = a.group.Apply(ctx, cmds)
	} else {
		applied, err = a.applyLedger(ctx, cmds)
	}
	a.metrics.batches.Observe(time.Since(start).Seconds())
	if err == nil {
		for i, d := range batch {
			a.finish(ctx, d, applied[i])
		}
		return len(batch), 0, nil
	}
	why := a.failureOf(ctx, err)
	if len(batch) == 1 || why != byCommands {
		return 0, why, err
	}
	a.log.Warn("Batch failed; applying its commands one by one", "size", len(batch),
		"error", err)
	for i, d := range batch {
		one, err := a.applyLedger(ctx, []bus.Command{d.Command})
		if err != nil {
			if why := a.failureOf(ctx, err); why != byCommands {
				return i, why, err
			}
			if postgres.Unstorable(err) {
				// It fails the same way every time: refuse it now, as the
				// ledger refuses an invalid command, and go on with the rest.
				if a.refuse(ctx, d, err) {
					continue
				}
			}
			// This command and every later one go back, untried: applying a
			// later command of the same member first would break its order.
			a.log.Warn("Command failed; it and the rest of its batch will be redelivered",
				"txn_id", d.Command.TxnID, "source", d.Command.Source, "error", err)
			for _, rest := range batch[i:] {
				_ = rest.Nak(time.Second)
			}
			return len(batch), 0, nil
		}
		a.finish(ctx, d, one[0])
	}
	return len(batch), 0, nil
}

// applyLedger applies cmds in one ledger transaction, timed.
func (a *App) applyLedger(ctx context.Context, cmds []bus.Command) ([]postgres.Applied, error) {
	start := time.Now()
	applied, err := a.Ledger.ApplyBatch(ctx, cmds)
	a.metrics.ledgerTx.Observe(time.Since(start).Seconds())
	return applied, err
}

// refuse stores and announces the refusal of a command PostgreSQL cannot
// store, and dead-letters it. It reports whether that was done.
func (a *App) refuse(ctx context.Context, d *natsbus.Delivery, cause error) bool {
	why := core.Errorf(core.Invalid, "",
		"holds a value the ledger cannot store (%s)", pgMessage(cause))
	res, err := a.Ledger.Refuse(ctx, d.Command, why)
	if err != nil {
		a.log.Warn("Refusal not stored; the command will be redelivered", "txn_id",
			d.Command.TxnID, "source", d.Command.Source, "error", err)
		return false
	}
	a.finish(ctx, d, postgres.Applied{Result: res, Dead: why.Error()})
	return true
}

// pgMessage is PostgreSQL's own message in err, without the SQL around it.
func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}

// failureOf tells why the ledger failed with err: PostgreSQL does not
// answer a ping, or err is one PostgreSQL gives when it is busy or going
// away, or else (as far as can be told) the commands themselves.
func (a *App) failureOf(ctx context.Context, err error) failure {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if perr := a.Pool.Ping(pctx); perr != nil {
		return pgDown
	}
	if transientError(err) {
		return pgTransient
	}
	return byCommands
}

// transientError reports whether err is a failure of the connection or a
// refusal that PostgreSQL gives whatever the commands hold: a connection
// lost or refused, a timeout, a server shutting down or out of resources, a
// deadlock or a serialization failure.
func transientError(err error) bool {
	if errors.Is(err, postgres.ErrCommandRaced) {
		return true // applied again, the batch finds the command recorded
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if len(pgErr.Code) < 2 {
			return false
		}
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"40", // transaction rollback: serialization failure, deadlock
			"53", // insufficient resources: too many connections, disk full
			"57", // operator intervention: shutting down, query canceled
			"58": // system error: I/O
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// awaitPostgres waits until PostgreSQL answers again, keeping the batch
// from being delivered again meanwhile. It returns false if ctx ended first.
func (a *App) awaitPostgres(ctx context.Context, batch []*natsbus.Delivery, cause error) bool {
	a.log.Warn("PostgreSQL does not answer; the batch waits for it", "size", len(batch),
		"error", cause)
	since := time.Now()
	keep := max(a.Bus.AckWait()/3, 100*time.Millisecond)
	kept := time.Now()
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if !sleep(ctx, min(wait, keep)) {
			return false
		}
		if time.Since(kept) >= keep {
			for _, d := range batch {
				if err := d.InProgress(); err != nil {
					a.log.Warn("Could not hold a waiting command", "txn_id", d.Command.TxnID,
						"error", err)
				}
			}
			kept = time.Now()
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := a.Pool.Ping(pctx)
		cancel()
		if err == nil {
			a.log.Info("PostgreSQL answers again; applying the batch", "size", len(batch),
				"waited", time.Since(since).Round(time.Millisecond))
			return true
		}
	}
}

// finish announces a committed command's result and dead-letters a command
// that can never succeed as sent.
func (a *App) finish(ctx context.Context, d *natsbus.Delivery, ap postgres.Applied) {
	a.metrics.applied.WithLabelValues(ap.Result.Kind, ap.Result.Status).Inc()
	if err := a.Bus.PublishResultJSON(ap.Result, ap.Encoded); err != nil {
		a.log.Warn("Result not announced; callers will read it from the status URL",
			"txn_id", ap.Result.TxnID, "error", err)
	}
	if ap.Dead != "" {
		a.log.Warn("Command dead-lettered", "txn_id", d.Command.TxnID,
			"source", d.Command.Source, "kind", d.Command.Kind, "reason", ap.Dead)
		if err := a.Bus.DeadLetterRefused(ctx, d, ap.Dead); err != nil {
			a.log.Error("Dead-letter failed", "txn_id", d.Command.TxnID, "error", err)
		}
		// Its refusal is stored in the ledger; it needs no redelivery.
		_ = d.Term()
	}
}

// relayBatch is the most events one relay pass moves; relayPause is the
// wait after a pass that found fewer.
const (
	relayBatch = 500
	relayPause = 200 * time.Millisecond
)

// relayLoop moves ledger events from the outbox to the bus. When cctx ends
// it waits until the consumers have stopped (consumersDone), so that the
// events of batches still committing are in the outbox, relays what is
// left, then returns.
//
// Only a full pass goes on at once. After a partial one the loop waits
// relayPause, so that the events gather and the next pass stores them as an
// atomic batch, with one disk sync, rather than one sync per event (small
// groups go message by message, see natsbus.PublishEvents): passes straight
// after each other under a steady load carried a handful of events each.
// An event so reaches the bus at most about relayPause after its commit.
func (a *App) relayLoop(bg, cctx context.Context, consumersDone <-chan struct{}) {
	pause := relayPause
	for cctx.Err() == nil && bg.Err() == nil {
		n, err := a.relayOnce(bg)
		if err == nil && n == relayBatch {
			continue
		}
		// While the relay fails (the database or the bus down), it waits
		// longer each time, up to five seconds.
		if err != nil {
			pause = min(2*pause, 5*time.Second)
		} else {
			pause = relayPause
		}
		sleep(cctx, pause)
	}
	select {
	case <-consumersDone:
	case <-bg.Done():
		return
	}
	for bg.Err() == nil {
		if n, err := a.relayOnce(bg); err != nil || n == 0 {
			return
		}
	}
}

// relayOnce relays one pass of the outbox, at most relayBatch events.
func (a *App) relayOnce(bg context.Context) (int, error) {
	n, err := a.Ledger.RelayOutbox(bg, a.Bus, relayBatch)
	if err != nil && bg.Err() == nil {
		a.relayFail.fail(a.log, "Outbox relay failed; retrying", "error", err)
	} else if err == nil {
		a.relayFail.ok(a.log, "Outbox relay works again")
	}
	a.metrics.relayed.Add(float64(n))
	return n, err
}

// sweepLoop expires lots, matures pending points, frees stale holds and
// warns of coming expiries.
func (a *App) sweepLoop(ctx context.Context) {
	if a.cfg.SweepInterval <= 0 {
		return
	}
	for {
		now := time.Now()
		res, ran, err := a.Ledger.Sweep(ctx, now, 500)
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Error("Sweep failed", "error", err)
		case ran && res.Members > 0:
			a.log.Info("Sweep done", "members", res.Members, "batches", res.Batches)
		}
		a.notifyUpcoming(ctx, now)
		if !sleep(ctx, a.cfg.SweepInterval) {
			return
		}
	}
}

// sleep waits d or until ctx is done; it reports whether the wait ran out.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
