package natsbus

import (
	"testing"
	"time"
)

// A port no server can listen on (below -1, which means any port, or above
// 65535) is refused at once, not after the server's wait for readiness.
func TestLate8StartEmbeddedOnAnImpossiblePort(t *testing.T) {
	for _, port := range []int{-5, 70000} {
		start := time.Now()
		s, _, err := StartEmbedded(t.TempDir(), port, true)
		if err == nil {
			s.Shutdown()
			t.Errorf("started on port %d", port)
			continue
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("port %d refused after %s: %v", port, took, err)
		}
	}
}
