package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// privatePG is a PostgreSQL cluster of one test, on its own port and data
// directory, so that stopping it disturbs no one else on the machine. Each
// start takes a free port (another if a process took the one picked before
// the server could); clients reach it through a relay that keeps one
// address across restarts, which no one can take while the server is down.
type privatePG struct {
	t     *testing.T
	bin   string
	data  string
	sock  string
	relay *testenv.Relay
}

// pgBinDir finds the directory of the PostgreSQL server programs, the
// newest version if there are several.
func pgBinDir(t *testing.T) string {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			found = []string{p}
		}
	}
	if len(found) == 0 {
		t.Fatal("PostgreSQL server programs (initdb, pg_ctl) not found in " +
			"/usr/lib/postgresql/*/bin or PATH: install the postgresql package")
	}
	sort.Slice(found, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[j]))))
		return vi < vj
	})
	return filepath.Dir(found[len(found)-1])
}

// run runs a PostgreSQL program as the postgres user (initdb refuses to run
// as root) and returns its output.
func (pg *privatePG) run(name string, args ...string) (string, error) {
	prog := filepath.Join(pg.bin, name)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return string(out), nil
}

// startPrivatePG creates a cluster in a temporary directory, starts it on a
// free port of 127.0.0.1 and stops it when the test ends.
func startPrivatePG(t *testing.T) *privatePG {
	t.Helper()
	pg := &privatePG{t: t, bin: pgBinDir(t), sock: t.TempDir(), relay: testenv.NewRelay(t, "")}
	pg.data = filepath.Join(pg.sock, "data")
	if os.Geteuid() == 0 {
		// The postgres user must reach the directory through its parent.
		if err := os.Chmod(filepath.Dir(pg.sock), 0o711); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chown", "postgres:", pg.sock).CombinedOutput(); err != nil {
			t.Fatalf("chown %s to postgres: %v: %s", pg.sock, err, out)
		}
	}
	if _, err := pg.run("initdb", "-D", pg.data, "-A", "trust", "-U", "postgres", "-N"); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	t.Cleanup(func() {
		_, _ = pg.run("pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
	})
	if err := pg.start(); err != nil {
		t.Fatalf("start private PostgreSQL: %v", err)
	}
	return pg
}

func (pg *privatePG) start() error {
	var err error
	for range 3 {
		port := freePort(pg.t)
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", port,
			pg.sock)
		_, err = pg.run("pg_ctl", "-D", pg.data, "-l", filepath.Join(pg.sock, "server.log"),
			"-o", opts, "-w", "-t", "60", "start")
		if err == nil {
			pg.relay.To(fmt.Sprintf("127.0.0.1:%d", port))
			return nil
		}
	}
	return err
}

func (pg *privatePG) stop() error {
	_, err := pg.run("pg_ctl", "-D", pg.data, "-m", "fast", "-w", "-t", "60", "stop")
	pg.relay.To("")
	return err
}

// url returns the URL of database name in the cluster.
// createDatabase creates database name in the cluster and returns its URL.
func (pg *privatePG) createDatabase(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.url("postgres"))
	if err != nil {
		t.Fatalf("connect to private PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return pg.url(name)
}

func (pg *privatePG) url(name string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", pg.relay.Addr(), name)
}

// call is one HTTP request of a load test; unlike client.send it reports
// transport errors instead of failing the test, since they are expected
// while a service is down.
func call(hc *http.Client, base, key, method, path, txn string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		buf, _ := json.Marshal(body)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
	res, err := hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r, nil
}

// TestPostgresRestartedUnderLoad stops the ledger's PostgreSQL (a private
// cluster of this test) while callers send accruals, and starts it again
// two seconds later. Callers retry failures with the same Idempotency-Key;
// in the end every accrual is posted exactly once and the ledger balances.
func TestPostgresRestartedUnderLoad(t *testing.T) {
	t.Parallel()
	pg := startPrivatePG(t)
	ctx := context.Background()
	cfg := &Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: pg.createDatabase(t, "puntos"),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 2 * time.Second, APIKeys: "billing=" + testKey, LogLevel: "warn"}
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	telcoApplied(t, c) // a result wait of 2 s may run out on a busy machine
	const members, perMember = 8, 40
	for m := range members {
		applied(t, c, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
	}

	// Restart PostgreSQL once every caller is a third of the way through.
	var restarted time.Time
	load := faultLoad(t, c.base, members, perMember, 90*time.Second, func(down *atomic.Bool) {
		down.Store(true)
		defer down.Store(false)
		if err := pg.stop(); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
			return
		}
		time.Sleep(2 * time.Second)
		if err := pg.start(); err != nil {
			t.Errorf("start PostgreSQL again: %v", err)
		}
		restarted = time.Now()
	})

	if t.Failed() {
		return
	}
	if load.inFault == 0 {
		t.Fatal("no accrual was sent while PostgreSQL was down; the test proved nothing")
	}

	// Everything accepted is applied, once.
	want := members * perMember
	deadline := time.Now().Add(120 * time.Second)
	var applied int
	for time.Now().Before(deadline) {
		_ = a.Pool.QueryRow(ctx, `SELECT count(*) FROM commands
			WHERE kind = 'points.accrue' AND status = 'ok'`).Scan(&applied)
		if applied == want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	dead, derr := a.Bus.DeadLetters(ctx, 100)
	if applied != want {
		t.Fatalf("%d of %d accruals applied %s after the restart; dead letters %d (%v): %+v",
			applied, want, time.Since(restarted).Round(time.Second), len(dead), derr, dead)
	}
	if derr != nil || len(dead) != 0 {
		t.Fatalf("dead letters: %+v %v", dead, derr)
	}
	checkAccrualsPostedOnce(t, a.Pool, want, 10)
	for m := range members {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%02d/balance", m), "", nil)
		if got := jnum(t, b, "balance.available"); got != perMember*10 {
			t.Errorf("M%02d available %d, want %d", m, got, perMember*10)
		}
	}
	if v, err := a.Ledger.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
	t.Logf("%d accruals posted once; %d attempts while PostgreSQL was down; %d answered 202; "+
		"%d attempts retried (%d transport errors, statuses %v)", want, load.inFault,
		load.accepted, load.retried, load.transport, load.statuses)
}
