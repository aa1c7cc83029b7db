package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// SubscribeResults hears the results of its commands and nothing else.
func TestSubscribeResultsHearsItsCommands(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		gateway := connect(t, url, ns, true, nil)
		core := connect(t, url, ns, false, nil)
		results, unsubscribe, err := gateway.SubscribeResults("pos", []string{"a", "b", "c"})
		if err != nil {
			t.Fatal(err)
		}
		for _, txn := range []string{"a", "other", "c"} {
			r := bus.Result{CommandID: "cmd-" + txn, Source: "pos", TxnID: txn, Kind: "earn",
				Status: bus.StatusOK}
			if err := core.PublishResult(r); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for len(got) < 2 {
			select {
			case r := <-results:
				got = append(got, r.TxnID)
			case <-time.After(5 * time.Second):
				t.Fatalf("results heard: %v, want a and c", got)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("results heard: %v, want a and c", got)
		}
		unsubscribe()
		if r, open := <-results; open {
			t.Fatalf("after unsubscribe: %+v, want a closed channel", r)
		}
	})
}

// atomicWant is n when b's server takes atomic batches, 0 otherwise.
func atomicWant(b *Bus, n uint64) uint64 {
	if serverAtLeast(b.nc.ConnectedServerVersion(), atomicMinVersion) {
		return n
	}
	return 0
}

// Single commands published at the same moment, some of them repeated,
// are each stored once and each answered for themselves: new ones stored,
// repeated ones duplicates, an unsealed one failing alone.
func TestConcurrentSingleCommandsAreStoredOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		const n = 200
		cmds := make([]bus.Command, n)
		for i := range cmds {
			cmds[i] = command(fmt.Sprintf("m-%d", i%13), fmt.Sprintf("s-%d", i), i+1)
		}
		publishAll := func(cmds []bus.Command) ([]bool, []error) {
			dup, errs := make([]bool, len(cmds)), make([]error, len(cmds))
			var wg sync.WaitGroup
			for i := range cmds {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					dup[i], errs[i] = b.PublishCommand(ctx, cmds[i])
				})
			}
			wg.Wait()
			return dup, errs
		}

		// The first half, then all of them with an unsealed one among them.
		dup, errs := publishAll(cmds[:n/2])
		for i := range n / 2 {
			if errs[i] != nil || dup[i] {
				t.Fatalf("command %d: duplicate %v, error %v", i, dup[i], errs[i])
			}
		}
		unsealed := command("m-x", "s-unsealed", 1)
		unsealed.Hash = ""
		all := append(slices.Clone(cmds), unsealed)
		dup, errs = publishAll(all)
		for i := range all {
			switch {
			case i == n:
				if errs[i] == nil {
					t.Fatal("unsealed command published")
				}
			case errs[i] != nil:
				t.Fatalf("command %d: %v", i, errs[i])
			case dup[i] != (i < n/2):
				t.Fatalf("command %d: duplicate %v, want %v", i, dup[i], i < n/2)
			}
		}
		if got := streamMsgs(t, b, b.cmdStream); got != n {
			t.Fatalf("command stream holds %d messages, want %d", got, n)
		}
		// What the stream holds is each command once, in full.
		seen := map[string]bool{}
		for _, d := range readCommands(t, b, n) {
			seen[d.TxnID] = true
		}
		if len(seen) != n {
			t.Fatalf("%d distinct commands read back, want %d", len(seen), n)
		}
	})
}

// readCommands reads the first n messages of b's command stream.
func readCommands(t *testing.T, b *Bus, n int) []bus.Command {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, b.cmdStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	out := make([]bus.Command, 0, n)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		var c bus.Command
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, c)
	}
	return out
}
