package natsbus

import (
	"context"
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
// are each answered for themselves: new ones stored, an unsealed one
// failing alone, a repeated one either reported as a duplicate by the
// server (when it travelled alone) or stored once more (when it travelled
// in a pack, see gather.go), for the ledger to answer as a replay.
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
		want := n // commands stored: each once, and each repeat not dropped
		for i := range all {
			switch {
			case i == n:
				if errs[i] == nil {
					t.Fatal("unsealed command published")
				}
			case errs[i] != nil:
				t.Fatalf("command %d: %v", i, errs[i])
			case dup[i] && i >= n/2:
				t.Fatalf("command %d: a new command reported as a duplicate", i)
			case !dup[i] && i < n/2:
				want++
			}
		}
		msgs := streamMsgs(t, b, b.cmdStream)
		got, _ := storedTxns(t, b, int(msgs))
		seen := map[string]bool{}
		for _, txn := range got {
			seen[txn] = true
		}
		if len(got) != want || len(seen) != n {
			t.Fatalf("stream holds %d commands (%d distinct) in %d messages, want %d (%d)",
				len(got), len(seen), msgs, want, n)
		}
	})
}
