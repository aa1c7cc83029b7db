package natsbus

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// result is an applied result of ("pos", txn) by command id.
func result(txn, id string) bus.Result {
	return bus.Result{CommandID: id, Source: "pos", TxnID: txn, Kind: "earn",
		Status: bus.StatusOK}
}

// receive reads one result from ch, failing t when none comes.
func receive(t *testing.T, ch <-chan bus.Result) bus.Result {
	t.Helper()
	select {
	case r, open := <-ch:
		if !open {
			t.Fatal("channel closed, want a result")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	return bus.Result{}
}

// announce publishes r from b, failing t on error.
func announce(t *testing.T, b *Bus, r bus.Result) {
	t.Helper()
	if err := b.PublishResult(r); err != nil {
		t.Fatal(err)
	}
}

func TestResultBeforeAndAfterTheWait(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		gateway := connect(t, url, ns, true, nil)
		core := connect(t, url, ns, false, nil)

		// A sentinel waiter makes the shared subscription, and tells when
		// the gateway has seen what core announced before it.
		sentinel, stopSentinel, err := gateway.SubscribeResult("pos", "t-sentinel")
		if err != nil {
			t.Fatal(err)
		}
		defer stopSentinel()

		// Announced before anyone waits for t-1: nobody gets it.
		announce(t, core, result("t-1", "c-early"))
		announce(t, core, result("t-sentinel", "c-s"))
		receive(t, sentinel)

		// Announced after the wait began but before the caller reads:
		// the channel holds it.
		results, unsubscribe, err := gateway.SubscribeResult("pos", "t-1")
		if err != nil {
			t.Fatal(err)
		}
		defer unsubscribe()
		announce(t, core, result("t-1", "c-late"))
		announce(t, core, result("t-sentinel", "c-s2"))
		receive(t, sentinel)
		if got := receive(t, results); got.CommandID != "c-late" {
			t.Fatalf("first result heard = %s, want c-late (c-early came before the wait)",
				got.CommandID)
		}

		// And one announced while the caller is reading.
		got := make(chan bus.Result, 1)
		go func() { got <- receive(t, results) }()
		announce(t, core, result("t-1", "c-again"))
		if r := <-got; r.CommandID != "c-again" {
			t.Fatalf("result = %s, want c-again", r.CommandID)
		}
	})
}

func TestTwoWaitersForOneCommand(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		gateway := connect(t, url, ns, true, nil)
		core := connect(t, url, ns, false, nil)

		first, stopFirst, err := gateway.SubscribeResult("pos", "t-9")
		if err != nil {
			t.Fatal(err)
		}
		retry, stopRetry, err := gateway.SubscribeResult("pos", "t-9")
		if err != nil {
			t.Fatal(err)
		}
		batch, stopBatch, err := gateway.SubscribeResults("pos", []string{"t-8", "t-9"})
		if err != nil {
			t.Fatal(err)
		}
		defer stopBatch()
		if n := gateway.waitingSubjects(); n != 2 {
			t.Fatalf("subjects waited on = %d, want 2 (t-8 and t-9)", n)
		}

		announce(t, core, result("t-9", "c-9"))
		for name, ch := range map[string]<-chan bus.Result{"first": first, "retry": retry,
			"batch": batch} {
			if got := receive(t, ch); got.CommandID != "c-9" {
				t.Fatalf("%s waiter heard %s, want c-9", name, got.CommandID)
			}
		}

		// The first attempt gives up; the retry still hears the next result.
		stopFirst()
		if _, open := <-first; open {
			t.Fatal("first channel open after unsubscribe")
		}
		announce(t, core, result("t-9", "c-9b"))
		if got := receive(t, retry); got.CommandID != "c-9b" {
			t.Fatalf("retry heard %s, want c-9b", got.CommandID)
		}
		if got := receive(t, batch); got.CommandID != "c-9b" {
			t.Fatalf("batch heard %s, want c-9b", got.CommandID)
		}
		stopRetry()
		stopRetry()
		if n := gateway.waitingSubjects(); n != 2 {
			t.Fatalf("subjects waited on = %d, want 2 (the batch's)", n)
		}
	})
}

func TestWaitersLeaveNoTrace(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		gateway := connect(t, url, ns, true, nil)
		core := connect(t, url, ns, false, nil)

		// Many waiters at once share one subscription on the server; the
		// connection has others of its own (JetStream's replies).
		var stops []func()
		subs := 0
		for i := range 50 {
			_, stop, err := gateway.SubscribeResult("pos", "t-"+strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			stops = append(stops, stop)
			if i == 0 {
				subs = gateway.nc.NumSubscriptions()
			}
		}
		txns := make([]string, 100)
		for i := range txns {
			txns[i] = fmt.Sprintf("b-%d", i)
		}
		batch, stopBatch, err := gateway.SubscribeResults("pos", txns)
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stopBatch)
		if n := gateway.waitingSubjects(); n != 150 {
			t.Fatalf("subjects waited on = %d, want 150", n)
		}
		if n := gateway.nc.NumSubscriptions(); n != subs {
			t.Fatalf("subscriptions on the connection = %d, want %d as with one waiter",
				n, subs)
		}

		announce(t, core, result("b-42", "c-42"))
		if got := receive(t, batch); got.TxnID != "b-42" {
			t.Fatalf("batch heard %s, want b-42", got.TxnID)
		}

		for _, stop := range stops {
			stop()
		}
		if n := gateway.waitingSubjects(); n != 0 {
			t.Fatalf("subjects waited on after every unsubscribe = %d, want 0", n)
		}

		// A result nobody waits for any more goes nowhere and adds nothing.
		announce(t, core, result("t-3", "c-3"))
		probe, stopProbe, err := gateway.SubscribeResult("pos", "t-probe")
		if err != nil {
			t.Fatal(err)
		}
		announce(t, core, result("t-probe", "c-p"))
		receive(t, probe)
		stopProbe()
		if n := gateway.waitingSubjects(); n != 0 {
			t.Fatalf("subjects waited on = %d, want 0", n)
		}
	})
}

func TestWaiterHearsResultsAfterReconnect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stop, u := embedded(t, dir, false)
	r := newRelay(t, u) // the address the clients know, kept while the server is away
	ns := namespace(t)
	gateway := connect(t, r.url(), ns, false, nil)
	core := connect(t, r.url(), ns, false, nil)

	results, unsubscribe, err := gateway.SubscribeResult("pos", "t-r")
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()
	subs := gateway.nc.NumSubscriptions()

	// The server goes away and comes back at the same address.
	stop()
	r.to("")
	eventually(t, "the gateway to notice", func() bool { return !gateway.nc.IsConnected() })
	_, u2 := embedded(t, dir, false)
	r.to(u2)
	eventually(t, "both to reconnect", func() bool {
		return gateway.nc.IsConnected() && core.nc.IsConnected()
	})
	if err := gateway.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The waiter registered before the outage hears the result, and a new
	// one registers without a new subscription.
	announce(t, core, result("t-r", "c-r"))
	if got := receive(t, results); got.CommandID != "c-r" {
		t.Fatalf("result = %s, want c-r", got.CommandID)
	}
	later, stopLater, err := gateway.SubscribeResult("pos", "t-later")
	if err != nil {
		t.Fatal(err)
	}
	defer stopLater()
	announce(t, core, result("t-later", "c-l"))
	if got := receive(t, later); got.CommandID != "c-l" {
		t.Fatalf("result = %s, want c-l", got.CommandID)
	}
	if n := gateway.nc.NumSubscriptions(); n != subs {
		t.Fatalf("subscriptions on the connection = %d, want %d as before", n, subs)
	}
}
