package natsbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// BenchmarkStoreGroups times storing groups of commands on an embedded
// server that syncs every write (the default), sent as one atomic batch or
// message by message, to choose the smallest group worth a batch. It
// reports messages per second.
//
//	go test -run '^$' -bench StoreGroups -benchtime=2s ./bus/natsbus/
func BenchmarkStoreGroups(b *testing.B) {
	for _, size := range []int{8, 32, 128, 500} {
		for _, atomic := range []bool{false, true} {
			name := fmt.Sprintf("%d/each", size)
			if atomic {
				name = fmt.Sprintf("%d/atomic", size)
			}
			b.Run(name, func(b *testing.B) { benchStoreGroups(b, size, atomic) })
		}
	}
}

// benchBuses starts an embedded server that syncs every write, for the
// length of the benchmark, and connects n buses of 8 partitions to it.
func benchBuses(b *testing.B, n int) (context.Context, []*Bus) {
	s, url, err := StartEmbedded(b.TempDir(), 0, true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	buses := make([]*Bus, n)
	for i := range buses {
		if buses[i], err = Connect(ctx, Config{URL: url, Partitions: 8}, nil); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(buses[i].Close)
	}
	return ctx, buses
}

func benchStoreGroups(b *testing.B, size int, atomic bool) {
	ctx, buses := benchBuses(b, 1)
	bb := buses[0]
	var err error
	n := 0
	start := time.Now()
	for b.Loop() {
		msgs, ids := make([]*nats.Msg, size), make([]string, size)
		for i := range msgs {
			c := command(fmt.Sprintf("m-%d", n%100), fmt.Sprintf("t-%d", n), 1)
			n++
			if msgs[i], err = bb.commandMsg(c); err != nil {
				b.Fatal(err)
			}
			ids[i] = bus.MsgID(c)
		}
		if atomic {
			if err := bb.publishAtomic(ctx, bb.cmdStream, msgs, ids); err != nil {
				b.Fatal(err)
			}
			continue
		}
		at := make([]int, size)
		for i := range at {
			at[i] = i
		}
		dup, errs := make([]bool, size), make([]error, size)
		bb.storeEach(ctx, bb.cmdStream, msgs, ids, at, dup, errs)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}
