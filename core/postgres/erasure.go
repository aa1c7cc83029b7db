package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Where a member's personal data lives, and what erasure does with it:
//
//   - members.customer_ref becomes the pseudonym; channel and attributes
//     are cleared; erased_at, erased_by and erase_reason record the request.
//   - bulk_lines.member (lines of uploaded files naming the member) becomes
//     the pseudonym; points, reasons and outcomes stay.
//   - conversions.member_ref becomes the pseudonym and account_id (the
//     member's account in the other program) is blanked; points and amounts
//     stay.
//   - outbox events not yet relayed carry member_ref: it becomes the
//     pseudonym. Events already relayed live on in ClickHouse, where
//     reporting.EraseMember rewrites them (see that function).
//   - commands.result of the member's enrolment and of the commands that
//     posted to it name it by reference and channel: both are rewritten.
//     Refusals and zero-point outcomes stored for it are not found this way
//     (commands carry no member column) and keep the old reference.
//
// Postings, posting_lots, lots, holds, reward_orders and member_tiers name
// the member by its id only and are left untouched; postings.channel is the
// channel of a transaction, not of the person, and postings are append-only.

const eraseLockSQL = `SELECT id, customer_ref, erased_at, erased_by, erase_reason,
		available, pending, held
	FROM members WHERE program_id = $1 AND customer_ref = $2 FOR UPDATE`

const eraseMemberSQL = `UPDATE members SET customer_ref = $2, channel = '',
		attributes = '{}', erased_at = $3, erased_by = $4, erase_reason = $5, updated_at = $3
	WHERE id = $1`

const eraseBulkSQL = `UPDATE bulk_lines l SET member = $3
	FROM bulk_batches b WHERE b.id = l.batch_id AND b.program = $1 AND l.member = $2`

const eraseConversionsSQL = `UPDATE conversions SET member_ref = $2, account_id = '',
		dispute = CASE WHEN dispute = '' THEN '' ELSE $3 END,
		dispute_note = CASE WHEN dispute_note = '' THEN '' ELSE '(erased with the member)' END
	WHERE member_id = $1`

const eraseOutboxSQL = `UPDATE outbox
	SET body = jsonb_set(body::jsonb, '{member_ref}', to_jsonb($2::text))::json
	WHERE body->>'member' = $1 AND body::jsonb ? 'member_ref'`

// The stored results of the member's commands: its enrolment (data.id is
// the member) and every command that posted to it (postings.command_id).
// A ledger outcome names it in data.member, an enrolment in
// data.customer_ref, with its channel.
const eraseCommandsSQL = `UPDATE commands SET result = jsonb_set(jsonb_set(result,
		'{data,member}', to_jsonb($2::text), false),
		'{data,customer_ref}', to_jsonb($2::text), false)
	  #- '{data,channel}'
	WHERE jsonb_typeof(result->'data') = 'object'
	  AND (result->'data'->>'id' = $1::text
	    OR command_id IN (SELECT command_id FROM postings
	      WHERE member_id = $1::uuid AND command_id IS NOT NULL))`

const openHoldsSQL = `SELECT count(*) FROM holds WHERE member_id = $1 AND status = 'open'`

// memberActions is the condition on bo_audit's action of the entries about
// a member (target program/reference), as opposed to a parameter's
// (program/code).
const memberActions = `(action LIKE 'adjustment.%' OR action LIKE 'close.%'
	OR action LIKE 'member.%'
	OR action IN ('posting.reversed', 'points.transferred', 'conversion.resolved',
		'conversion.dispute_settled'))`

// mergedRef is a member merged into another, directly or through others.
type mergedRef struct{ id, ref string }

