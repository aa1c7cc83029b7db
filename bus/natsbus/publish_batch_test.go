package natsbus

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// A batch is stored once: sent again, every command is a duplicate; a
// command that cannot be sent fails alone.
func TestPublishCommandsStoresABatchOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		cmds := make([]bus.Command, 300)
		for i := range cmds {
			cmds[i] = command(fmt.Sprintf("m-%d", i%17), fmt.Sprintf("t-%d", i), i+1)
		}
		ctx := context.Background()
		dup, errs := b.PublishCommands(ctx, cmds)
		for i := range cmds {
			if errs[i] != nil || dup[i] {
				t.Fatalf("command %d: duplicate %v, error %v", i, dup[i], errs[i])
			}
		}
		if n := streamMsgs(t, b, b.cmdStream); n != 300 {
			t.Fatalf("command stream holds %d messages, want 300", n)
		}

		// The same batch again, with an unsealed command in the middle.
		unsealed := command("m-x", "t-unsealed", 1)
		unsealed.Hash = ""
		again := slices.Insert(slices.Clone(cmds), 150, unsealed)
		dup, errs = b.PublishCommands(ctx, again)
		for i := range again {
			if i == 150 {
				if errs[i] == nil {
					t.Fatal("unsealed command published")
				}
				continue
			}
			if errs[i] != nil || !dup[i] {
				t.Fatalf("resent command %d: duplicate %v, error %v", i, dup[i], errs[i])
			}
		}
		if n := streamMsgs(t, b, b.cmdStream); n != 300 {
			t.Fatalf("command stream holds %d messages after the resend, want 300", n)
		}
	})
}

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
