package app

import (
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// pgProxy forwards TCP connections from an address of its own to
// PostgreSQL, and cuts them all when closed: PostgreSQL going away, as
// the ledger's gateway sees it.
type pgProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{l: l}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *pgProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// With PostgreSQL out of reach, a balance read answers 503 (the service
// is unavailable for now), not 500 with advice to retry under the same
// Idempotency-Key, which a read has not.
func TestReadDuringDatabaseOutageIsUnavailable(t *testing.T) {
	cfg := testConfig(t)
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newPGProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	cfg.DatabaseURL = u.String()
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	c.must(201, "PUT", "/v1/programs/telco", "prog-1", `{"name":"Telco","currency":"USD",`+
		`"points_per_unit":"1"}`)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", `{"customer_ref":"A-1"}`)
	c.must(200, "GET", "/v1/programs/telco/members/A-1/balance", "", nil)

	proxy.close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.send("GET", "/v1/programs/telco/members/A-1/balance", "", nil)
		if r.status == 503 && r.body["kind"] == "unavailable" &&
			strings.Contains(r.raw, "not reachable") {
			break
		}
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("balance read with PostgreSQL gone: %d %s; want 503 unavailable",
				r.status, r.raw)
		}
		time.Sleep(50 * time.Millisecond) // a pooled connection not yet found dead
	}
}
