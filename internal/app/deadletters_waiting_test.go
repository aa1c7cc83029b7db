package app

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// scrape reads the /metrics page of the process at addr and returns its
// samples by name, labels included as written (name{label="value"}); a page
// that is not 200 fails the test.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		name, value := line[:i], line[i+1:]
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			samples[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return samples
}

// The gauge's two samples, by kind.
const (
	waitingFailed  = `puntos_dead_letters_waiting{kind="failed"}`
	waitingRefused = `puntos_dead_letters_waiting{kind="refused"}`
)

// awaitWaiting scrapes addr until puntos_dead_letters_waiting reads failed
// and refused letters, and returns that scrape.
func awaitWaiting(t *testing.T, addr string, failed, refused float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := scrape(t, addr)
		f, okF := m[waitingFailed]
		r, okR := m[waitingRefused]
		if okF && okR && f == failed && r == refused && m["puntos_dead_letters_waiting_up"] == 1 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("puntos_dead_letters_waiting failed %v, refused %v (present %v %v, up %v), "+
				"want %v and %v", f, r, okF, okR, m["puntos_dead_letters_waiting_up"], failed,
				refused)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Three accruals for members that do not exist are refused and
// dead-lettered: the /metrics page of the process running core says three
// refusals wait, and no failed command. A discard and a re-drive each take
// one away; the counter of letters ever sent stays at three. A gateway on
// the same bus does not export the gauge.
func TestMetricsShowDeadLettersWaiting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	if m := awaitWaiting(t, a.Addr(), 0, 0); m["puntos_dead_letters_total"] != 0 {
		t.Fatalf("puntos_dead_letters_total before any letter: %v", m)
	}

	for _, txn := range []string{"ghost-1", "ghost-2", "ghost-3"} {
		c.must(404, "POST", "/v1/programs/telco/members/GHOST-"+txn+"/events", txn,
			map[string]any{"type": "bill_paid", "amount": "10.00"})
	}
	awaitWaiting(t, a.Addr(), 0, 3)
	seqs := deadSeqs(t, a, 3)

	// Discarded: a refusal leaves no mark (its stored refusal answers the
	// status URL), and the status still says rejected.
	if _, err := a.Bus.Discard(ctx, seqs["ghost-1"]); err != nil {
		t.Fatal(err)
	}
	if dead, err := a.Bus.DeadLettered(ctx, "billing", "ghost-1"); err != nil || dead {
		t.Fatalf("ghost-1 after its discard: dead-lettered %v, %v; want no mark", dead, err)
	}
	if s := c.must(200, "GET", "/v1/commands/ghost-1", "", nil); s.body["status"] != "rejected" {
		t.Fatalf("status of ghost-1 after its discard: %s, want rejected", s.raw)
	}
	awaitWaiting(t, a.Addr(), 0, 2)

	// Re-driven: core answers it with its stored refusal, and it stays out.
	if _, _, err := a.Bus.Redrive(ctx, seqs["ghost-2"]); err != nil {
		t.Fatal(err)
	}
	awaitWaiting(t, a.Addr(), 0, 1)
	time.Sleep(time.Second)
	m := awaitWaiting(t, a.Addr(), 0, 1)
	if m["puntos_dead_letters_total"] != 3 {
		t.Fatalf("puntos_dead_letters_total after a discard and a re-drive: %v, want 3",
			m["puntos_dead_letters_total"])
	}

	// A gateway alone on the same bus leaves the count to core.
	cfg := testConfig(t)
	cfg.NATSURL = a.nats.ClientURL()
	gw := startApp(t, cfg, Roles{Gateway: true})
	m = scrape(t, gw.Addr())
	for _, k := range []string{waitingFailed, waitingRefused} {
		if v, ok := m[k]; ok {
			t.Fatalf("a gateway exports %s (%v): core does", k, v)
		}
	}
	if _, ok := m["puntos_dead_letters_total"]; !ok {
		t.Fatal("the gateway's page lacks its other metrics")
	}
}

// With NATS down, a scrape of a core process answers within the gauge's
// timeout and serves the other metrics: the gauge is left out and
// puntos_dead_letters_waiting_up says 0. Once NATS is back, so is the
// gauge.
func TestMetricsWithoutNATS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, url, err := natsbus.StartEmbedded(dir, -1, true)
	if err != nil {
		t.Fatal(err)
	}
	current := srv
	t.Cleanup(func() { current.Shutdown() })
	// Core reaches NATS through a relay that keeps its address while the
	// server is away, so that no one else can take it.
	r := testenv.NewRelay(t, strings.TrimPrefix(url, "nats://"))

	cfg := testConfig(t)
	cfg.NATSURL = "nats://" + r.Addr()
	a := startApp(t, cfg, Roles{Core: true})
	awaitWaiting(t, a.Addr(), 0, 0)

	current.Shutdown()
	current.WaitForShutdown()
	r.To("")
	start := time.Now()
	m := scrape(t, a.Addr())
	if took := time.Since(start); took > deadWaitingTimeout+2*time.Second {
		t.Errorf("a scrape with NATS down took %s, want at most about %s", took,
			deadWaitingTimeout)
	}
	for _, k := range []string{waitingFailed, waitingRefused} {
		if v, ok := m[k]; ok {
			t.Errorf("%s = %v with NATS down, want it left out", k, v)
		}
	}
	if up, ok := m["puntos_dead_letters_waiting_up"]; !ok || up != 0 {
		t.Errorf("puntos_dead_letters_waiting_up = %v (present %v) with NATS down, want 0", up,
			ok)
	}
	if _, ok := m["puntos_dead_letters_total"]; !ok {
		t.Errorf("the page with NATS down lacks puntos_dead_letters_total: %v", m)
	}

	var s *server.Server
	if s, url, err = natsbus.StartEmbedded(dir, -1, true); err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	current = s
	r.To(strings.TrimPrefix(url, "nats://"))
	awaitWaiting(t, a.Addr(), 0, 0)
}
