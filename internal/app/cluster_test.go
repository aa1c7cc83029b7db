package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/rest"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster starts n NATS servers with JetStream, clustered on
// 127.0.0.1, and returns them with their client URLs. The route ports are
// picked free, then let go until the servers take them: a test running
// beside this one can take such a port first, and the cluster is then
// started again on other ports (three tries).
func startCluster(t *testing.T, n int) ([]*server.Server, []string) {
	t.Helper()
	for try := 1; ; try++ {
		servers, urls, err := tryCluster(t, n)
		if err == nil {
			return servers, urls
		}
		if try == 3 {
			t.Fatal(err)
		}
		t.Logf("start cluster: %v; again on other ports", err)
	}
}

// tryCluster starts the n servers of startCluster once. On failure it
// stops those it started.
func tryCluster(t *testing.T, n int) ([]*server.Server, []string, error) {
	ports := make([]int, n)
	var routes []*url.URL
	for i := range ports {
		ports[i] = freePort(t)
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
		routes = append(routes, u)
	}
	servers := make([]*server.Server, 0, n)
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	urls := make([]string, n)
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("puntos-n%d", i), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "puntos-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("server %d: %w", i, err)
		}
		s.Start()
		servers = append(servers, s)
		if !s.ReadyForConnections(10 * time.Second) {
			stop()
			return nil, nil, fmt.Errorf("server %d not ready (route port %d)", i, ports[i])
		}
		urls[i] = s.ClientURL()
	}
	t.Cleanup(stop)
	return servers, urls, nil
}

// TestClusterNodeStoppedDuringAccruals runs the core consumers and a
// gateway on a three-node NATS cluster whose streams keep three replicas,
// stops the node leading the command stream while callers send accruals,
// and checks that every accepted accrual is posted exactly once.
//
// The app's configuration has no replica setting, so the test wires the
// bus itself (with Replicas 3) and runs the real core and REST gateway on it.
func TestClusterNodeStoppedDuringAccruals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	t.Parallel()
	servers, urls := startCluster(t, 3)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	// The bus, once the cluster has elected its JetStream leader.
	var b *natsbus.Bus
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err = natsbus.Connect(ctx, natsbus.Config{URL: strings.Join(urls, ","), Partitions: 4,
			Replicas: 3, Name: "cluster-test"}, log)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to the cluster: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// The core, as Start wires it, on that bus.
	cfg := testConfig(t)
	migrate(t, cfg.DatabaseURL)
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	a := &App{cfg: cfg, log: log, roles: Roles{Core: true}, metrics: newMetrics(), Bus: b,
		Pool: pool, Ledger: postgres.New(pool, log)}
	bg, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	cctx, ccancel := context.WithCancel(bg)
	a.coreCancel = ccancel
	a.startCore(cctx, bg)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = a.Shutdown(sctx)
	})

	// The REST gateway on the same bus.
	api := rest.New(b, a.Ledger, log, rest.Options{Wait: 5 * time.Second,
		Keys: map[string]string{testKey: "billing"}})
	router := mux.NewRouter()
	api.Register(router)
	web := httptest.NewServer(router)
	t.Cleanup(web.Close)
	c := &client{t: t, base: web.URL, key: testKey}
	setupProgram(c)
	const members, perMember = 8, 25
	for m := range members {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
	}

	// Callers send accruals, retrying what is refused with the same key.
	var wg sync.WaitGroup
	third := make(chan struct{}, members)
	for m := range members {
		wg.Go(func() {
			for i := range perMember {
				if i == perMember/3 {
					third <- struct{}{}
				}
				txn := fmt.Sprintf("acc-%d-%d", m, i)
				stop := time.Now().Add(60 * time.Second)
				for {
					r := c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m),
						txn, map[string]any{"type": "top_up", "amount": "10.00"})
					if r.status == 201 || r.status == 202 {
						break
					}
					if r.status != 503 || time.Now().After(stop) {
						t.Errorf("accrual %s: %d %s", txn, r.status, r.raw)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}

	// Stop the node that leads the command stream a third of the way in.
	for range members {
		select {
		case <-third:
		case <-time.After(60 * time.Second):
			t.Fatal("the callers did not get a third of the way")
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	info, err := js.StreamInfo(bus.CommandStream)
	if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("command stream is not replicated three times: %+v %v", info, err)
	}
	stopped := ""
	for _, s := range servers {
		if s.Name() == info.Cluster.Leader {
			stopped = s.Name()
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	if stopped == "" {
		t.Fatalf("no server leads the command stream (%q)", info.Cluster.Leader)
	}
	wg.Wait()

	// Everything accepted is applied, once, on the two remaining nodes.
	want := members * perMember
	deadline = time.Now().Add(60 * time.Second)
	var applied int
	for time.Now().Before(deadline) {
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM commands
			WHERE kind = 'points.accrue' AND status = 'ok'`).Scan(&applied)
		if applied == want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if applied != want {
		t.Fatalf("%d of %d accruals applied after %s stopped", applied, want, stopped)
	}
	var postings, doubled int
	var total int64
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM postings WHERE kind = 'accrual'`).Scan(&postings)
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT txn_id FROM postings
		WHERE kind = 'accrual' GROUP BY source, txn_id HAVING count(*) > 1) d`).Scan(&doubled)
	_ = pool.QueryRow(ctx, `SELECT sum(available) FROM members`).Scan(&total)
	if postings != want || doubled != 0 || total != int64(want*10) {
		t.Fatalf("postings %d (want %d), doubled %d, total %d (want %d)", postings, want,
			doubled, total, want*10)
	}
	if v, err := a.Ledger.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
	t.Logf("stopped %s; %d accruals posted once", stopped, want)
}
