package app

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/testenv"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// externalNATS is a nats-server process of one test, on its own port of
// 127.0.0.1 and with its own store, so that killing it disturbs no one else
// (the machine's own server on 4222 is never touched). Each start takes a
// port the server picks itself; clients reach it through a relay that
// keeps one address across restarts, which no one can take meanwhile.
type externalNATS struct {
	t     *testing.T
	bin   string
	dir   string
	relay *testenv.Relay

	mu  sync.Mutex
	cmd *exec.Cmd
}

// startExternalNATS starts /usr/sbin/nats-server (or the one on PATH) with
// JetStream and stops it when the test ends.
func startExternalNATS(t *testing.T) *externalNATS {
	t.Helper()
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		p, err := exec.LookPath("nats-server")
		if err != nil {
			t.Fatal("nats-server not found in /usr/sbin or PATH: install the nats-server package")
		}
		bin = p
	}
	n := &externalNATS{t: t, bin: bin, dir: t.TempDir(), relay: testenv.NewRelay(t, "")}
	t.Cleanup(n.kill)
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *externalNATS) url() string { return "nats://" + n.relay.Addr() }

// start runs the server on n's store and a port it picks, waits until it
// takes connections, and points the relay at it.
func (n *externalNATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	logFile, err := os.OpenFile(filepath.Join(n.dir, "server.log"),
		os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	// -p -1: a port of the server's choosing, which it writes, once it
	// listens, to the ports file named after its process id.
	ports := filepath.Join(n.dir, "ports")
	cmd := exec.Command(n.bin, "-js", "-a", "127.0.0.1", "-p", "-1",
		"--ports_file_dir", ports, "-sd", filepath.Join(n.dir, "store"),
		"-n", "puntos-test-external")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := os.MkdirAll(ports, 0o755); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	n.cmd = cmd
	file := filepath.Join(ports, fmt.Sprintf("%s_%d.ports", filepath.Base(n.bin),
		cmd.Process.Pid))
	for deadline := time.Now().Add(15 * time.Second); ; {
		var listening struct{ Nats []string }
		raw, err := os.ReadFile(file)
		if err == nil && json.Unmarshal(raw, &listening) == nil && len(listening.Nats) > 0 {
			addr := strings.TrimPrefix(listening.Nats[0], "nats://")
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				n.relay.To(addr)
				return nil
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(n.dir, "server.log"))
			return fmt.Errorf("nats-server did not start (no %s): %s", file, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the server with SIGKILL, as a crash would.
func (n *externalNATS) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
	n.relay.To("")
}

// TestExternalNATSKilledUnderLoad runs the whole platform (gateway, core
// and the reporting sink) against a separate nats-server process, kills
// that process with SIGKILL while callers send accruals, and starts it
// again on the same store, behind the same address (externalNATS). Callers retry what was not accepted
// with the same Idempotency-Key, as the API asks. In the end every accrual
// is posted exactly once, the ledger balances and ClickHouse holds exactly
// the ledger's postings.
func TestExternalNATSKilledUnderLoad(t *testing.T) {
	t.Parallel()
	srv := startExternalNATS(t)
	ch, db := chtest.Database(t)
	cfg := testConfig(t)
	cfg.NATSURL = srv.url()
	cfg.ResultWait = 2 * time.Second
	cfg.ClickHouseAddr, cfg.ClickHouseDB = chtest.Addr(), db
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	telcoApplied(t, c) // a result wait of 2 s may run out on a busy machine
	const members, perMember = 10, 30
	for m := range members {
		applied(t, c, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
	}
	start := time.Now()

	// Kill the server once every caller is a third of the way through; start
	// it again three seconds later on the same store and address.
	load := faultLoad(t, c.base, members, perMember, 60*time.Second, func(afterKill *atomic.Bool) {
		srv.kill()
		afterKill.Store(true)
		time.Sleep(3 * time.Second)
		if err := srv.start(); err != nil {
			t.Errorf("restart nats-server: %v", err)
		}
	})
	if t.Failed() {
		return
	}
	if load.inFault == 0 {
		t.Fatal("no accrual was sent after the kill; the test proved nothing")
	}

	// Everything accepted is applied, once; the report store agrees.
	want := members * perMember
	waitAccrualsApplied(t, a.Pool, want, 60*time.Second)
	checkAccrualsPostedOnce(t, a.Pool, want, 10)
	for m := range members {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%02d/balance", m), "", nil)
		if got := jnum(t, b, "balance.available"); got != perMember*10 {
			t.Errorf("M%02d available %d, want %d", m, got, perMember*10)
		}
	}
	if n := chtest.Reconciled(t, ch, a.Pool, "telco", start.Add(-time.Hour),
		time.Now().Add(time.Hour), 60*time.Second); n != int64(want) {
		t.Fatalf("%d postings reconciled with ClickHouse; want %d", n, want)
	}
	t.Logf("%d accruals posted once and reconciled with ClickHouse; %d attempts after the "+
		"kill, %d retried (statuses %v)", want, load.inFault, load.retried, load.statuses)
}
