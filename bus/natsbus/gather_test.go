package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
)

// hold marks partition p's queue as having a message on its way, so that
// the commands published to it wait, and returns the queue.
func hold(b *Bus, p int) *gatherQueue {
	q := b.gather.of(b.commandSubject(p))
	q.mu.Lock()
	q.sending = true
	q.mu.Unlock()
	return q
}

// waiting is how many commands wait in q.
func waiting(q *gatherQueue) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// storedTxns is the transaction ids of the commands in the first n
// messages of b's command stream, in order, and how many of those messages
// are packs.
func storedTxns(t *testing.T, b *Bus, n int) (txns []string, packs int) {
	t.Helper()
	for _, m := range readMessages(t, b, n) {
		lines := [][]byte{m.Data}
		if h := m.Header.Get(headerPack); h != "" {
			var ok bool
			if lines, ok = unpack(m.Data, atoi(t, h)); !ok {
				t.Fatalf("pack of %s does not unpack", h)
			}
			packs++
		}
		for _, line := range lines {
			var c bus.Command
			if problem := decodeCommand(line, &c); problem != "" {
				t.Fatalf("line %q: %s", line, problem)
			}
			txns = append(txns, c.TxnID)
		}
	}
	return txns, packs
}

// Commands that arrive while their partition has a message on its way wait
// for it, then travel together as one pack, in the order they arrived; a
// caller that gives up while waiting gets its context's error, and its
// command is stored all the same. Once the pack is stored the partition is
// free again: the next command travels alone.
func TestWaitingCommandsTravelAsOnePack(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 5 % b.Partitions()
		cmds := commandsOf(b, p, 3, 12, "g")
		q := hold(b, p)

		type answer struct {
			dup bool
			err error
		}
		answers := make([]answer, len(cmds))
		var mu sync.Mutex // guards answers
		var wg sync.WaitGroup
		ctx, giveUp := context.WithCancel(context.Background())
		for i, cmd := range cmds {
			cctx := context.Background()
			if i == 4 {
				cctx = ctx
			}
			wg.Go(func() {
				dup, err := b.PublishCommand(cctx, cmd)
				mu.Lock()
				answers[i] = answer{dup, err}
				mu.Unlock()
			})
			eventually(t, fmt.Sprintf("command %d waiting", i), func() bool {
				return waiting(q) == i+1
			})
		}
		giveUp()
		eventually(t, "the caller that gave up answered", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return answers[4].err != nil
		})
		if streamMsgs(t, b, b.cmdStream) != 0 {
			t.Fatal("a waiting command was stored before the message it waits for")
		}

		b.sendWaiting(q) // the message on its way is stored
		wg.Wait()
		for i, a := range answers {
			switch {
			case i == 4 && !errors.Is(a.err, context.Canceled):
				t.Errorf("command %d: error %v, want the caller's context.Canceled", i, a.err)
			case i != 4 && (a.err != nil || a.dup):
				t.Errorf("command %d: duplicate %v, error %v", i, a.dup, a.err)
			}
		}
		var want []string
		for _, c := range cmds {
			want = append(want, c.TxnID)
		}
		got, packs := storedTxns(t, b, 1)
		if n := streamMsgs(t, b, b.cmdStream); n != 1 || packs != 1 || !slices.Equal(got, want) {
			t.Fatalf("stream holds %d messages (%d packs) with %v, want one pack with %v",
				n, packs, got, want)
		}

		// The partition is free: the next command travels alone, and so
		// does a retry of a packed command, which the server cannot tell
		// from a new one (the ledger answers it as a replay).
		eventually(t, "the partition is free", func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return !q.sending
		})
		next := commandsOf(b, p, 1, 1, "alone")[0]
		publish(t, b, next, false)
		publish(t, b, cmds[0], false)
		publish(t, b, cmds[0], true)
		got, packs = storedTxns(t, b, 3)
		if want := []string{next.TxnID, cmds[0].TxnID}; packs != 1 ||
			!slices.Equal(got[len(got)-2:], want) {
			t.Fatalf("stream holds %v (%d packs), want the pack then %v", got, packs, want)
		}
	})
}

// When the pack cannot be sent, every command waiting in it gets an error,
// and none of them waits forever.
func TestWaitingCommandsFailTogether(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		b := connect(t, url, ns, false, nil)
		connect(t, url, ns, true, nil) // deletes the streams at the end
		p := 2 % b.Partitions()
		cmds := commandsOf(b, p, 2, 3, "f")
		q := hold(b, p)
		errs := make([]error, len(cmds))
		var wg sync.WaitGroup
		for i, cmd := range cmds {
			wg.Go(func() { _, errs[i] = b.PublishCommand(context.Background(), cmd) })
		}
		eventually(t, "three commands waiting", func() bool { return waiting(q) == 3 })
		b.Close()
		b.sendWaiting(q)
		wg.Wait()
		for i, err := range errs {
			if err == nil {
				t.Errorf("command %d: no error on a closed connection", i)
			}
		}
	})
}

// Many callers at once on one partition: every command is stored exactly
// once, and each caller's commands (published one after the other) are
// stored in its order.
func TestConcurrentCommandsAreStoredOnceInOrder(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 1 % b.Partitions()
		const callers, each = 32, 15
		eachCaller(t, b, p, callers, each, func(_, _ int, cmd bus.Command) error {
			if dup, err := b.PublishCommand(context.Background(), cmd); err != nil || dup {
				return fmt.Errorf("%s: duplicate %v, error %v", cmd.TxnID, dup, err)
			}
			return nil
		})
		n := streamMsgs(t, b, b.cmdStream)
		got, _ := storedTxns(t, b, int(n))
		if len(got) != callers*each {
			t.Fatalf("stream holds %d commands in %d messages, want %d", len(got), n,
				callers*each)
		}
		for c, seq := range byCaller(t, got) {
			for i, k := range seq {
				if k != i {
					t.Fatalf("caller %d: command %d stored where %d was due", c, k, i)
				}
			}
		}
	})
}

// eachCaller runs callers goroutines at once, each sending its each
// commands of partition p (transaction ids c<caller>-<number>) one after
// the other through send, and fails t with every error send returns.
func eachCaller(t *testing.T, b *Bus, p, callers, each int,
	send func(caller, i int, cmd bus.Command) error) {
	t.Helper()
	var wg sync.WaitGroup
	failed := make(chan error, callers*each)
	for c := range callers {
		cmds := commandsOf(b, p, 3, each, fmt.Sprintf("c%d-", c))
		wg.Go(func() {
			for i, cmd := range cmds {
				if err := send(c, i, cmd); err != nil {
					failed <- err
				}
			}
		})
	}
	wg.Wait()
	close(failed)
	for err := range failed {
		t.Error(err)
	}
}

// byCaller is, for each caller, the numbers of its commands (transaction
// ids c<caller>-<number>) in the order txns holds them.
func byCaller(t *testing.T, txns []string) map[int][]int {
	t.Helper()
	out := map[int][]int{}
	for _, txn := range txns {
		var c, i int
		if _, err := fmt.Sscanf(txn, "c%d-%d", &c, &i); err != nil {
			t.Fatalf("transaction id %q: %v", txn, err)
		}
		out[c] = append(out[c], i)
	}
	return out
}
