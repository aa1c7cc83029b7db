package reporting

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The ledger's member.erase rewrites the member's reference in PostgreSQL
// and in events it has not relayed yet; the copies already in ledger_events
// are rewritten here, with a ClickHouse mutation (ALTER TABLE ... UPDATE,
// which ClickHouse 18.16 runs in the background, part by part, and keeps
// across restarts once the ALTER returned). Only member_ref changes: points,
// kinds, dates and every column of flows_hourly stay, and a mutation does
// not run the materialized view, so every report total is the same before
// and after.
//
// The reporting sink does it on its own when the ledger's member_erased
// event reaches it (HandleErasures); an operator can still call EraseMember.

// KindMemberErased is the kind of the event the ledger publishes when it
// erases a member: Member is the member's id, MemberRef its pseudonym
// (core.Pseudonym), no points and no posting, so that no report counts it.
const KindMemberErased = core.EventMemberErased

const eraseMemberSQL = `ALTER TABLE ledger_events UPDATE member_ref = ?
	WHERE program = ? AND member = ? AND member_ref != ?`

const pendingMutationsSQL = `SELECT count() FROM system.mutations
	WHERE database = currentDatabase() AND table = 'ledger_events' AND is_done = 0`

// EraseMember replaces the reference of the member with id memberID in the
// stored events of program by its pseudonym, and waits until ClickHouse has
// rewritten every part or ctx ends.
func EraseMember(ctx context.Context, conn driver.Conn, program, memberID string) error {
	if err := startErasure(ctx, conn, program, memberID); err != nil {
		return err
	}
	return waitMutations(ctx, conn)
}

// startErasure asks ClickHouse to rewrite the member's reference; it returns
// once the mutation is recorded, before it ran.
func startErasure(ctx context.Context, conn driver.Conn, program, memberID string) error {
	pseudo := core.Pseudonym(memberID)
	if err := conn.Exec(ctx, eraseMemberSQL, pseudo, program, memberID, pseudo); err != nil {
		return fmt.Errorf("erase member in ledger_events: %w", err)
	}
	return nil
}

// waitMutations waits until no mutation of ledger_events is pending.
func waitMutations(ctx context.Context, conn driver.Conn) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, pendingMutationsSQL).Scan(&pending); err != nil {
			return fmt.Errorf("read mutations: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the erasure mutation: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// RecordErasures notes, in erased_members, the members that the
// member_erased events among evs erase. Call it before storing evs.
func RecordErasures(ctx context.Context, conn driver.Conn, evs []bus.Event) error {
	var erased []bus.Event
	for _, ev := range evs {
		if ev.Kind == KindMemberErased && ev.Member != "" {
			erased = append(erased, ev)
		}
	}
	if len(erased) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx,
		`INSERT INTO erased_members (program, member, erased_at)`)
	if err != nil {
		return fmt.Errorf("record erasures: %w", err)
	}
	defer abortUnsent(batch)
	for _, ev := range erased {
		if err := batch.Append(ev.Program, ev.Member, ev.OccurredAt.UTC()); err != nil {
			return fmt.Errorf("record erasure of %s: %w", ev.Member, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record erasures: %w", err)
	}
	return nil
}

// HandleErasures starts the rewriting of the stored events of every member
// of evs, stored just before, that is erased (RecordErasures saw its event,
// in evs or earlier) and that evs erase or name with a reference other than
// the pseudonym. It returns the erased members, by program, without
// waiting for ClickHouse to rewrite the parts (EraseMember waits).
//
// Why no stored event keeps an old reference: a sink records an erasure
// before it starts the mutation, and stores a batch before it looks for
// erased members in it. So either this lookup sees the erasure, and the
// mutation started here comes after the batch was stored, or the erasure was
// recorded after the lookup, so after the batch was stored, and the
// mutation of whoever recorded it covers the batch's rows. An event relayed
// after the erasure carries the pseudonym already (the ledger rewrites its
// outbox).
func HandleErasures(ctx context.Context, conn driver.Conn,
	evs []bus.Event) (map[string][]string, error) {
	type key struct{ program, member string }
	stale := map[key]bool{}
	var keys []clickhouse.GroupSet
	for _, ev := range evs {
		k := key{ev.Program, ev.Member}
		if ev.Member == "" {
			continue
		}
		renamed := ev.Kind != KindMemberErased &&
			(ev.MemberRef == "" || ev.MemberRef == core.Pseudonym(ev.Member))
		if _, ok := stale[k]; !ok {
			keys = append(keys, clickhouse.GroupSet{Value: []any{k.program, k.member}})
			stale[k] = false
		}
		stale[k] = stale[k] || !renamed
	}
	out := map[string][]string{}
	for start := 0; start < len(keys); start += lookupChunk {
		chunk := keys[start:min(start+lookupChunk, len(keys))]
		rows, err := conn.Query(ctx, `SELECT DISTINCT program, member FROM erased_members
			WHERE (program, member) IN (?)`, chunk)
		if err != nil {
			return nil, fmt.Errorf("look up erased members: %w", err)
		}
		var erased []key
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.program, &k.member); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up erased members: %w", err)
			}
			erased = append(erased, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("look up erased members: %w", err)
		}
		for _, k := range erased {
			if !stale[k] {
				continue
			}
			if err := startErasure(ctx, conn, k.program, k.member); err != nil {
				return nil, err
			}
			out[k.program] = append(out[k.program], k.member)
		}
	}
	return out, nil
}
