package natsbus

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// A stream whose store the server cannot make at first (here a file
// stands where its directory goes) is tried again, and the bus starts once
// the store can be made; when it never can, Connect fails naming the
// stream and the tries.
func TestConnectRetriesStoreTheServerCouldNotMake(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, url := embedded(t, dir, false)
	streams := filepath.Join(dir, "jetstream", "$G", "streams")
	if err := os.MkdirAll(streams, 0o750); err != nil {
		t.Fatal(err)
	}
	block := func(ns string) string {
		path := filepath.Join(streams, ns+"_"+bus.CommandStream)
		if err := os.WriteFile(path, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	ns := namespace(t)
	path := block(ns)
	cleared := time.AfterFunc(250*time.Millisecond, func() { os.Remove(path) })
	defer cleared.Stop()
	b := connect(t, url, ns, true, nil)
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("command stream's store after the retry: %v, %v; want a directory", fi, err)
	}
	publish(t, b, command("m-1", "store-1", 5), false)
	info, err := b.js.Stream(context.Background(), b.cmdStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("command stream holds %d messages, want 1", n)
	}

	stuck := namespace(t)
	block(stuck)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := Config{URL: url, Name: t.Name(), Namespace: stuck, Partitions: 4}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_, err = Connect(ctx, cfg, log)
	if err == nil {
		t.Fatal("Connect succeeded with a file where the stream's directory goes")
	}
	want := []string{stuck + "_" + bus.CommandStream, "tried 4 times", "the NATS server's log"}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Connect error %q does not name %q", err, w)
		}
	}
}
