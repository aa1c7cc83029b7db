package chtest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// Ledger is a real PostgreSQL ledger on a database of the test's own, with
// a clock the test moves. Its commands come from the source "test".
type Ledger struct {
	L    *postgres.Ledger
	Pool *pgxpool.Pool

	t   testing.TB
	mu  sync.Mutex
	now time.Time
	seq int
	txn string
}

// NewLedger migrates a fresh database and returns a ledger on it whose clock
// reads start.
func NewLedger(t testing.TB, start time.Time) *Ledger {
	t.Helper()
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable (run `make services`): %v", err)
	}
	t.Cleanup(pool.Close)
	log := slog.New(slog.DiscardHandler)
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		t.Fatalf("migrate the ledger: %v", err)
	}

	l := &Ledger{L: postgres.New(pool, log), Pool: pool, t: t, now: start.UTC()}
	l.L.Clock = func() time.Time {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.now
	}
	return l
}

// SetNow moves the ledger's clock.
func (l *Ledger) SetNow(at time.Time) {
	l.mu.Lock()
	l.now = at.UTC()
	l.mu.Unlock()
}

// Now reads the ledger's clock.
func (l *Ledger) Now() time.Time { return l.L.Clock() }

// Do applies one command, occurring now, in a batch of its own and fails
// the test unless the ledger accepted it. It returns the command's outcome.
func (l *Ledger) Do(program, kind, member string, payload any) core.Outcome {
	l.t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.seq++
	txn := fmt.Sprintf("%s-%d", program, l.seq)
	l.txn = txn
	now := l.now
	l.mu.Unlock()

	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "test",
		TxnID: txn, Program: program, Member: member, Actor: "tester", Channel: "web",
		Payload: body, OccurredAt: now, ReceivedAt: now}
	cmd.Seal()
	out, err := l.L.ApplyBatch(context.Background(), []bus.Command{cmd})
	if err != nil {
		l.t.Fatalf("apply %s %s: %v", kind, member, err)
	}
	r := out[0].Result
	if r.Status != bus.StatusOK {
		l.t.Fatalf("%s %s: %s %+v", kind, member, r.Status, r.Error)
	}
	var o core.Outcome
	_ = json.Unmarshal(r.Data, &o)
	return o
}

// LastTxn is the transaction id of the last command Do applied.
func (l *Ledger) LastTxn() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.txn
}

// Sweep runs the ledger's sweep (maturation, hold expiry, lot expiry) as of
// the clock.
func (l *Ledger) Sweep() {
	l.t.Helper()
	if _, _, err := l.L.Sweep(context.Background(), l.Now(), 100); err != nil {
		l.t.Fatalf("sweep: %v", err)
	}
}

// Relay publishes every event waiting in the outbox to pub and returns how
// many it published.
func (l *Ledger) Relay(pub postgres.Publisher) int {
	l.t.Helper()
	total := 0
	for {
		n, err := l.L.RelayOutbox(context.Background(), pub, 500)
		if err != nil {
			l.t.Fatalf("relay outbox: %v", err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}

// Owed is the sum of available and pending points of the program's
// members, as the ledger's balance columns hold them.
func (l *Ledger) Owed(program string) int64 {
	l.t.Helper()
	var n int64
	err := l.Pool.QueryRow(context.Background(), `SELECT
			coalesce(sum(m.available + m.pending), 0)::bigint
		FROM members m JOIN programs g ON g.id = m.program_id WHERE g.code = $1`,
		program).Scan(&n)
	if err != nil {
		l.t.Fatalf("sum balances: %v", err)
	}
	return n
}

// PublisherFunc adapts a function of decoded events to postgres.Publisher.
type PublisherFunc func(ctx context.Context, evs []bus.Event) error

// PublishStoredEvents decodes the events and calls f.
func (f PublisherFunc) PublishStoredEvents(ctx context.Context, stored []bus.StoredEvent) error {
	evs := make([]bus.Event, len(stored))
	for i, s := range stored {
		if err := json.Unmarshal(s.Body, &evs[i]); err != nil {
			return fmt.Errorf("decode event %s: %w", s.ID, err)
		}
	}
	return f(ctx, evs)
}
