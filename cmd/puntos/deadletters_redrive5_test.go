package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// r5Platform is a platform's bus (MaxDeliver 1, 8 partitions) on an
// embedded server, with n earn commands of member m-1 set aside and one
// undecodable letter when junk; it returns the url and the letters.
func r5Platform(t *testing.T, n int, junk bool) (string, *natsbus.Bus, []natsbus.DeadLetter) {
	t.Helper()
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx := context.Background()
	b, err := natsbus.Connect(ctx, natsbus.Config{URL: url, MaxDeliver: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p := bus.Partition("acme", "m-1", b.Partitions())
	for i := range n {
		c := bus.Command{ID: "c-" + strconv.Itoa(i), Kind: "earn", Source: "pos",
			TxnID: "t-" + strconv.Itoa(i), Program: "acme", Member: "m-1",
			Payload: json.RawMessage(`{"points":1}`), OccurredAt: time.Now().UTC()}
		c.Seal()
		if _, err := b.PublishCommand(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if junk {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(bus.CommandSubject(p), []byte("not json{")); err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		nc.Close()
	}
	want := n
	if junk {
		want++
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		_ = b.Consume(cctx, p, 10, 100*time.Millisecond,
			func(context.Context, []*natsbus.Delivery) error { return errors.New("ledger unreachable") })
		close(done)
	}()
	var dead []natsbus.DeadLetter
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		dead, _ = b.DeadLetters(ctx, 100)
		if len(dead) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %d, want %d", len(dead), want)
		}
	}
	cancel()
	<-done
	return url, b, dead
}

func TestRedrive5CLIMessages(t *testing.T) {
	url, _, dead := r5Platform(t, 2, true)
	seq := strconv.FormatUint(dead[0].Seq, 10)
	for _, c := range []struct {
		args []string
		want string // in the error or output
	}{
		{[]string{"redrive", seq, "--limit", "0", "--nats-url", url}, "deadletters redrive"},
		{[]string{"list", "--wait", "-1s", "--nats-url", url}, "deadletters list"},
		{[]string{"redrive", seq, "--wait"}, "--wait"},
		{[]string{"redrive", "-5"}, "sequence"},
	} {
		out, err := puntosCLI(t, append([]string{"deadletters"}, c.args...)...)
		msg := out
		if err != nil {
			msg += " ERR: " + err.Error()
		}
		if err == nil || !strings.Contains(msg, c.want) {
			t.Errorf("%v: %q, want an error mentioning %q", c.args, msg, c.want)
		}
	}
}

// Two operators re-drive the same letter at once: the command is stored
// once and each run tells the truth (the loser must not say the letter
// was not removed, nor fail).
func TestRedrive5CLIConcurrentRuns(t *testing.T) {
	url, b, dead := r5Platform(t, 1, false)
	seq := strconv.FormatUint(dead[0].Seq, 10)
	var wg sync.WaitGroup
	outs := make([]string, 4)
	errs := make([]error, 4)
	for i := range outs {
		wg.Go(func() {
			outs[i], errs[i] = puntosCLI(t, "deadletters", "redrive", seq, "--wait", "0",
				"--nats-url", url)
		})
	}
	wg.Wait()
	for i := range outs {
		t.Logf("run %d: %v\n%s", i, errs[i], outs[i])
		if strings.Contains(outs[i], "not removed") {
			t.Errorf("run %d says the letter was not removed, though it is gone: %s", i, outs[i])
		}
	}
	if left, _ := b.DeadLetters(context.Background(), 10); len(left) != 0 {
		t.Fatalf("left: %+v", left)
	}
}

// A re-driven command the ledger had refused comes back as a replayed
// refusal: the CLI must not say it "had been applied already".
func TestRedrive5CLIAnswerOfReplayedRefusal(t *testing.T) {
	got := answer(bus.Result{Status: bus.StatusRejected, Replayed: true,
		Error: &bus.Error{Kind: "not_found", Field: "member", Message: "no member \"GHOST-1\""}})
	if strings.Contains(got, "applied") {
		t.Fatalf("answer to a replayed refusal: %q", got)
	}
}
