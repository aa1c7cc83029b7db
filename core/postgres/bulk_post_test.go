package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// bulkTwin is a ledger on a fresh database of its own with a settable clock.
type bulkTwin struct {
	t   *testing.T
	l   *Ledger
	now time.Time
}

func newBulkTwin(t *testing.T) *bulkTwin {
	t.Helper()
	w := &bulkTwin{t: t, l: isolatedLedger(t)}
	w.l.Clock = func() time.Time { return w.now }
	return w
}

// bulkCmd is a command as a file line or a setup step would send it.
func bulkCmd(kind, program, member, txn string, payload any, at time.Time) bus.Command {
	body, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	c := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: "file:" + program,
		TxnID: txn, Program: program, Member: member, Actor: "batch:b1", Channel: "file",
		Payload: body, OccurredAt: at}
	c.Seal()
	return c
}

// bulkScenario is a ledger history made of commands: a setup applied
// through the command path, then loads to compare.
type bulkScenario struct {
	setupAt time.Time
	setup   []bus.Command
	now     time.Time
	loads   [][]bus.Command
}

func makeBulkScenario(seed uint64) *bulkScenario {
	s := &bulkScenario{setupAt: time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC),
		now: time.Date(2026, 6, 15, 16, 0, 0, 0, time.UTC)}
	rng := rand.New(rand.NewPCG(seed, 7))
	at := s.setupAt
	add := func(c bus.Command) { s.setup = append(s.setup, c) }
	add(bulkCmd(core.KindProgramUpsert, "p1", "", "prog-p1", map[string]any{"name": "One",
		"time_zone": "America/Santiago", "expiry_unit": "months", "expiry_length": 12,
		"expiry_round": "month"}, at))
	add(bulkCmd(core.KindProgramUpsert, "p2", "", "prog-p2", map[string]any{"name": "Two",
		"time_zone": "America/Santiago", "pending_days": 30}, at))
	for i := 0; i < 12; i++ {
		add(bulkCmd(core.KindEnroll, "p1", fmt.Sprintf("a%d", i), fmt.Sprintf("e-a%d", i),
			core.Enroll{}, at))
	}
	for i := 0; i < 4; i++ {
		add(bulkCmd(core.KindEnroll, "p2", fmt.Sprintf("b%d", i), fmt.Sprintf("e-b%d", i),
			core.Enroll{}, at))
	}
	soon := time.Date(2026, 5, 1, 4, 0, 0, 0, time.UTC)
	sep := time.Date(2026, 9, 30, 3, 0, 0, 0, time.UTC)
	for i := 0; i < 12; i++ {
		ref := fmt.Sprintf("a%d", i)
		in := core.Credit{Points: core.Points(100 + 10*i), Reason: "opening"}
		if i%2 == 0 {
			in.ExpiresAt = &sep
		}
		add(bulkCmd(core.KindCredit, "p1", ref, "s-"+ref, in, at.Add(-time.Duration(i)*time.Hour)))
	}
	// a6 has many small lots after a large one: a debit that reaches past
	// the first lots read.
	for k := 0; k < 10; k++ {
		add(bulkCmd(core.KindCredit, "p1", "a6", fmt.Sprintf("s-a6-%d", k),
			core.Credit{Points: 5, Reason: "small"}, at))
	}
	// a7 has points past their expiry that no sweep took yet.
	add(bulkCmd(core.KindCredit, "p1", "a7", "s-a7-soon", core.Credit{Points: 40,
		Reason: "short", ExpiresAt: &soon}, at))
	add(bulkCmd(core.KindClose, "p1", "a9", "close-a9", core.StatusChange{}, at))
	// a12 was merged into a4: its lines apply to a4.
	add(bulkCmd(core.KindEnroll, "p1", "a12", "e-a12", core.Enroll{}, at))
	add(bulkCmd(core.KindCredit, "p1", "a12", "s-a12", core.Credit{Points: 33,
		Reason: "opening"}, at))
	add(bulkCmd(core.KindMerge, "p1", "a12", "merge-a12", core.Merge{Into: "a4"}, at))
	add(bulkCmd(core.KindSuspend, "p1", "a10", "susp-a10", core.StatusChange{}, at))
	add(bulkCmd(core.KindAuthorize, "p1", "a11", "hold-a11", core.Authorize{Points: 50,
		TTLSeconds: 3600}, at))
	add(bulkCmd(core.KindCredit, "p2", "b0", "s-b0", core.Credit{Points: 70, Reason: "old"},
		at.Add(-60*24*time.Hour)))

	// Loads: random credits and debits over the members, and the cases the
	// set-based path hands over to the command path.
	refs := []string{"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10",
		"a11", "ghost", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a8"}
	aug := time.Date(2026, 8, 31, 4, 0, 0, 0, time.UTC)
	load := []bus.Command{bulkCmd(core.KindAdjust, "p1", "a6", "big-a6",
		core.Adjust{Points: -200, Reason: "take"}, s.now)}
	for n := 0; n < 120; n++ {
		ref := refs[rng.IntN(len(refs))]
		when := s.now.Add(-time.Duration(1+rng.IntN(300)) * time.Hour)
		txn := fmt.Sprintf("l-%d", n)
		if rng.IntN(3) == 0 {
			load = append(load, bulkCmd(core.KindAdjust, "p1", ref, txn,
				core.Adjust{Points: -core.Points(1 + rng.IntN(150)), Reason: "take"}, when))
			continue
		}
		in := core.Credit{Points: core.Points(1 + rng.IntN(200)), Reason: "load"}
		if rng.IntN(4) == 0 {
			in.ExpiresAt = &aug
		}
		load = append(load, bulkCmd(core.KindCredit, "p1", ref, txn, in, when))
	}
	past := time.Date(2026, 6, 10, 4, 0, 0, 0, time.UTC)
	load = append(load,
		s.setup[20], // a replay of the setup credit of a2
		bulkCmd(core.KindCredit, "p1", "a3", "s-a3", core.Credit{Points: 1, Reason: "x"},
			s.now.Add(-time.Hour)), // the same transaction id for another request
		bulkCmd(core.KindCredit, "p1", "a4", "late", core.Credit{Points: 30, Reason: "late",
			ExpiresAt: &past}, s.now.Add(-30*24*time.Hour)), // expires at once
		bulkCmd(core.KindCredit, "p1", "a5", "l-5", core.Credit{Points: 5, Reason: "dup"},
			s.now.Add(-time.Hour)), // repeats an id of this load
		bulkCmd(core.KindCredit, "p1", "a12", "to-a12", core.Credit{Points: 8,
			Reason: "merged"}, s.now.Add(-time.Hour)), // goes to a4
		bulkCmd(core.KindAdjust, "p1", "a12", "from-a12", core.Adjust{Points: -20,
			Reason: "merged"}, s.now.Add(-time.Hour)),
	)
	for i := 0; i < len(load); i += 25 {
		s.loads = append(s.loads, load[i:min(i+25, len(load))])
	}
	// A credit through the merged a12, then a debit of a4 that needs it.
	s.loads = append(s.loads, []bus.Command{
		bulkCmd(core.KindCredit, "p1", "a12", "c-a12", core.Credit{Points: 1_000_000,
			Reason: "merged"}, s.now.Add(-time.Hour)),
		bulkCmd(core.KindAdjust, "p1", "a4", "d-a4", core.Adjust{Points: -900_000,
			Reason: "take"}, s.now)})
	// Pending credits and debits in the second program, and a chunk of both.
	var p2 []bus.Command
	for n := 0; n < 20; n++ {
		ref := fmt.Sprintf("b%d", rng.IntN(4))
		when := s.now.Add(-time.Duration(1+rng.IntN(2000)) * time.Hour)
		if n%4 == 3 {
			p2 = append(p2, bulkCmd(core.KindAdjust, "p2", ref, fmt.Sprintf("m-%d", n),
				core.Adjust{Points: -core.Points(1 + rng.IntN(60)), Reason: "take"}, when))
			continue
		}
		p2 = append(p2, bulkCmd(core.KindCredit, "p2", ref, fmt.Sprintf("m-%d", n),
			core.Credit{Points: core.Points(1 + rng.IntN(90)), Reason: "load"}, when))
	}
	s.loads = append(s.loads, p2[:10], append(slices.Clone(p2[10:]), load[:3]...))
	return s
}

