package natsbus

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
)

// Two requests under one transaction id were both set aside (the caller
// replaced the first, 5 points, by a second, 6 points, and the ledger was
// still failing). The operator discards the first, the one its caller
// replaced, as the tool's help suggests. The second is still a dead letter,
// listed: a retry of it that the bus drops as a duplicate will get no result,
// so SetAside must still say so. Before the mark, the second letter was the
// last of the subject and SetAside said true; the mark, written after it,
// now hides it.
func TestLate6DiscardOfReplacedRequestHidesTheNewerLetter(t *testing.T) {
	t.Parallel()
	plat, tool, _, _ := r5Setup(t, nil)
	ctx := context.Background()
	first := command("m-1", "rp-1", 5)
	second := command("m-1", "rp-1", 6)
	p := bus.Partition("acme", "m-1", plat.Partitions())
	publish(t, plat, first, false)
	stop := failFor(t, plat, p)
	r5Dead(t, plat, 1)
	publish(t, plat, second, false)
	dead := r5Dead(t, plat, 2)
	_ = stop()
	if dead[0].Command.Hash != first.Hash || dead[1].Command.Hash != second.Hash {
		t.Fatalf("letters: %+v", dead)
	}

	lookup := func(what string) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		aside, err := plat.SetAside(c, second)
		if err != nil || !aside {
			t.Errorf("%s: SetAside(second request) = %v, %v; want true: its letter %d is "+
				"still listed", what, aside, err, dead[1].Seq)
		}
	}
	lookup("before the discard")
	if _, err := tool.Discard(ctx, dead[0].Seq); err != nil {
		t.Fatal(err)
	}
	if left, _ := plat.DeadLetters(ctx, 10); len(left) != 1 || left[0].Seq != dead[1].Seq {
		t.Fatalf("left after the discard: %+v", left)
	}
	lookup("after discarding the replaced first request")
}
