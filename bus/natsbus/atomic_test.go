package natsbus

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// The tests of this file store one message per command, as the bus stores
// ledger events (PublishEvents), to try atomic batches with message ids
// that repeat; PublishCommands packs commands instead (publish_batch.go).

// storeOneByOne stores cmds with store, one message each with its own
// message id, and returns store's answers.
func storeOneByOne(ctx context.Context, b *Bus, cmds []bus.Command) ([]bool, []error) {
	msgs, ids := make([]*nats.Msg, len(cmds)), make([]string, len(cmds))
	dup, errs := make([]bool, len(cmds)), make([]error, len(cmds))
	for i, c := range cmds {
		if msgs[i], errs[i] = b.commandMsg(c); errs[i] == nil {
			ids[i] = bus.MsgID(c)
		}
	}
	b.store(ctx, b.cmdStream, msgs, ids, dup, errs)
	return dup, errs
}

// Batches of sizes around the atomic bounds, each with a command repeated
// inside the batch and a share of commands already stored by an earlier
// batch: every command is stored once and each gets its own answer.
func TestAtomicSizesWithRepeats(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		ctx := context.Background()
		stored := 0
		var earlier []bus.Command
		for _, size := range []int{31, 32, 33, 500, 501, 1001} {
			var cmds []bus.Command
			want := map[int]bool{} // index -> duplicate expected
			// A quarter of the batch repeats the previous batch.
			for k := 0; k < size/4 && k < len(earlier); k++ {
				want[len(cmds)] = true
				cmds = append(cmds, earlier[k])
			}
			for len(cmds) < size-1 {
				txn := fmt.Sprintf("s%d-%d", size, len(cmds))
				cmds = append(cmds, command(fmt.Sprintf("m-%d", len(cmds)%7), txn, size))
				stored++
			}
			// The batch's own middle command again, at its end.
			mid := (size/4 + size) / 2
			if mid >= len(cmds) {
				mid = len(cmds) - 1
			}
			want[len(cmds)] = true
			cmds = append(cmds, cmds[mid])

			dup, errs := storeOneByOne(ctx, b, cmds)
			for i := range cmds {
				if errs[i] != nil {
					t.Fatalf("size %d: command %d: %v", size, i, errs[i])
				}
				if dup[i] != want[i] {
					t.Errorf("size %d: command %d (%s): duplicate %v, want %v", size, i,
						cmds[i].TxnID, dup[i], want[i])
				}
			}
			if n := streamMsgs(t, b, b.cmdStream); n != uint64(stored) {
				t.Fatalf("after size %d the stream holds %d, want %d", size, n, stored)
			}
			earlier = cmds
		}
	})
}

// Many callers publish overlapping batches at once, more than the server's
// 50 open atomic batches per stream across two connections: each command
// is stored once, and exactly one caller is told it is new.
func TestAtomicConcurrentOverlap(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		buses := []*Bus{connect(t, url, ns, true, nil), connect(t, url, ns, false, nil),
			connect(t, url, ns, false, nil), connect(t, url, ns, false, nil)}
		const callers, per, distinct = 64, 64, 1500
		var fresh [distinct]atomic.Int32
		var wg sync.WaitGroup
		var failed atomic.Int32
		for c := range callers {
			wg.Go(func() {
				cmds := make([]bus.Command, per)
				idx := make([]int, per)
				for k := range cmds {
					idx[k] = (c*37 + k*11) % distinct
					cmds[k] = command(fmt.Sprintf("m-%d", idx[k]%9), fmt.Sprintf("c-%d", idx[k]),
						idx[k]+1)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				dup, errs := storeOneByOne(ctx, buses[c%len(buses)], cmds)
				for k := range cmds {
					if errs[k] != nil {
						failed.Add(1)
						t.Errorf("caller %d command %d: %v", c, k, errs[k])
						continue
					}
					if !dup[k] {
						fresh[idx[k]].Add(1)
					}
				}
			})
		}
		wg.Wait()
		sent := map[int]bool{}
		for c := range callers {
			for k := range per {
				sent[(c*37+k*11)%distinct] = true
			}
		}
		for i := range distinct {
			if n := fresh[i].Load(); sent[i] && n != 1 && failed.Load() == 0 {
				t.Errorf("command c-%d: %d callers told it is new, want 1", i, n)
			}
		}
		if n := streamMsgs(t, buses[0], buses[0].cmdStream); n != uint64(len(sent)) {
			t.Fatalf("stream holds %d, want %d", n, len(sent))
		}
	})
}

