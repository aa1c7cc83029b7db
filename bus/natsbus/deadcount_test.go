package natsbus

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
)

// Every dead letter the bus stores is counted once, whatever set it
// aside: a line that is not a command, a command that failed MaxDeliver
// times, and a refusal written twice (as after a crash before Term) once.
func TestOnDeadLetterCountsEveryLetterOnce(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		var stored atomic.Int64
		b := connect(t, url, namespace(t), true, func(c *Config) {
			c.MaxDeliver = 2
			c.OnDeadLetter = func() { stored.Add(1) }
		})
		member := "m-count"
		p := bus.Partition("acme", member, b.Partitions())
		ctx := context.Background()
		if _, err := b.js.Publish(ctx, b.commandSubject(p), []byte(`not json{`)); err != nil {
			t.Fatal(err)
		}
		publish(t, b, command(member, "t-poison", 1), false)

		rec := newRecorder(func(int, []*Delivery) error { return errors.New("boom") })
		consume(t, b, p, 10, rec.handle)
		eventually(t, "two dead letters", func() bool {
			dead, err := b.DeadLetters(ctx, 10)
			return err == nil && len(dead) == 2
		})
		if n := stored.Load(); n != 2 {
			t.Fatalf("counted %d dead letters, want 2 (undecodable, max deliveries)", n)
		}

		// The same delivery written again: the server keeps one copy, and
		// the count does not move.
		dead, err := b.DeadLetters(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		d := &Delivery{Command: dead[1].Command, Partition: p, Seq: dead[1].CommandSeq,
			Raw: dead[1].Raw}
		for range 2 {
			if err := b.DeadLetter(ctx, d, "refused"); err != nil {
				t.Fatal(err)
			}
		}
		if n := stored.Load(); n != 3 {
			t.Fatalf("counted %d dead letters after one refusal written twice, want 3", n)
		}
		if all, err := b.DeadLetters(ctx, 10); err != nil || len(all) != 3 {
			t.Fatalf("dead letters = %d, %v; want 3", len(all), err)
		}
	})
}
