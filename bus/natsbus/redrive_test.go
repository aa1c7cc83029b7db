package natsbus

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
)

// A dead letter that is not a command cannot be re-driven: Redrive names
// why and keeps it; Discard removes it, and only it; a second Discard
// finds nothing. A tool's connection (UseStreams) sees the same letters
// and changes nothing of the streams.
func TestRedriveRefusesWhatIsNotACommandAndDiscardRemovesIt(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ns := namespace(t)
		b := connect(t, url, ns, true, nil)
		p := bus.Partition("acme", "m-7", b.Partitions())
		ctx := context.Background()
		for _, raw := range []string{`not json{`, `{"payload":{}}`} {
			if _, err := b.js.Publish(ctx, b.commandSubject(p), []byte(raw)); err != nil {
				t.Fatal(err)
			}
		}
		consume(t, b, p, 10, newRecorder(nil).handle)
		var dead []DeadLetter
		eventually(t, "two dead letters", func() bool {
			dead, _ = b.DeadLetters(ctx, 10)
			return len(dead) == 2
		})

		tool := connect(t, url, ns, false, func(c *Config) { c.UseStreams = true })
		for _, dl := range dead {
			_, _, err := tool.Redrive(ctx, dl.Seq)
			if !errors.Is(err, ErrNotACommand) || !strings.Contains(err.Error(), "not a command") ||
				!strings.Contains(err.Error(), "discard it") {
				t.Fatalf("redrive of %q: %v, want a refusal saying to discard it", dl.Raw, err)
			}
		}
		if still, _ := b.DeadLetters(ctx, 10); len(still) != 2 {
			t.Fatalf("dead letters after refused re-drives: %d, want 2", len(still))
		}
		got, err := tool.Discard(ctx, dead[0].Seq)
		if err != nil || string(got.Raw) != `not json{` {
			t.Fatalf("discard: %+v, %v", got, err)
		}
		if _, err := tool.Discard(ctx, dead[0].Seq); !errors.Is(err, ErrNoDeadLetter) {
			t.Fatalf("second discard: %v, want ErrNoDeadLetter", err)
		}
		if _, _, err := tool.Redrive(ctx, 999); !errors.Is(err, ErrNoDeadLetter) {
			t.Fatalf("redrive of a sequence never written: %v, want ErrNoDeadLetter", err)
		}
		left, err := b.DeadLetters(ctx, 10)
		if err != nil || len(left) != 1 || left[0].Seq != dead[1].Seq {
			t.Fatalf("dead letters left: %+v (%v), want the second alone", left, err)
		}

		// A tool pointed at a namespace no platform made fails, creating nothing.
		cfg := Config{URL: url, Namespace: namespace(t), UseStreams: true}
		if _, err := Connect(ctx, cfg, nil); err == nil ||
			!strings.Contains(err.Error(), "stream "+cfg.Namespace+"_"+bus.CommandStream) {
			t.Fatalf("UseStreams without streams: %v, want an error", err)
		}
		if _, err := b.js.Stream(ctx, cfg.Namespace+"_"+bus.CommandStream); err == nil {
			t.Fatal("UseStreams created a stream")
		}
	})
}
