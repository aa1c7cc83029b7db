package files

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// heapPeak samples the heap until stopped and reports the largest value.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func startHeapPeak() *heapPeak {
	runtime.GC()
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapAlloc)
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) end() float64 {
	close(h.stop)
	h.done.Wait()
	return float64(h.peak) / (1 << 20)
}

// BenchmarkBulk1M validates and posts one file of PUNTOS_BENCH_LINES lines
// (1,000,000 by default) over 10,000 members, and reports the lines per
// second of each step and the peak heap, which stays flat whatever the
// file's size.
func BenchmarkBulk1M(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("PUNTOS_BENCH_LINES"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x < 1 {
			b.Fatalf("PUNTOS_BENCH_LINES=%q is not a positive whole number", v)
		}
		n = x
	}
	members := min(10_000, n)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		pool, err := postgres.Open(ctx, testenv.Database(b))
		if err != nil {
			b.Fatal(err)
		}
		if err := postgres.Migrate(ctx, pool, log); err != nil {
			b.Fatal(err)
		}
		ledger := postgres.New(pool, log)
		benchSetup(b, ledger, members)
		dir := b.TempDir()
		path := filepath.Join(dir, "load.csv")
		total := benchFile(b, path, n, members)
		svc := New(ctx, ledger, log, Options{DataDir: dir, ChunkSize: benchChunk()})
		b.StartTimer()

		heap := startHeapPeak()
		file, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		vGoCPU, vPgCPU := processCPU(), backendCPU(b, ledger)
		start := time.Now()
		batch, _, err := svc.Receive(ctx, Intake{Program: "bench", FileName: "load.csv",
			Format: Format{Charset: UTF8}, UploadedBy: "bench", Channel: "rest"}, file)
		file.Close()
		if err != nil {
			b.Fatal(err)
		}
		v, err := svc.Validate(ctx, batch)
		if err != nil || v.Valid != int64(n) {
			b.Fatalf("validate: %v %+v", err, v)
		}
		validated := time.Since(start)
		goCPU, pgCPU := processCPU(), backendCPU(b, ledger)
		vGoCPU, vPgCPU = goCPU-vGoCPU, pgCPU-vPgCPU
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start = time.Now()
		p, err := svc.Post(ctx, v, "bench")
		if err != nil || p.Posted != int64(n) || p.Rejected != 0 {
			b.Fatalf("post: %v %+v", err, p)
		}
		posted := time.Since(start)
		goCPU = processCPU() - goCPU
		runtime.ReadMemStats(&ms1)
		pgCPU = backendCPU(b, ledger) - pgCPU
		peak := heap.end()
		b.StopTimer()
		benchCheck(b, ledger, total)

		b.ReportMetric(float64(n)/validated.Seconds(), "validate-lines/s")
		b.ReportMetric(float64(n)/posted.Seconds(), "post-lines/s")
		b.ReportMetric(peak, "peak-heap-MiB")
		// CPU time per line of each step, which a loaded machine inflates far less
		// than the wall-clock rate: this process, and the database backends
		// of the benchmark's own database.
		b.ReportMetric(goCPU.Seconds()*1e6/float64(n), "post-go-cpu-us/line")
		b.ReportMetric(pgCPU.Seconds()*1e6/float64(n), "post-pg-cpu-us/line")
		// What posting allocates per line, which the load does not move at
		// all (the heap sampler's share is negligible).
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "post-allocs/line")
		b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(n), "post-B/line")
		b.ReportMetric(vGoCPU.Seconds()*1e6/float64(n), "validate-go-cpu-us/line")
		b.ReportMetric(vPgCPU.Seconds()*1e6/float64(n), "validate-pg-cpu-us/line")
		b.ReportMetric(float64(n), "lines")
		pool.Close()
	}
}

// processCPU is the CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendCPU is the CPU time used so far by the PostgreSQL backends of the
// ledger's database (testenv.BackendCPU).
func backendCPU(b *testing.B, l *postgres.Ledger) time.Duration {
	return testenv.BackendCPU(b, l.Pool())
}

func benchSetup(b *testing.B, l *postgres.Ledger, members int) {
	ctx := context.Background()
	cmd := func(kind, member, txn, payload string) bus.Command {
		c := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "setup",
			TxnID: txn, Program: "bench", Member: member, Payload: json.RawMessage(payload)}
		c.Seal()
		return c
	}
	if _, err := l.ApplyBatch(ctx, []bus.Command{cmd(core.KindProgramUpsert, "", "prog",
		`{"name":"Bench"}`)}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < members; i += 1000 {
		var cmds []bus.Command
		for j := i; j < min(i+1000, members); j++ {
			ref := fmt.Sprintf("b%05d", j)
			cmds = append(cmds, cmd(core.KindEnroll, ref, "e-"+ref, `{}`))
		}
		if _, err := l.ApplyBatch(ctx, cmds); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCheck fails the run when the ledger does not add up or its members
// do not hold the file's total: a fast load that loses or doubles a point
// is a failed one.
func benchCheck(b *testing.B, l *postgres.Ledger, total int64) {
	ctx := context.Background()
	v, err := l.Check(ctx)
	if err != nil || len(v) > 0 {
		b.Fatalf("ledger check: %v %+v", err, v)
	}
	var held int64
	if err := l.Pool().QueryRow(ctx, `SELECT coalesce(sum(available), 0) FROM members`).Scan(
		&held); err != nil || held != total {
		b.Fatalf("members hold %d points, the file moves %d (%v)", held, total, err)
	}
}

// benchFile writes n lines, mostly credits with a debit every tenth line,
// and returns the points they move in all.
// The members rotate so that each one's debits follow its credits.
func benchFile(b *testing.B, path string, n, members int) int64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "member,points,reason,effective_date,expires_at,txn_id")
	var total int64
	for i := 0; i < n; i++ {
		pts := 100 + i%50
		if i%10 == 9 && i >= members {
			pts = -10
		}
		m := (i + i/members) % members
		fmt.Fprintf(w, "b%05d,%d,bench load,2026-03-01,,t%d\n", m, pts, i)
		total += int64(pts)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return total
}

// benchChunk is PUNTOS_BENCH_CHUNK, the lines per ledger transaction; zero
// (unset) keeps the service's default.
func benchChunk() int {
	n, _ := strconv.Atoi(os.Getenv("PUNTOS_BENCH_CHUNK"))
	return n
}