// run applies the scenario's setup, then its loads with apply, and returns
// the results of the loads.
func (w *bulkTwin) run(s *bulkScenario,
	apply func(context.Context, []bus.Command) ([]Applied, error)) [][]Applied {
	w.t.Helper()
	ctx := context.Background()
	w.now = s.setupAt
	for _, c := range s.setup {
		out, err := w.l.ApplyBatch(ctx, []bus.Command{c})
		if err != nil || out[0].Result.Status != bus.StatusOK {
			w.t.Fatalf("setup %s %s: %v %+v", c.Kind, c.TxnID, err, out)
		}
	}
	w.now = s.now
	var res [][]Applied
	for _, load := range s.loads {
		out, err := apply(ctx, load)
		if err != nil {
			w.t.Fatalf("load: %v", err)
		}
		res = append(res, out)
	}
	v, err := w.l.Check(ctx)
	if err != nil || len(v) > 0 {
		w.t.Fatalf("ledger check: %v %+v", err, v)
	}
	return res
}

// snapshot writes the ledger's state as sorted lines, with posting and lot
// ids replaced by the member's reference and their rank among its own.
func (w *bulkTwin) snapshot() (lines []string, names map[string]string) {
	w.t.Helper()
	ctx := context.Background()
	names = map[string]string{}
	query := func(sql string, scan func(cols []any) string) {
		rows, err := w.l.Pool().Query(ctx, sql)
		if err != nil {
			w.t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				w.t.Fatal(err)
			}
			if s := scan(vals); s != "" {
				lines = append(lines, s)
			}
		}
		if err := rows.Err(); err != nil {
			w.t.Fatal(err)
		}
	}
	query(`SELECT 'posting', p.id, m.customer_ref || '#p' || row_number() OVER (
			PARTITION BY p.member_id ORDER BY p.id) FROM postings p
		JOIN members m ON m.id = p.member_id
		UNION ALL SELECT 'lot', l.id, m.customer_ref || '#l' || row_number() OVER (
			PARTITION BY l.member_id ORDER BY l.id) FROM lots l
		JOIN members m ON m.id = l.member_id`, func(v []any) string {
		names[fmt.Sprint(v[0], v[1])] = v[2].(string)
		return ""
	})
	name := func(kind string, id any) string { return names[fmt.Sprint(kind, id)] }
	query(`SELECT customer_ref, status, available, pending, held FROM members`,
		func(v []any) string { return fmt.Sprint("member ", v) })
	query(`SELECT id, kind, points, held_delta, pending_delta, source, txn_id, command_id,
			reason, rule_version, actor, partner, channel, hold_id IS NOT NULL, occurred_at,
			recorded_at FROM postings`, func(v []any) string {
		return fmt.Sprint("posting ", name("posting", v[0]), v[1:])
	})
	query(`SELECT id, posting_id, earned_at, spendable_from, expires_at, pending, original,
			remaining, held FROM lots`, func(v []any) string {
		return fmt.Sprint("lot ", name("lot", v[0]), " ", name("posting", v[1]), v[2:])
	})
	query(`SELECT posting_id, lot_id, points, held FROM posting_lots`, func(v []any) string {
		return fmt.Sprint("move ", name("posting", v[0]), " ", name("lot", v[1]), v[2:])
	})
	query(`SELECT source, txn_id, command_id, kind, hash, status, result::text FROM commands`,
		func(v []any) string {
			return fmt.Sprint("command ", v[:6], " ", normResult(names, []byte(v[6].(string))))
		})
	query(`SELECT subject, body::jsonb::text FROM outbox`, func(v []any) string {
		var ev bus.Event
		if err := json.Unmarshal([]byte(v[1].(string)), &ev); err != nil {
			w.t.Fatal(err)
		}
		pid := name("posting", ev.PostingID)
		ev.ID, ev.PostingID, ev.Member = "", 0, ""
		body, _ := json.Marshal(ev)
		return fmt.Sprint("event ", v[0], " ", pid, " ", string(body))
	})
	slices.Sort(lines)
	return lines, names
}

