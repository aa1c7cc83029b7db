package natsbus

import (
	"net"
	"strings"
	"testing"
	"time"
)

// A port another process holds is named at once, not after the server's
// wait for readiness.
func TestStartEmbeddedOnATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	s, _, err := StartEmbedded(t.TempDir(), port, true)
	if err == nil {
		s.Shutdown()
		t.Fatalf("started on port %d, which a listener holds", port)
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q does not say the port is in use", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the refusal took %s", took)
	}
}
