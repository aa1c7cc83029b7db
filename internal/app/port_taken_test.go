package app

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With its HTTP port taken the platform stops before it starts anything:
// no bus, no consumers (it started them all, then stopped them with a
// warning about unsettled commands that alarmed the operator), and the
// error names the setting.
func TestPortTakenStopsBeforeAnythingStarts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.HTTPAddr = busy.Addr().String()
	_, err = Start(context.Background(), cfg, slog.New(slog.DiscardHandler),
		Roles{Gateway: true, Core: true})
	if err == nil || !strings.Contains(err.Error(), "PUNTOS_HTTP_ADDR") {
		t.Fatalf("start on a taken port: %v; want the setting named", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "nats")); !os.IsNotExist(err) {
		t.Fatalf("the embedded NATS store was made before the port was checked: %v", err)
	}
	// The same settings start once the port is free.
	busy.Close()
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	if a.Addr() != cfg.HTTPAddr {
		t.Fatalf("started on %s, want %s", a.Addr(), cfg.HTTPAddr)
	}
}
