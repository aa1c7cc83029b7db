package app

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// buildPuntos compiles the puntos binary for tests that run it as a process.
func buildPuntos(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "puntos")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/puntos")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build puntos: %v", err)
	}
	return bin
}

// startCore runs `puntos core` as a separate process.
func startCore(t *testing.T, bin, dbURL, natsURL string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "core", "--clickhouse-addr=", "--http-addr=127.0.0.1:0",
		"--partitions=4", "--batch-size=64", "--log-level=error")
	cmd.Env = append(os.Environ(), "PUNTOS_DATABASE_URL="+dbURL, "NATS_URL="+natsURL)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start core: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestCoreKilledMidBatch kills the core process with SIGKILL while it applies
// a stream of accruals, starts a new one, and checks that every accrual was
// posted exactly once and the ledger balances.
func TestCoreKilledMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildPuntos(t)
	srv, natsURL, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg := testConfig(t)
	cfg.NATSURL = natsURL
	cfg.ResultWait = 5 * time.Second
	migrate(t, cfg.DatabaseURL)
	gw := startApp(t, cfg, Roles{Gateway: true})
	c := &client{t: t, base: "http://" + gw.Addr(), key: testKey}

	core := startCore(t, bin, cfg.DatabaseURL, natsURL)
	setupProgram(c)
	const members, perMember = 50, 40
	for m := range members {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%03d", m)})
	}

	// Send the accruals from 16 callers; kill core once a few hundred applied.
	var sent atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan [2]int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%03d/events", j[0]),
					fmt.Sprintf("acc-%d-%d", j[0], j[1]),
					map[string]any{"type": "top_up", "amount": "10.00"})
				if r.status != 201 && r.status != 202 {
					t.Errorf("accrual %v: %d %s", j, r.status, r.raw)
				}
				sent.Add(1)
			}
		}()
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			var n int
			_ = gw.Pool.QueryRow(context.Background(),
				`SELECT count(*) FROM commands WHERE kind = 'points.accrue'`).Scan(&n)
			if n >= 300 {
				_ = core.Process.Kill()
				_, _ = core.Process.Wait()
				startCore(t, bin, cfg.DatabaseURL, natsURL)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i := range perMember {
		for m := range members {
			jobs <- [2]int{m, i}
		}
	}
	close(jobs)
	wg.Wait()
	<-killed

	// Wait until the new core has applied everything, then check each was
	// posted exactly once and every point is accounted for.
	want := members * perMember
	waitAccrualsApplied(t, gw.Pool, want, 90*time.Second)
	checkAccrualsPostedOnce(t, gw.Pool, want, 10)
	t.Logf("sent %d accruals; core killed after 300 were applied; all %d posted once",
		sent.Load(), want)
}