// An oversized command inside a batch fails alone; the others are stored.
func TestAtomicOversizedMember(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		cmds := make([]bus.Command, 40)
		for i := range cmds {
			cmds[i] = command("m-1", fmt.Sprintf("o-%d", i), i+1)
		}
		big := command("m-1", "o-big", 1)
		big.Payload = []byte(`{"points":1,"note":"` + strings.Repeat("x", 2<<20) + `"}`)
		big.Seal()
		cmds[17] = big
		dup, errs := storeOneByOne(context.Background(), b, cmds)
		for i := range cmds {
			if i == 17 {
				if errs[i] == nil {
					t.Error("oversized command stored")
				}
				continue
			}
			if errs[i] != nil || dup[i] {
				t.Errorf("command %d: duplicate %v, error %v", i, dup[i], errs[i])
			}
		}
		if n := streamMsgs(t, b, b.cmdStream); n != 39 {
			t.Fatalf("stream holds %d, want 39", n)
		}
	})
}

// cutProxy forwards one TCP connection at a time to target. The first time
// the client sends the commit of an atomic batch, it forwards it, drops
// whatever the server answers and cuts the connection: the commit is
// stored, its answer lost. Later connections pass through untouched.
func cutProxy(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	var cut atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			var mute atomic.Bool
			go func() { // server to client
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 && !mute.Load() {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
			go func() { // client to server
				buf := make([]byte, 64<<10)
				var tail []byte
				for {
					n, err := c.Read(buf)
					if n > 0 {
						chunk := append(tail, buf[:n]...)
						hit := !cut.Load() && bytes.Contains(chunk, []byte(batchCommitHeader))
						if hit {
							cut.Store(true)
							mute.Store(true)
						}
						if _, err := s.Write(buf[:n]); err != nil {
							return
						}
						if hit {
							time.Sleep(300 * time.Millisecond) // the server commits
							c.Close()
							s.Close()
							return
						}
						tail = append(tail[:0], chunk[max(0, len(chunk)-64):]...)
					}
					if err != nil {
						if err != io.EOF {
							s.Close()
						}
						return
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// The answer to an atomic batch's commit is lost with the connection. With
// a context without deadline (the outbox relay's), PublishEvents must still
// return, as the message-by-message path does within its ack timeout.
func TestAtomicLostCommitAnswer(t *testing.T) {
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	proxy := cutProxy(t, strings.TrimPrefix(url, "nats://"))
	b := connect(t, proxy, namespace(t), true, nil)
	if !b.atomicStreams[b.evtStream] {
		t.Skip("server without atomic batches")
	}
	evs := make([]bus.Event, 40)
	for i := range evs {
		evs[i] = bus.Event{ID: fmt.Sprintf("ev-%d", i), Kind: "points.accrued",
			Program: "acme", Member: "m-1", Points: 1, Source: "pos",
			TxnID: fmt.Sprintf("t-%d", i), OccurredAt: occurred, RecordedAt: occurred}
	}
	done := make(chan error, 1)
	go func() { done <- b.PublishEvents(context.Background(), evs) }()
	select {
	case err := <-done:
		t.Logf("PublishEvents returned: %v (connected %v)", err, b.nc.IsConnected())
	case <-time.After(45 * time.Second):
		t.Logf("connected %v, status %v", b.nc.IsConnected(), b.nc.Status())
		t.Fatal("PublishEvents still waiting 45s after the commit's answer was lost " +
			"(the message-by-message path gives up after 30s)")
	}
	if n := streamMsgs(t, b, b.evtStream); n != 40 {
		t.Fatalf("event stream holds %d, want 40", n)
	}
}
