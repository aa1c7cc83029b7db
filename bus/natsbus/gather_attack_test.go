package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// A review's attacks on the gathering of single commands (gather.go).

// freeQueue waits until partition p's queue has nothing on its way and
// nothing waiting.
func freeQueue(t *testing.T, b *Bus, p int) {
	t.Helper()
	q := b.gather.of(b.commandSubject(p))
	eventually(t, fmt.Sprintf("partition %d free", p), func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return !q.sending && len(q.waiting) == 0
	})
}

// bigCommand is a sealed command of member whose payload holds size bytes
// of padding.
func bigCommand(member, txn string, size int) bus.Command {
	c := command(member, txn, 1)
	pad, _ := json.Marshal(strings.Repeat("x", size))
	c.Payload = json.RawMessage(`{"points":1,"note":` + string(pad) + `}`)
	c.Seal()
	return c
}

// A panic while a command travels alone (net/http recovers a handler's
// panic, so the gateway lives on) must not leave its partition marked as
// sending: every later command of the partition would wait for its
// caller's deadline. A nil context is the simplest way to make jetstream's
// PublishMsg panic.
func TestGatherAttackPanicJamsPartition(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 3 % b.Partitions()
		cmds := commandsOf(b, p, 2, 2, "panic")
		panicked := func() (r any) {
			defer func() { r = recover() }()
			var nilCtx context.Context // as a buggy caller would pass
			b.PublishCommand(nilCtx, cmds[0])
			return nil
		}()
		if panicked == nil {
			t.Skip("PublishCommand did not panic on a nil context")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if dup, err := b.PublishCommand(ctx, cmds[1]); err != nil || dup {
			t.Fatalf("the next command of the partition: duplicate %v, error %v "+
				"(the partition stayed marked as sending after the panic)", dup, err)
		}
	})
}

// Commands queued behind one another include one
// bigger than the pack limit (it travels alone) and one bigger than the
// server takes (it fails alone); the others are stored, in order.
func TestGatherAttackBigCommandsInQueue(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 1 % b.Partitions()
		members := membersOf(p, b.Partitions(), 2)
		most := int(b.nc.MaxPayload())
		cmds := []bus.Command{
			command(members[0], "s0", 1),
			bigCommand(members[1], "big", most*3/4), // over the pack limit, under the server's
			command(members[0], "s1", 1),
			bigCommand(members[1], "huge", most+10), // over the server's limit
			command(members[0], "s2", 1),
			command(members[1], "s3", 1),
		}
		q := hold(b, p)
		errs := make([]error, len(cmds))
		var wg sync.WaitGroup
		for i, c := range cmds {
			wg.Go(func() { _, errs[i] = b.PublishCommand(context.Background(), c) })
			eventually(t, fmt.Sprintf("command %d waiting", i), func() bool {
				return waiting(q) == i+1
			})
		}
		b.sendWaiting(q)
		wg.Wait()
		for i, err := range errs {
			if (err != nil) != (cmds[i].TxnID == "huge") {
				t.Errorf("%s: error %v", cmds[i].TxnID, err)
			}
		}
		n := streamMsgs(t, b, b.cmdStream)
		got, _ := storedTxns(t, b, int(n))
		if want := "s0 big s1 s2 s3"; strings.Join(got, " ") != want {
			t.Fatalf("stream holds %v in %d messages, want %s", got, n, want)
		}
		freeQueue(t, b, p)
	})
}

// Many callers on one partition
// publish one command after the other; some give up early (their context
// ends while they wait). Every caller that did not give up is answered
// without error; a command of a caller that gave up may be stored or not,
// but nothing a caller sent is stored after what it sent next; the
// partition ends free.
func TestGatherAttackCancelStorm(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		p := 2 % b.Partitions()
		eachCaller(t, b, p, 24, 20, func(c, i int, cmd bus.Command) error {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if (c+i)%3 == 0 {
				ctx, cancel = context.WithTimeout(context.Background(),
					time.Duration(i%4)*200*time.Microsecond)
			}
			defer cancel()
			if _, err := b.PublishCommand(ctx, cmd); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %v", cmd.TxnID, err)
			}
			return nil
		})
		freeQueue(t, b, p)
		n := streamMsgs(t, b, b.cmdStream)
		got, _ := storedTxns(t, b, int(n))
		for c, seq := range byCaller(t, got) {
			for k := 1; k < len(seq); k++ {
				if seq[k] <= seq[k-1] {
					t.Fatalf("caller %d: command %d stored after its command %d", c, seq[k],
						seq[k-1])
				}
			}
		}
	})
}

// The server stops and starts again (same store, same address for its
// clients: a relay that keeps it) while callers publish on one partition:
// every caller is answered within a bound, nothing waits forever, and
// afterwards the partition takes commands again.
func TestGatherAttackServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stop1, url1 := embedded(t, dir, true)
	r := newRelay(t, url1)
	b := connect(t, r.url(), "restart-gather", false, nil)
	p := 0
	const callers, each = 16, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answered, failures int
	slowest := time.Duration(0)
	for c := range callers {
		cmds := commandsOf(b, p, 4, each, fmt.Sprintf("r%d-", c))
		wg.Go(func() {
			for _, cmd := range cmds {
				ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
				start := time.Now()
				_, err := b.PublishCommand(ctx, cmd)
				took := time.Since(start)
				cancel()
				mu.Lock()
				answered++
				if err != nil {
					failures++
				}
				slowest = max(slowest, took)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(150 * time.Millisecond)
	stop1()
	r.to("")
	time.Sleep(1500 * time.Millisecond)
	_, url2 := embedded(t, dir, true)
	r.to(url2)
	wg.Wait()
	t.Logf("%d answers, %d errors, slowest answer %s", answered, failures, slowest)
	freeQueue(t, b, p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.PublishCommand(ctx, command(membersOf(p, b.Partitions(), 1)[0],
		"after", 1)); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}