// mergedInto lists the members merged into id, directly or through others,
// not erased yet.
func (t *txn) mergedInto(ctx context.Context, id string) ([]mergedRef, error) {
	rows, err := t.tx.Query(ctx, `WITH RECURSIVE merged(id, ref, erased) AS (
			SELECT id, customer_ref, erased_at IS NOT NULL FROM members WHERE merged_into = $1
			UNION ALL
			SELECT m.id, m.customer_ref, m.erased_at IS NOT NULL
			FROM members m JOIN merged x ON m.merged_into = x.id)
		SELECT id::text, ref FROM merged WHERE NOT erased ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("find merged members: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (mergedRef, error) {
		var m mergedRef
		err := r.Scan(&m.id, &m.ref)
		return m, err
	})
}

// eraseOne removes the personal data of one member, known as ref, putting
// pseudonym in its place: its row, its bulk lines, conversions, events not
// yet relayed, stored command results, audit entries and adjustments
// waiting for approval; it writes the erasure's audit entry and queues the
// event that makes the reporting sink rewrite the member's events.
func (t *txn) eraseOne(ctx context.Context, prog *program, cmd *bus.Command, id, ref,
	pseudonym, actor, reason string, at time.Time) error {
	steps := []struct {
		what string
		sql  string
		args []any
	}{
		{"member", eraseMemberSQL, []any{id, pseudonym, at, actor, reason}},
		{"bulk lines", eraseBulkSQL, []any{prog.Code, ref, pseudonym}},
		{"conversions", eraseConversionsSQL, []any{id, pseudonym, ErasedDispute}},
		{"outbox", eraseOutboxSQL, []any{id, pseudonym}},
		{"command results", eraseCommandsSQL, []any{id, pseudonym}},
		// The audit log names a member's entries program/reference (the
		// back office's adjustments, REST moves): they keep the entries
		// and name the pseudonym. Parameters (a reward, a rule, a partner)
		// are named program/code too, and a code can be a reference: only
		// the entries of members' actions are renamed.
		{"audit log", `UPDATE bo_audit SET target = $2 WHERE target = $1
			AND ` + memberActions, []any{prog.Code + "/" + ref, prog.Code + "/" + pseudonym}},
		// Other members' entries name it in their request: the member a
		// transfer went to, the member a merge went into (each found by its
		// own index, migration 0031).
		{"audit transfers", `UPDATE bo_audit SET after = jsonb_set(after, '{request,to}',
				to_jsonb($3::text))
			WHERE after->'request' ? 'to' AND after->'request'->>'to' = $2
			  AND left(target, length($1) + 1) = $1 || '/' AND ` + memberActions,
			[]any{prog.Code, ref, pseudonym}},
		{"audit merges", `UPDATE bo_audit SET after = jsonb_set(after, '{request,into}',
				to_jsonb($3::text))
			WHERE after->'request' ? 'into' AND after->'request'->>'into' = $2
			  AND left(target, length($1) + 1) = $1 || '/' AND ` + memberActions,
			[]any{prog.Code, ref, pseudonym}},
		// The back office's re-drives and discards of dead letters name
		// the command's program and member.
		{"audit dead letters", `UPDATE bo_audit SET before = jsonb_set(before, '{member}',
				to_jsonb($3::text))
			WHERE action LIKE 'deadletter.%' AND before->>'member' = $2
			  AND before->>'program' = $1`, []any{prog.Code, ref, pseudonym}},
		// Adjustments waiting for a second person name the member too; one
		// approved after the erasure applies to the pseudonym.
		{"pending adjustments", `UPDATE bo_pending_adjustments SET member = $3
			WHERE program = $1 AND member = $2`, []any{prog.Code, ref, pseudonym}},
		// So do the adjustments one person made alone (the day's count).
		{"adjustments made alone", `UPDATE bo_adjusted_alone SET member = $3
			WHERE program = $1 AND member = $2`, []any{prog.Code, ref, pseudonym}},
		// The erasure itself, for the auditors: who asked, why, and when.
		{"audit entry", insertAudit, []any{t.now, auditActor(cmd), "member.erased",
			prog.Code + "/" + pseudonym, nil, map[string]any{"reason": reason,
				"erased_at": at}}},
	}
	for _, s := range steps {
		if _, err := t.tx.Exec(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("erase %s: %w", s.what, err)
		}
	}
	// The reporting sink rewrites the member's stored events when this
	// event reaches it. It is queued after the outbox step on purpose: it
	// already carries the pseudonym, never the old reference.
	t.events = append(t.events, bus.Event{ID: uuid.Must(uuid.NewV7()).String(),
		Kind: core.EventMemberErased, Program: prog.Code, Member: id,
		MemberRef: pseudonym, OccurredAt: at, RecordedAt: t.now,
		Source: cmd.Source, TxnID: cmd.TxnID, Channel: cmd.Channel})
	return nil
}

// erase removes a member's personal data and keeps its ledger. It refuses
// with Conflict while the member has open holds (a partner could still
// capture or release them under the old reference) and with NotFound when
// the reference is unknown. Erasing an erased member, by its pseudonym,
// answers the first erasure again and changes nothing.
func (t *txn) erase(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Erase
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	in.Reason = strings.TrimSpace(in.Reason)
	if err := core.CheckReason(in.Reason, true); err != nil {
		return nil, err
	}
	actor := strings.TrimSpace(cmd.Actor)
	if actor == "" {
		return nil, core.Errorf(core.Invalid, "actor", "must name who asked for the erasure")
	}

	// The member itself, not a merge survivor: erasure is of this person.
	var (
		e        core.Erasure
		ref      string
		erasedAt *time.Time
		b        [3]int64
	)
	err := t.tx.QueryRow(ctx, eraseLockSQL, prog.ID, cmd.Member).Scan(&e.MemberID, &ref,
		&erasedAt, &e.ErasedBy, &e.Reason, &b[0], &b[1], &b[2])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "member", "no member %q in this program",
			cmd.Member)
	}
	if err != nil {
		return nil, fmt.Errorf("lock member: %w", err)
	}
	e.Pseudonym = core.Pseudonym(e.MemberID)
	e.Balance = core.Balance{Available: core.Points(b[0]), Pending: core.Points(b[1]),
		Held: core.Points(b[2])}
	if erasedAt != nil {
		e.ErasedAt = erasedAt.UTC()
		// The accounts erased with it, as the first erasure listed them.
		rows, err := t.tx.Query(ctx, `WITH RECURSIVE merged(id, erased_at) AS (
				SELECT id, erased_at FROM members WHERE merged_into = $1
				UNION ALL
				SELECT m.id, m.erased_at FROM members m JOIN merged x ON m.merged_into = x.id)
			SELECT id::text FROM merged WHERE erased_at = $2 ORDER BY id`, e.MemberID, *erasedAt)
		if err != nil {
			return nil, fmt.Errorf("find members erased with it: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("find members erased with it: %w", err)
		}
		for _, id := range ids {
			e.Merged = append(e.Merged, core.Pseudonym(id))
		}
		return e, nil
	}

	var open int64
	if err := t.tx.QueryRow(ctx, openHoldsSQL, e.MemberID).Scan(&open); err != nil {
		return nil, fmt.Errorf("count open holds: %w", err)
	}
	if open > 0 {
		return nil, core.Errorf(core.Conflict, "member",
			"member has %d open holds: capture or release them first", open)
	}

	e.ErasedAt, e.ErasedBy, e.Reason = t.now.UTC(), actor, in.Reason
	if err := t.eraseOne(ctx, prog, cmd, e.MemberID, ref, e.Pseudonym, actor, in.Reason,
		e.ErasedAt); err != nil {
		return nil, err
	}
	// The accounts merged into this one are the same person's (a merge
	// joins a customer's two accounts), and their references still lead
	// here: they are erased with it, each under a pseudonym of its own.
	merged, err := t.mergedInto(ctx, e.MemberID)
	if err != nil {
		return nil, err
	}
	for _, mm := range merged {
		e.Merged = append(e.Merged, core.Pseudonym(mm.id))
		if err := t.eraseOne(ctx, prog, cmd, mm.id, mm.ref, core.Pseudonym(mm.id), actor,
			in.Reason, e.ErasedAt); err != nil {
			return nil, err
		}
	}
	return e, nil
}
