package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

var (
	dbOnce  sync.Once
	dbPool  *pgxpool.Pool
	dbErr   error
	dbAdmin string // the connection string of the server's admin database
	dbName  string // the database made for this test binary
)

// TestMain runs the package's tests and drops the database they made.
func TestMain(m *testing.M) {
	code := m.Run()
	dropTestDB()
	os.Exit(code)
}

// testDB returns a pool on a fresh database made for this test binary and
// dropped when it exits.
func testDB(t tb) *pgxpool.Pool {
	t.Helper()
	dbOnce.Do(func() {
		ctx := context.Background()
		dbAdmin = testenv.AdminURL()
		conn, err := pgx.Connect(ctx, dbAdmin)
		if err != nil {
			dbErr = fmt.Errorf("PostgreSQL is not reachable (run `make services`): %w", err)
			return
		}
		defer conn.Close(ctx)
		name := fmt.Sprintf("puntos_t_%d_%d", time.Now().Unix(), rand.IntN(1e6))
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			dbErr = err
			return
		}
		dbName = name
		u, err := url.Parse(dbAdmin)
		if err != nil {
			dbErr = err
			return
		}
		u.Path = "/" + name
		dbPool, dbErr = Open(ctx, u.String())
		if dbErr != nil {
			return
		}
		dbErr = Migrate(ctx, dbPool, slog.New(slog.DiscardHandler))
	})
	if dbErr != nil {
		t.Fatalf("test database: %v", dbErr)
	}
	return dbPool
}

// dropTestDB closes the pool and drops the test binary's database.
func dropTestDB() {
	if dbName == "" {
		return
	}
	if dbPool != nil {
		dbPool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbAdmin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "drop test database %s: %v\n", dbName, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)"); err != nil {
		fmt.Fprintf(os.Stderr, "drop test database %s: %v\n", dbName, err)
	}
}

// tb is what the fixture needs of a test: *testing.T and *rapid.T both fit.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// fixture is a ledger with one program of its own.
type fixture struct {
	t    tb
	l    *Ledger
	prog string
	now  time.Time
	mu   sync.Mutex
	seq  int
}

func newFixture(t tb, prog core.Program) *fixture {
	t.Helper()
	return newFixtureOn(t, New(testDB(t), slog.New(slog.DiscardHandler)), prog)
}

// isolatedLedger is a ledger on a migrated database of its own, for tests
// that leave rows behind that would trouble others on the shared one.
func isolatedLedger(t *testing.T) *Ledger {
	t.Helper()
	ctx := context.Background()
	pool, err := Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	log := slog.New(slog.DiscardHandler)
	if err := Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	return New(pool, log)
}

// newFixtureOn is a fixture with a program of its own on l.
func newFixtureOn(t tb, l *Ledger, prog core.Program) *fixture {
	t.Helper()
	f := &fixture{t: t, l: l,
		prog: "p" + uuid.NewString()[:8], now: time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)}
	f.l.Clock = func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.now
	}
	if prog.Name == "" {
		prog.Name = "Test program"
	}
	r := f.do(core.KindProgramUpsert, "", f.txn(), prog)
	if r.Status != bus.StatusOK {
		t.Fatalf("create program: %+v", r.Error)
	}
	return f
}

func (f *fixture) setNow(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func (f *fixture) txn() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	// Transaction ids are unique per source across the whole database, and
	// every fixture shares the source "test": the program code keeps them apart.
	return fmt.Sprintf("%s-t%d", f.prog, f.seq)
}

// rawJSON is a payload sent as it is, valid JSON or not.
type rawJSON string

func (f *fixture) command(kind, member, txn string, payload any) bus.Command {
	body, err := json.Marshal(payload)
	if raw, ok := payload.(rawJSON); ok {
		body, err = []byte(raw), nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	c := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "test",
		TxnID: txn, Program: f.prog, Member: member, Actor: "tester", Payload: body,
		OccurredAt: f.l.Clock(), ReceivedAt: f.l.Clock()}
	c.Seal()
	return c
}

// do applies one command in a batch of its own and returns its result.
func (f *fixture) do(kind, member, txn string, payload any) bus.Result {
	f.t.Helper()
	return f.apply(f.command(kind, member, txn, payload))
}

func (f *fixture) apply(c bus.Command) bus.Result {
	f.t.Helper()
	out, err := f.l.ApplyBatch(context.Background(), []bus.Command{c})
	if err != nil {
		f.t.Fatalf("apply %s: %v", c.Kind, err)
	}
	return out[0].Result
}

func (f *fixture) ok(kind, member string, payload any) core.Outcome {
	f.t.Helper()
	r := f.do(kind, member, f.txn(), payload)
	if r.Status != bus.StatusOK {
		f.t.Fatalf("%s %s: %s %+v", kind, member, r.Status, r.Error)
	}
	var o core.Outcome
	_ = json.Unmarshal(r.Data, &o)
	return o
}

func (f *fixture) refused(kind, member string, payload any, want core.ErrorKind) {
	f.t.Helper()
	r := f.do(kind, member, f.txn(), payload)
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Kind != string(want) {
		f.t.Fatalf("%s %s: want refusal %s, got %s %+v", kind, member, want, r.Status, r.Error)
	}
}

func (f *fixture) enroll(ref string) {
	f.t.Helper()
	f.ok(core.KindEnroll, ref, core.Enroll{Channel: "test"})
}

func (f *fixture) balance(ref string) *BalanceView {
	f.t.Helper()
	b, err := f.l.Balance(context.Background(), f.prog, ref)
	if err != nil {
		f.t.Fatalf("balance %s: %v", ref, err)
	}
	return b
}

// wantBalance checks a member's three figures.
func (f *fixture) wantBalance(ref string, available, pending, held core.Points) {
	f.t.Helper()
	b := f.balance(ref).Balance
	if b.Available != available || b.Pending != pending || b.Held != held {
		f.t.Fatalf("%s: balance %+v, want available %d pending %d held %d", ref, b,
			available, pending, held)
	}
}

// check fails the test on any breach of the ledger's invariants.
func (f *fixture) check() {
	f.t.Helper()
	v, err := f.l.Check(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	if len(v) > 0 {
		f.t.Fatalf("ledger invariants broken: %+v", v)
	}
}
