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
		benchFile(b, path, n, members)
		svc := New(ctx, ledger, log, Options{DataDir: dir})
		b.StartTimer()

		heap := startHeapPeak()
		file, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
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
		start = time.Now()
		p, err := svc.Post(ctx, v, "bench")
		if err != nil || p.Posted != int64(n) || p.Rejected != 0 {
			b.Fatalf("post: %v %+v", err, p)
		}
		posted := time.Since(start)
		peak := heap.end()
		b.StopTimer()

		b.ReportMetric(float64(n)/validated.Seconds(), "validate-lines/s")
		b.ReportMetric(float64(n)/posted.Seconds(), "post-lines/s")
		b.ReportMetric(peak, "peak-heap-MiB")
		b.ReportMetric(float64(n), "lines")
		pool.Close()
	}
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

// benchFile writes n lines, mostly credits with a debit every tenth line.
// The members rotate so that each one's debits follow its credits.
func benchFile(b *testing.B, path string, n, members int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "member,points,reason,effective_date,expires_at,txn_id")
	for i := 0; i < n; i++ {
		pts := 100 + i%50
		if i%10 == 9 && i >= members {
			pts = -10
		}
		m := (i + i/members) % members
		fmt.Fprintf(w, "b%05d,%d,bench load,2026-03-01,,t%d\n", m, pts, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
