package conversion

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/secrets"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// env is a real ledger on a fresh database, with a clock the test moves.
type env struct {
	t      *testing.T
	ledger *postgres.Ledger
	mu     sync.Mutex
	now    time.Time
	seq    int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ledger: postgres.New(pool, slog.New(slog.DiscardHandler)),
		now: time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)}
	e.ledger.Clock = e.clock
	// The ledger encrypts the credentials with a key of the test's own.
	keys, _, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	e.ledger.Secrets = keys
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) setNow(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = t
}

func (e *env) advance(d time.Duration) { e.setNow(e.clock().Add(d)) }

// do applies one command of the test's caller and returns its result.
func (e *env) do(kind, program, member string, payload any) bus.Result {
	e.t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.seq++
	txn := fmt.Sprintf("%s-%d", program, e.seq)
	e.mu.Unlock()
	now := e.clock()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "test",
		TxnID: txn, Program: program, Member: member, Payload: body, OccurredAt: now,
		ReceivedAt: now}
	cmd.Seal()
	out, err := e.ledger.ApplyBatch(context.Background(), []bus.Command{cmd})
	if err != nil {
		e.t.Fatalf("apply %s: %v", kind, err)
	}
	return out[0].Result
}

func (e *env) ok(kind, program, member string, payload any) json.RawMessage {
	e.t.Helper()
	r := e.do(kind, program, member, payload)
	if r.Status != bus.StatusOK {
		e.t.Fatalf("%s %s/%s: %s %+v", kind, program, member, r.Status, r.Error)
	}
	return r.Data
}

// program creates a program in Santiago's time zone with one external
// program configured by ext, and a member holding points.
func (e *env) program(ext core.ExternalProgram, member string, points core.Points) string {
	e.t.Helper()
	code := "p" + uuid.NewString()[:8]
	e.ok(core.KindProgramUpsert, code, "", core.Program{Name: "Movil",
		TimeZone: "America/Santiago"})
	e.ok(core.KindExternalUpsert, code, ext.Code, ext)
	e.ok(core.KindEnroll, code, member, core.Enroll{Channel: "test"})
	e.ok(core.KindCredit, code, member, core.Credit{Points: points, Reason: "welcome"})
	return code
}

// convert requests a conversion and returns it, pending.
func (e *env) convert(program, member string, in core.ConvertRequest) core.Conversion {
	e.t.Helper()
	var c core.Conversion
	if err := json.Unmarshal(e.ok(core.KindConvert, program, member, in), &c); err != nil {
		e.t.Fatal(err)
	}
	if c.Status != core.ConversionPending || c.ID == "" {
		e.t.Fatalf("conversion %+v, want a pending one", c)
	}
	return c
}

func (e *env) conversion(program, member, id string) *core.Conversion {
	e.t.Helper()
	c, err := e.ledger.Conversion(context.Background(), program, member, id)
	if err != nil {
		e.t.Fatalf("read conversion: %v", err)
	}
	return c
}

// wantBalance checks the member's available and held points.
func (e *env) wantBalance(program, member string, available, held core.Points) {
	e.t.Helper()
	m, err := e.ledger.Member(context.Background(), program, member)
	if err != nil {
		e.t.Fatal(err)
	}
	if m.Balance.Available != available || m.Balance.Held != held {
		e.t.Fatalf("%s: available %d held %d, want %d and %d", member, m.Balance.Available,
			m.Balance.Held, available, held)
	}
}

// check fails the test on any breach of the ledger's invariants.
func (e *env) check() {
	e.t.Helper()
	v, err := e.ledger.Check(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	if len(v) > 0 {
		e.t.Fatalf("ledger invariants broken: %+v", v)
	}
}

// quietLog is the workers' logger in tests.
// PUNTOS_TEST_LOG=1 shows them.
func quietLog() *slog.Logger {
	if os.Getenv("PUNTOS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testHTTP makes the HTTP flavour quick to give up in tests: two tries of
// a quarter second each per delivery.
var testHTTP = HTTPOptions{Timeout: 250 * time.Millisecond, Retries: 1,
	RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 20 * time.Millisecond}
