package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// benchEnv reads a positive whole number from the environment, or def.
func benchEnv(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s: %q is not a positive whole number", name, v)
	}
	return n
}

// BenchmarkExpire10M times one sweep that expires PUNTOS_BENCH_LOTS lots
// (10,000,000 by default) spread evenly over PUNTOS_BENCH_MEMBERS members
// (1,000,000), all due, on a database of its own, in batches of
// PUNTOS_BENCH_BATCH members (500). Loading is not timed.
// Try it small first:
//
//	PUNTOS_BENCH_LOTS=100000 PUNTOS_BENCH_MEMBERS=10000 \
//	    go test -run '^$' -bench Expire10M -benchtime=1x ./core/postgres/
func BenchmarkExpire10M(b *testing.B) {
	nLots := benchEnv(b, "PUNTOS_BENCH_LOTS", 10_000_000)
	nMembers := benchEnv(b, "PUNTOS_BENCH_MEMBERS", 1_000_000)
	batch := benchEnv(b, "PUNTOS_BENCH_BATCH", 500)
	if nMembers > nLots {
		b.Fatalf("%d members for %d lots: every member needs a lot", nMembers, nLots)
	}
	ctx := context.Background()
	pool, err := Open(ctx, testenv.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if err := Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	l := New(pool, slog.New(slog.DiscardHandler))
	at := time.Date(2026, 6, 1, 4, 0, 0, 0, time.UTC)

	var swept time.Duration
	var pgCPU, goCPU float64
	runs := 0
	for b.Loop() {
		runs++
		b.StopTimer()
		start := time.Now()
		loadDueLots(b, pool, nLots, nMembers, at)
		b.Logf("Loaded %d lots over %d members in %s", nLots, nMembers,
			time.Since(start).Round(time.Millisecond))
		b.StartTimer()

		start = time.Now()
		cpu := startCPU(b, pool)
		res, ran, err := l.Sweep(ctx, at, batch)
		swept += time.Since(start)
		pgCPU, goCPU = cpu.stop()
		if err != nil || !ran || res.Members != nMembers {
			b.Fatalf("sweep: ran %v, %+v, %v; want %d members", ran, res, err, nMembers)
		}

		b.StopTimer()
		var left, postings, moves int64
		err = pool.QueryRow(ctx, `SELECT
				(SELECT coalesce(sum(remaining), 0) FROM lots),
				(SELECT count(*) FROM postings WHERE kind = 'expiry'),
				(SELECT count(*) FROM posting_lots)`).Scan(&left, &postings, &moves)
		if err != nil || left != 0 || postings != int64(nMembers) || moves != int64(nLots) {
			b.Fatalf("after the sweep: %d points left in lots, %d expiry postings, %d lot "+
				"moves (%v); want 0, %d, %d", left, postings, moves, err, nMembers, nLots)
		}
		if v, err := l.Check(ctx); err != nil || len(v) > 0 {
			b.Fatalf("ledger invariants: %v %+v", err, v)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(nLots*runs)/swept.Seconds(), "lots/s")
	b.ReportMetric(float64(nMembers*runs)/swept.Seconds(), "members/s")
	// CPU time says what the sweep costs whatever else the machine runs.
	b.ReportMetric(pgCPU, "pg_cpu_s")
	b.ReportMetric(goCPU, "go_cpu_s")
}

// cpuClock reads the CPU time of this process and of the PostgreSQL
// backends serving the benchmark's database (PostgreSQL runs on this
// machine), so that a figure taken on a busy machine can be read as cost.
type cpuClock struct {
	b        *testing.B
	pool     *pgxpool.Pool
	backends map[int]float64
	self     float64
}

func startCPU(b *testing.B, pool *pgxpool.Pool) *cpuClock {
	c := &cpuClock{b: b, pool: pool}
	c.backends, c.self = c.read(), selfCPU()
	return c
}

// stop returns the CPU seconds spent since start by the backends (those
// that ran throughout and those that started since) and by this process.
func (c *cpuClock) stop() (pg, self float64) {
	for pid, t := range c.read() {
		pg += t - c.backends[pid]
	}
	return pg, selfCPU() - c.self
}

func (c *cpuClock) read() map[int]float64 {
	out := map[int]float64{}
	rows, err := c.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database()`)
	if err != nil {
		c.b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			c.b.Fatal(err)
		}
		if t, ok := procCPU(pid); ok {
			out[pid] = t
		}
	}
	return out
}

// procCPU is the user and system CPU seconds of process pid, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(pid int) (float64, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	k, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (u + k) / 100, true
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// loadDueLots empties the ledger and loads nLots lots of 10 points, all
// expired by at, over nMembers members of one program, each member with
// one credit posting for the sum of its lots, with COPY.
func loadDueLots(b *testing.B, pool *pgxpool.Pool, nLots, nMembers int, at time.Time) {
	b.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `TRUNCATE notice_sent, posting_lots, lots, holds, postings,
		members, programs, outbox, commands CASCADE`)
	if err != nil {
		b.Fatal(err)
	}
	progID := uuid.Must(uuid.NewV7())
	_, err = pool.Exec(ctx, `INSERT INTO programs (id, code, name) VALUES ($1, 'bench', 'Bench')`,
		progID.String())
	if err != nil {
		b.Fatal(err)
	}
	earned := at.AddDate(-2, 0, 0)
	ids := make([][16]byte, nMembers)
	per := func(i int) int { // lots of member i
		n := nLots / nMembers
		if i < nLots%nMembers {
			n++
		}
		return n
	}
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}

	copyRows := func(table string, cols []string, n int, row func(i int) []any) {
		b.Helper()
		i := 0
		src := pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			i++
			return row(i - 1), nil
		})
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{table}, cols, src); err != nil {
			b.Fatalf("copy %s: %v", table, err)
		}
	}
	copyRows("members", []string{"id", "program_id", "customer_ref", "enrolled_at",
		"available"}, nMembers, func(i int) []any {
		return []any{ids[i], [16]byte(progID), fmt.Sprintf("m%08d", i), earned,
			int64(10 * per(i))}
	})
	copyRows("postings", []string{"id", "program_id", "member_id", "kind", "points", "source",
		"occurred_at", "recorded_at"}, nMembers, func(i int) []any {
		return []any{int64(i + 1), [16]byte(progID), ids[i], "credit", int64(10 * per(i)),
			"bench", earned, earned}
	})
	_, err = pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence('postings', 'id'), $1)`,
		int64(nMembers))
	if err != nil {
		b.Fatal(err)
	}
	member, left := 0, per(0)
	copyRows("lots", []string{"member_id", "posting_id", "earned_at", "spendable_from",
		"expires_at", "original", "remaining"}, nLots, func(int) []any {
		if left == 0 {
			member++
			left = per(member)
		}
		left--
		exp := at.Add(-time.Duration(left+1) * time.Hour)
		return []any{ids[member], int64(member + 1), earned, earned, exp, int64(10), int64(10)}
	})
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}
