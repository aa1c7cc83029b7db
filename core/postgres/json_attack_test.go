package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Set-based accruals and credits with a channel and a reference that need
// escaping: the answers the ledger encoded are encoding/json's, the stored
// results decode to them, and the events in the outbox name the channel
// and the member reference as sent.
func TestSetBasedEscapesWhatItWrites(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	ref := "a&b'c(d)=e;f"
	f.enroll(ref)
	channel := "w\"e\\b <i>&amp;\u2028\u2029\x01\t\x7f é 😀"
	var cmds []bus.Command
	for _, c := range []bus.Command{
		f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: "buy", Amount: "3"}),
		// A reason may not hold control characters but tabs and line
		// breaks (core.CheckReason); the channel carries the others.
		f.command(core.KindCredit, ref, f.txn(), core.Credit{Points: 4,
			Reason: strings.NewReplacer("\x01", "", "\x7f", "").Replace(channel)}),
	} {
		c.Channel = channel
		c.Seal()
		cmds = append(cmds, c)
	}
	out, err := f.l.ApplyBatch(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, a := range out {
		if a.Result.Status != bus.StatusOK || len(a.Encoded) == 0 {
			t.Fatalf("command %d: %+v, encoded %q (want the set-based path)", i, a.Result,
				a.Encoded)
		}
		if want, _ := json.Marshal(a.Result); string(want) != string(a.Encoded) {
			t.Fatalf("command %d encoded\n%s\nresult\n%s", i, a.Encoded, want)
		}
		var body []byte
		if err := f.l.pool.QueryRow(ctx, `SELECT result FROM commands WHERE source = $1
			AND txn_id = $2`, cmds[i].Source, cmds[i].TxnID).Scan(&body); err != nil {
			t.Fatal(err)
		}
		var stored bus.Result
		if err := json.Unmarshal(body, &stored); err != nil {
			t.Fatal(err)
		}
		if !sameJSON(stored.Data, a.Result.Data) || stored.TxnID != cmds[i].TxnID {
			t.Fatalf("command %d stored %s, answered %s", i, body, a.Encoded)
		}
	}
	rows, err := f.l.pool.Query(ctx, `SELECT body FROM outbox WHERE body->>'txn_id' = ANY($1)`,
		[]string{cmds[0].TxnID, cmds[1].TxnID})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		var ev bus.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Channel != channel || ev.MemberRef != ref {
			t.Fatalf("event channel %q member_ref %q, want %q %q", ev.Channel, ev.MemberRef,
				channel, ref)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 2 {
		t.Fatalf("%d events (%v), want 2", n, err)
	}
	f.check()
}