// normResult rewrites the posting and lot ids of a stored result.
func normResult(names map[string]string, body []byte) string {
	var res bus.Result
	if err := json.Unmarshal(body, &res); err != nil {
		return "unreadable " + string(body)
	}
	var o core.Outcome
	data := ""
	if len(res.Data) > 0 && json.Unmarshal(res.Data, &o) == nil {
		var ids, lots []string
		for _, id := range o.PostingIDs {
			ids = append(ids, names[fmt.Sprint("posting", id)])
		}
		for _, mv := range o.Lots {
			lots = append(lots, fmt.Sprintf("%s:%d/%d", names[fmt.Sprint("lot", mv.LotID)],
				mv.Points, mv.Held))
		}
		data = fmt.Sprintf("%s %v %d %+v %v %s", o.Member, ids, o.Points, o.Balance, lots,
			o.Status)
	}
	res.Data = nil
	b, _ := json.Marshal(res)
	return string(b) + " " + data
}

// TestBulkMatchesCommandPath applies the same loads through the command
// path and through the set-based path on two fresh databases: every
// result, posting, lot, lot move, balance, stored command and ledger event
// is the same, up to the ids the sequences gave.
func TestBulkMatchesCommandPath(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			s := makeBulkScenario(seed)
			slow, fast := newBulkTwin(t), newBulkTwin(t)
			want := slow.run(s, slow.l.ApplyBatch)
			got := fast.run(s, fast.l.ApplyBulk)
			wantState, wantNames := slow.snapshot()
			gotState, gotNames := fast.snapshot()

			kinds := map[string]int{}
			for i := range want {
				for j := range want[i] {
					w, g := want[i][j].Result, got[i][j].Result
					kinds[w.Status]++
					if w.Error != nil {
						kinds[w.Error.Kind]++
					}
					ws := normResult(wantNames, mustJSON(t, w))
					gs := normResult(gotNames, mustJSON(t, g))
					if ws != gs {
						t.Errorf("load %d command %d (%s):\n got %s\nwant %s", i, j,
							s.loads[i][j].TxnID, gs, ws)
					}
				}
			}
			// The first debit takes from 9 lots, more than the first lots read.
			var big core.Outcome
			if err := json.Unmarshal(got[0][0].Result.Data, &big); err != nil ||
				len(big.Lots) != 9 {
				t.Errorf("big-a6 took from %d lots (%v), want 9", len(big.Lots), err)
			}
			// The scenario reaches the cases it is about.
			for _, k := range []string{"ok", "rejected", "insufficient", "conflict",
				"not_found"} {
				if kinds[k] == 0 {
					t.Errorf("no %s result in the scenario: %v", k, kinds)
				}
			}
			if d := diffLines(wantState, gotState); d != "" {
				t.Errorf("ledger state differs (- command path, + set-based):\n%s", d)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diffLines lists the lines only in a (-) or only in b (+).
func diffLines(a, b []string) string {
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	var out []string
	for s, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+s)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+s)
		}
	}
	slices.Sort(out)
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}
