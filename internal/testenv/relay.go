package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Relay is a TCP address on 127.0.0.1 that a test holds for its whole life
// and that forwards to a server which may stop and start again on another
// port: its clients reconnect to the same address, and no other process
// can take that address while the server is away (as it can take a port
// that was let go and is asked for again). While the server is away the
// relay accepts connections and closes them at once, which clients take
// for a failed reconnect as they would a refused one.
type Relay struct {
	addr string

	mu     sync.Mutex
	target string // "" while the server is away
	conns  map[net.Conn]bool
}

// NewRelay starts a relay to target (host:port; "" for none yet), closed
// when the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{addr: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.forward(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); r.To("") })
	return r
}

// Addr is the relay's own address (host:port).
func (r *Relay) Addr() string { return r.addr }

// To sends the connections that come from now on to target (host:port),
// closing those open; with "" (the server went away) it drops them until
// the next call, as a stopped server would.
func (r *Relay) To(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
	for c := range r.conns {
		_ = c.Close()
	}
	clear(r.conns)
}

func (r *Relay) forward(c net.Conn) {
	r.mu.Lock()
	target := r.target
	r.mu.Unlock()
	if target == "" {
		_ = c.Close()
		return
	}
	s, err := net.DialTimeout("tcp", target, 3*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	r.mu.Lock()
	if r.target != target {
		r.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
		return
	}
	r.conns[c], r.conns[s] = true, true
	r.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, s)
	r.mu.Unlock()
}
