package testenv

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from an address of 127.0.0.1 to target
// (PostgreSQL, say) until cut is called, which closes the address and every
// connection through it: the server going away, as its clients see it. It
// stops when the test ends.
func Proxy(t testing.TB, target string) (addr string, cut func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	cut = func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(cut)
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
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return l.Addr().String(), cut
}

// ProxyURL is rawURL (a PostgreSQL URL) reached through a Proxy, with the
// cut of that proxy.
func ProxyURL(t testing.TB, rawURL string) (string, func()) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	var cut func()
	u.Host, cut = Proxy(t, u.Host)
	return u.String(), cut
}
