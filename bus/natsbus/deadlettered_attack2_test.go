package natsbus

import (
	"context"
	"testing"
	"time"
)

// Attacks on Bus.DeadLettered and its cached handle on the dead-letter
// stream, on an embedded server of the test's own.

func deadLetteredAs(t *testing.T, b *Bus, source, txn string) (bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.DeadLettered(ctx, source, txn)
}

// Kept behaviour. DeadLettered answers for the command's own (source,
// txn) only; after the dead-letter stream is deleted and made again, the
// cached handle answers "not dead-lettered" (no error) at once, and finds
// a dead letter written to the new stream; while the stream is gone it
// answers an error, never true.
func TestDeadLetteredAttack2HandleAfterStreamRecreated(t *testing.T) {
	t.Parallel()
	_, url := embedded(t, t.TempDir(), false)
	b := connect(t, url, namespace(t), false, func(c *Config) { c.MaxDeliver = 1 })
	publish(t, b, command("m-1", "dl-1", 5), false)
	failEverything(t, b)
	eventually(t, "dl-1 dead-lettered", func() bool { return deadTxns(t, b)["dl-1"] })

	if dead, err := deadLetteredAs(t, b, "pos", "dl-1"); err != nil || !dead {
		t.Fatalf("DeadLettered(pos, dl-1) = %v, %v; want true", dead, err)
	}
	for _, q := range [][2]string{{"web", "dl-1"}, {"pos", "dl-2"}, {"pos", "dl"},
		{"pos", "dl-1 "}} {
		if dead, err := deadLetteredAs(t, b, q[0], q[1]); err != nil || dead {
			t.Fatalf("DeadLettered(%s, %q) = %v, %v; want false", q[0], q[1], dead, err)
		}
	}

	// Deleted and made again, with the handle cached.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.js.DeleteStream(ctx, b.deadStream); err != nil {
		t.Fatal(err)
	}
	if err := b.ensureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if dead, err := deadLetteredAs(t, b, "pos", "dl-1"); err != nil || dead {
		t.Fatalf("after the stream was made again: %v, %v; want false, no error", dead, err)
	}

	// Gone: an error, not true; then made again and used.
	if err := b.js.DeleteStream(ctx, b.deadStream); err != nil {
		t.Fatal(err)
	}
	if dead, err := deadLetteredAs(t, b, "pos", "dl-1"); dead || err == nil {
		t.Fatalf("with the stream gone: %v, %v; want false and an error", dead, err)
	}
	if dead, err := deadLetteredAs(t, b, "pos", "dl-1"); dead || err == nil {
		t.Fatalf("with the stream still gone: %v, %v; want false and an error", dead, err)
	}
	if err := b.ensureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, b, command("m-1", "dl-2", 5), false)
	eventually(t, "dl-2 dead-lettered", func() bool { return deadTxns(t, b)["dl-2"] })
	if dead, err := deadLetteredAs(t, b, "pos", "dl-2"); err != nil || !dead {
		t.Fatalf("DeadLettered(pos, dl-2) on the new stream = %v, %v; want true", dead, err)
	}
}
