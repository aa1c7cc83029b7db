package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// deadLetterBus starts an embedded NATS server of 4 partitions for a test
// and connects a bus to it; it returns the bus and the server's URL.
func deadLetterBus(t *testing.T) (*natsbus.Bus, string) {
	t.Helper()
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := natsbus.Connect(context.Background(), natsbus.Config{URL: url, Partitions: 4},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, url
}

// deadDelivery is an accrual of billing's txn for member m-1 of telco, as
// delivered at seq of its partition, to be dead-lettered.
func deadDelivery(t *testing.T, txn string, seq uint64) *natsbus.Delivery {
	t.Helper()
	cmd := bus.Command{ID: uuid.NewString(), Kind: "points.accrue", Source: "billing",
		TxnID: txn, Program: "telco", Member: "m-1", Payload: []byte(`{}`)}
	cmd.Seal()
	raw, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &natsbus.Delivery{Command: cmd, Raw: raw, Seq: seq,
		Partition: bus.Partition("telco", "m-1", 4)}
}

// redrive --all re-drives the failed letters and leaves the refused ones
// (re-driven, they would get their refusal again and lose their record);
// discard --refused removes the refused ones and no other.
func TestRedriveAllLeavesRefusalsAndDiscardRefusedTakesThem(t *testing.T) {
	ctx := context.Background()
	b, url := deadLetterBus(t)
	letter := func(txn string, seq uint64) *natsbus.Delivery { return deadDelivery(t, txn, seq) }
	for i, txn := range []string{"ref-1", "ref-2"} {
		if err := b.DeadLetterRefused(ctx, letter(txn, uint64(i+1)), "not_found: member"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeadLetter(ctx, letter("fail-1", 3), "max deliveries: boom"); err != nil {
		t.Fatal(err)
	}
	// The failed one goes back on its partition: a consumer for it must
	// exist, as a platform's core makes it.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Consume(cctx, bus.Partition("telco", "m-1", 4), 10, 100*time.Millisecond,
			func(context.Context, []*natsbus.Delivery) error { return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	// Wait until core's durable consumer of the partition exists.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	durable := "core-p" + strconv.Itoa(bus.Partition("telco", "m-1", 4))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := js.Consumer(ctx, bus.CommandStream, durable); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("consumer %s not made: %v", durable, err)
		}
	}

	out, err := puntosCLI(t, "deadletters", "redrive", "--all", "--wait", "0", "--nats-url", url)
	if err != nil {
		t.Fatalf("redrive --all: %v\n%s", err, out)
	}
	if !strings.Contains(out, "2 refused dead letters left as they are") {
		t.Errorf("redrive --all does not say it left the refusals:\n%s", out)
	}
	w, err := b.DeadLettersWaiting(ctx)
	if err != nil || w != (natsbus.Waiting{Refused: 2}) {
		t.Fatalf("after redrive --all: %+v, %v; want the two refusals only", w, err)
	}

	out, err = puntosCLI(t, "deadletters", "discard", "--refused", "--nats-url", url)
	if err != nil {
		t.Fatalf("discard --refused: %v\n%s", err, out)
	}
	if strings.Count(out, "discarded") != 2 {
		t.Errorf("discard --refused output:\n%s", out)
	}
	if w, err := b.DeadLettersWaiting(ctx); err != nil || w != (natsbus.Waiting{}) {
		t.Fatalf("after discard --refused: %+v, %v; want none", w, err)
	}
	out, err = puntosCLI(t, "deadletters", "discard", "--refused", "--nats-url", url)
	if err != nil || !strings.Contains(out, "No refused dead letters.") {
		t.Fatalf("discard --refused with none: %v\n%s", err, out)
	}
	if _, err := puntosCLI(t, "deadletters", "redrive", "--refused", "--nats-url", url); err == nil ||
		!strings.Contains(err.Error(), "--refused is for discard") {
		t.Errorf("redrive --refused: %v, want it refused", err)
	}
}
