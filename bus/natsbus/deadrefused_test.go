package natsbus

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
)

// A command the ledger refused for good is dead-lettered apart from those
// that failed to apply: counted as refused, listed as refused, not taken
// for a set-aside command by status lookups (its stored refusal answers),
// and discarded without a mark.
func TestDeadLettersWaitingTellsRefusalsFromFailures(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		b := connect(t, url, namespace(t), true, nil)
		ctx := context.Background()
		p := bus.Partition("acme", "m-r", b.Partitions())
		letter := func(txn string, seq uint64) *Delivery {
			cmd := command("m-r", txn, 1)
			raw, err := json.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			return &Delivery{Command: cmd, Partition: p, Seq: seq, Raw: raw}
		}
		if err := b.DeadLetterRefused(ctx, letter("r-1", 1), "not_found: member"); err != nil {
			t.Fatal(err)
		}
		if err := b.DeadLetterRefused(ctx, letter("r-2", 2), "invalid: points"); err != nil {
			t.Fatal(err)
		}
		if err := b.DeadLetter(ctx, letter("f-1", 3), "max deliveries: boom"); err != nil {
			t.Fatal(err)
		}
		w, err := b.DeadLettersWaiting(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w != (Waiting{Failed: 1, Refused: 2}) {
			t.Fatalf("waiting = %+v, want 1 failed, 2 refused", w)
		}
		seqs := map[string]uint64{}
		for _, dl := range deadLetters(t, b) {
			seqs[dl.TxnID] = dl.Seq
			if want := dl.TxnID != "f-1"; dl.Refused != want {
				t.Errorf("%s listed with Refused %v, want %v", dl.TxnID, dl.Refused, want)
			}
		}
		if len(seqs) != 3 {
			t.Fatalf("listed %v, want three letters", seqs)
		}
		if dead, err := b.DeadLettered(ctx, "pos", "r-1"); err != nil || dead {
			t.Errorf("DeadLettered(r-1) = %v, %v; want false: the ledger's refusal answers",
				dead, err)
		}
		if dead, err := b.DeadLettered(ctx, "pos", "f-1"); err != nil || !dead {
			t.Errorf("DeadLettered(f-1) = %v, %v; want true", dead, err)
		}

		// Discarding a refusal leaves no mark; discarding the failure does.
		if _, err := b.Discard(ctx, seqs["r-1"]); err != nil {
			t.Fatal(err)
		}
		if got := storedDead(t, b); got != 2 {
			t.Errorf("after discarding r-1 the stream holds %d messages, want 2", got)
		}
		if _, err := b.Discard(ctx, seqs["f-1"]); err != nil {
			t.Fatal(err)
		}
		if got := storedDead(t, b); got != 2 {
			t.Errorf("after discarding f-1 the stream holds %d messages, want 2 (r-2, a mark)",
				got)
		}
		if w, err := b.DeadLettersWaiting(ctx); err != nil || w != (Waiting{Refused: 1}) {
			t.Errorf("waiting = %+v, %v; want 1 refused", w, err)
		}
	})
}
