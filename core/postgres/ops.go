package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/plainjson"
)

// decode reads a command payload strictly: unknown fields are refused.
func decode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		field := "payload"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		} else if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
			field = strings.Trim(strings.TrimPrefix(s, "json: unknown field "), `"`)
			return core.Errorf(core.Invalid, field, "unknown field")
		}
		return core.Errorf(core.Invalid, field, "cannot be read: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return core.Errorf(core.Invalid, "payload", "has data after the JSON object")
	}
	return nil
}

// decodeAccrue reads an accrual's payload into in as decode does. The
// payloads Puntos's gateways write (encoding/json's form of core.Accrue:
// its keys in order, empty ones left out, strings without escapes) are read
// without reflection; anything else goes to decode, which gives the answer.
func decodeAccrue(raw []byte, in *core.Accrue) error {
	r := plainjson.NewReader(raw)
	r.Lit(`{"event_type":`)
	in.EventType = r.String()
	if r.Next(`,"amount":`) {
		in.Amount = r.String()
	}
	if r.Next(`,"currency":`) {
		in.Currency = r.String()
	}
	if r.Next(`,"partner":`) {
		in.Partner = r.String()
	}
	r.Lit("}")
	if r.End() {
		return nil
	}
	*in = core.Accrue{}
	return decode(raw, in)
}

func (t *txn) dispatch(ctx context.Context, cmd *bus.Command) (any, error) {
	if cmd.Kind == core.KindProgramUpsert {
		return t.upsertProgram(ctx, cmd)
	}
	prog, err := t.loadProgram(ctx, cmd.Program)
	if err != nil {
		return nil, err
	}
	if !cmd.OccurredAt.IsZero() {
		if err := core.CheckSince1970("occurred_at", cmd.OccurredAt); err != nil {
			return nil, err
		}
	}
	if cmd.Kind == core.KindEnroll {
		return t.enroll(ctx, prog, cmd)
	}
	if strings.HasPrefix(cmd.Kind, core.ExchangePrefix) {
		return t.exchange(ctx, prog, cmd)
	}
	if core.IsRulesKind(cmd.Kind) {
		return t.rulesCmd(ctx, prog, cmd)
	}
	if !core.ValidRef(cmd.Member) {
		return nil, core.Errorf(core.Invalid, "member", "must be "+core.RefRule)
	}
	switch cmd.Kind {
	case core.KindTransfer:
		return t.transfer(ctx, prog, cmd)
	case core.KindMerge:
		return t.merge(ctx, prog, cmd)
	case core.KindExternalUpsert, core.KindConvert, core.KindConversionResolve:
		return t.conversionCmd(ctx, prog, cmd)
	case core.KindErase:
		return t.erase(ctx, prog, cmd)
	}
	m, err := lockMember(ctx, t.tx, prog.ID, cmd.Member)
	if err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case core.KindAccrue:
		return t.accrue(ctx, prog, m, cmd)
	case core.KindCredit:
		return t.creditCmd(ctx, prog, m, cmd)
	}
	if err := t.refresh(ctx, prog, m); err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case core.KindRedeem:
		return t.redeem(ctx, m, cmd)
	case core.KindAuthorize:
		return t.authorize(ctx, prog, m, cmd)
	case core.KindCapture:
		return t.capture(ctx, prog, m, cmd)
	case core.KindRelease:
		return t.releaseCmd(ctx, prog, m, cmd)
	case core.KindReverse:
		return t.reverse(ctx, prog, m, cmd)
	case core.KindAdjust:
		return t.adjust(ctx, prog, m, cmd)
	case core.KindSuspend, core.KindReactivate, core.KindClose:
		return t.setStatus(ctx, prog, m, cmd)
	}
	return nil, core.Errorf(core.Invalid, "kind", "unknown command kind %q", cmd.Kind)
}

func (t *txn) outcome(m *member, points int64) core.Outcome {
	return core.Outcome{Member: m.ref, PostingIDs: t.postings, Points: core.Points(points),
		Balance: m.balance(), Lots: t.lastMoves}
}

func mustBe(m *member, field string, statuses ...string) error {
	for _, s := range statuses {
		if m.status == s {
			return nil
		}
	}
	return core.Errorf(core.Conflict, field, "member %q is %s", m.ref, m.status)
}

func (t *txn) upsertProgram(ctx context.Context, cmd *bus.Command) (any, error) {
	var p core.Program
	if err := decode(cmd.Payload, &p); err != nil {
		return nil, err
	}
	p.Code = cmd.Program
	p.Defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	// Every amount the ledger has read (purchases, bills, refunds, partner
	// settlements) is in the program's currency: once its members have
	// postings, another currency would read them all in another money.
	var was string
	err := t.tx.QueryRow(ctx, `SELECT p.currency FROM programs p
		WHERE p.code = $1 AND p.currency <> $2 AND EXISTS (SELECT 1 FROM members m
			JOIN postings po ON po.member_id = m.id WHERE m.program_id = p.id)
		FOR UPDATE OF p`, p.Code, p.Currency).Scan(&was)
	switch {
	case err == nil:
		return nil, core.Errorf(core.Conflict, "currency", "the program's members have "+
			"postings in %s, so its currency cannot change to %s; send currency %s to keep "+
			"it (a definition without currency asks for %s)", was, p.Currency, was,
			core.DefaultCurrency)
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("read program currency: %w", err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	err = t.tx.QueryRow(ctx, `INSERT INTO programs (id, code, name, time_zone, currency,
			points_per_unit, accrual_rounding, expiry_unit, expiry_length, expiry_round,
			pending_days, negative_balance, hold_ttl_seconds)
		VALUES ($1, $2, $3, $4, $5, $6::numeric, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, time_zone = EXCLUDED.time_zone,
			currency = EXCLUDED.currency, points_per_unit = EXCLUDED.points_per_unit,
			accrual_rounding = EXCLUDED.accrual_rounding, expiry_unit = EXCLUDED.expiry_unit,
			expiry_length = EXCLUDED.expiry_length, expiry_round = EXCLUDED.expiry_round,
			pending_days = EXCLUDED.pending_days, negative_balance = EXCLUDED.negative_balance,
			hold_ttl_seconds = EXCLUDED.hold_ttl_seconds, updated_at = now()
		RETURNING id`, id, p.Code, p.Name, p.TimeZone, p.Currency, p.PointsPerUnit,
		p.AccrualRounding, p.ExpiryUnit, p.ExpiryLength, p.ExpiryRound, p.PendingDays,
		p.NegativeBalance, p.HoldTTLSeconds).Scan(&p.ID)
	if err != nil {
		return nil, fmt.Errorf("upsert program: %w", err)
	}
	// A new rate or rounding is in force from now; events that happened
	// before keep the rate of their day. A program's first rate is in force
	// since ever.
	_, err = t.tx.Exec(ctx, `INSERT INTO program_rates (program_id, valid_from,
			points_per_unit, accrual_rounding)
		SELECT $1, CASE WHEN last.program_id IS NULL
			THEN '0001-01-01 00:00:00+00'::timestamptz ELSE $2::timestamptz END,
			$3::numeric, $4
		FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT program_id, points_per_unit,
				accrual_rounding FROM program_rates WHERE program_id = $1
				ORDER BY valid_from DESC LIMIT 1) last ON true
		WHERE last.program_id IS NULL OR last.points_per_unit <> $3::numeric
			OR last.accrual_rounding <> $4
		ON CONFLICT (program_id, valid_from) DO UPDATE
			SET points_per_unit = EXCLUDED.points_per_unit,
				accrual_rounding = EXCLUDED.accrual_rounding`,
		p.ID, t.now, p.PointsPerUnit, p.AccrualRounding)
	if err != nil {
		return nil, fmt.Errorf("record program rate: %w", err)
	}
	delete(t.programs, p.Code)
	return p, nil
}

func (t *txn) enroll(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Enroll
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if !core.ValidRef(cmd.Member) {
		return nil, core.Errorf(core.Invalid, "customer_ref", "must be "+core.RefRule)
	}
	at := cmd.OccurredAt
	if in.EnrolledAt != nil {
		at = *in.EnrolledAt
		if at.After(t.now.Add(5 * time.Minute)) {
			return nil, core.Errorf(core.Invalid, "enrolled_at", "is in the future")
		}
		if err := core.CheckSince1970("enrolled_at", at); err != nil {
			return nil, err
		}
	}
	if at.IsZero() {
		at = t.now
	}
	m := core.Member{ID: uuid.Must(uuid.NewV7()).String(), Program: prog.Code,
		CustomerRef: cmd.Member, Status: "active", Channel: in.Channel, EnrolledAt: at.UTC()}
	if m.Channel == "" {
		m.Channel = cmd.Channel
	}
	_, err := t.tx.Exec(ctx, `INSERT INTO members (id, program_id, customer_ref, channel,
		enrolled_at) VALUES ($1, $2, $3, $4, $5)`, m.ID, prog.ID, m.CustomerRef, m.Channel,
		m.EnrolledAt)
	if err != nil {
		return nil, fmt.Errorf("insert member: %w", pgError(err))
	}
	if in.Attributes != nil {
		if err := t.storeAttributes(ctx, m.ID, in.Attributes); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (t *txn) checkOccurred(at time.Time) error {
	if at.After(t.now.Add(5 * time.Minute)) {
		return core.Errorf(core.Invalid, "occurred_at", "is in the future")
	}
	if at.IsZero() {
		return nil // not given: the time of arrival
	}
	return core.CheckSince1970("occurred_at", at)
}

func (t *txn) accrue(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Accrue
	if err := decodeAccrue(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}
	if in.EventType == "" {
		return nil, core.Errorf(core.Invalid, "event_type", "is required")
	}
	if err := t.checkPurchaseCurrency(ctx, prog, cmd, in.Currency); err != nil {
		return nil, err
	}
	amount, err := core.ParseAmount("amount", in.Amount)
	if err != nil {
		return nil, err
	}
	if amount.Sign() < 0 || strings.HasPrefix(strings.TrimSpace(in.Amount), "-") {
		// "-0" too: a sign says a refund was meant.
		return nil, core.Errorf(core.Invalid, "amount", "must not be negative; refunds reverse")
	}
	if err := core.CheckAmountDigits("amount", in.Amount, prog.Currency); err != nil {
		return nil, err
	}
	if err := t.checkOccurred(cmd.OccurredAt); err != nil {
		return nil, err
	}
	// The rules engine, or the program's flat rate while it has no rules.
	pts, ruleVersion, err := t.accrualPoints(ctx, prog, m, cmd, in, amount)
	if err != nil {
		return nil, err
	}
	if pts == 0 {
		return t.outcome(m, 0), nil
	}
	postingID, err := t.credit(ctx, m, prog, core.PostAccrual, int64(pts), cmd.OccurredAt, nil,
		posting{reason: in.EventType, partner: in.Partner, ruleVersion: ruleVersion})
	if err != nil {
		return nil, err
	}
	if err := t.recordAccrualAmount(ctx, postingID, amount); err != nil {
		return nil, err
	}
	return t.outcome(m, int64(pts)), nil
}

func (t *txn) creditCmd(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Credit
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("points", in.Points); err != nil {
		return nil, err
	}
	if strings.TrimSpace(in.Reason) == "" {
		return nil, core.Errorf(core.Invalid, "reason", "is required")
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}
	if err := t.checkOccurred(cmd.OccurredAt); err != nil {
		return nil, err
	}
	exp, err := creditExpiry(prog, &in, cmd.OccurredAt, t.now)
	if err != nil {
		return nil, err
	}
	_, err = t.credit(ctx, m, prog, core.PostCredit, int64(in.Points), cmd.OccurredAt, exp,
		posting{reason: in.Reason})
	if err != nil {
		return nil, err
	}
	return t.outcome(m, int64(in.Points)), nil
}

func (t *txn) redeem(ctx context.Context, m *member, cmd *bus.Command) (any, error) {
	var in core.Redeem
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("points", in.Points); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}
	if _, err := t.debit(ctx, m, int64(in.Points), posting{kind: core.PostRedemption,
		reason: in.Reason}); err != nil {
		return nil, err
	}
	return t.outcome(m, -int64(in.Points)), nil
}

func (t *txn) authorize(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Authorize
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("points", in.Points); err != nil {
		return nil, err
	}
	if in.TTLSeconds < 0 || in.TTLSeconds > 90*24*3600 {
		return nil, core.Errorf(core.Invalid, "ttl_seconds", "must be between 0 and 7776000")
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}
	n := int64(in.Points)
	lots, err := t.usableLots(ctx, m, n)
	if err != nil {
		return nil, err
	}
	moves, short := take(lots, n)
	if short > 0 {
		return nil, core.Errorf(core.Insufficient, "points", "%s asked, %d available",
			core.PointsText(n), n-short)
	}
	for i := range moves {
		moves[i].Held, moves[i].Points = -moves[i].Points, 0
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return nil, err
	}
	holdID := uuid.Must(uuid.NewV7()).String()
	pid, err := t.post(ctx, m, posting{kind: core.PostHold, points: -n, heldDelta: n,
		reason: in.Reason, holdID: &holdID, partner: partnerOf(cmd.Source), moves: moves})
	if err != nil {
		return nil, err
	}
	ttl := in.TTLSeconds
	if ttl == 0 {
		ttl = prog.HoldTTLSeconds
	}
	// A partner's hold keeps the partner's point value of now: what its
	// capture is worth in the partner's settlement, whatever the price later.
	_, err = t.tx.Exec(ctx, `INSERT INTO holds (id, member_id, source, txn_id, posting_id, amount,
			expires_at, created_at, point_value)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT point_value FROM partners
			WHERE program_id = $9 AND $3 = 'partner:' || code))`, holdID, m.id,
		cmd.Source, cmd.TxnID, pid, n, t.now.Add(time.Duration(ttl)*time.Second), t.now,
		prog.ID)
	if err != nil {
		return nil, fmt.Errorf("insert hold: %w", pgError(err))
	}
	out := t.outcome(m, -n)
	out.HoldID = holdID
	t.lastMoves = moves
	out.Lots = moves
	return out, nil
}

type hold struct {
	id        string
	memberID  string
	postingID int64
	amount    int64
	status    string
	expires   time.Time
	source    string // who placed it: a partner's payment names the partner
}

func (t *txn) lockHold(ctx context.Context, m *member, source, txnID string) (*hold, error) {
	if txnID == "" {
		return nil, core.Errorf(core.Invalid, "hold_txn_id", "is required")
	}
	h := &hold{}
	err := t.tx.QueryRow(ctx, `SELECT id, member_id, posting_id, amount, status, expires_at,
			source
		FROM holds WHERE source = $1 AND txn_id = $2 FOR UPDATE`, source, txnID).Scan(
		&h.id, &h.memberID, &h.postingID, &h.amount, &h.status, &h.expires, &h.source)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && h.memberID != m.id) {
		return nil, core.Errorf(core.NotFound, "hold_txn_id", "no hold %q for this member", txnID)
	}
	if err != nil {
		return nil, fmt.Errorf("lock hold: %w", err)
	}
	if h.status != "open" {
		return nil, core.Errorf(core.Conflict, "hold_txn_id", "the hold is %s", h.status)
	}
	return h, nil
}

// settleHold captures c points of h (0 for none) and releases the rest,
// closing the hold with the given status.
func (t *txn) settleHold(ctx context.Context, m *member, h *hold, c int64, status string) error {
	rows, err := t.tx.Query(ctx, `SELECT pl.lot_id, pl.held FROM posting_lots pl
		JOIN lots l ON l.id = pl.lot_id
		WHERE pl.posting_id = $1 AND pl.held > 0
		ORDER BY l.expires_at NULLS LAST, l.earned_at, l.id`, h.postingID)
	if err != nil {
		return fmt.Errorf("read hold lots: %w", err)
	}
	var captures, releases []core.LotMove
	left := c
	for rows.Next() {
		var lotID, held int64
		if err := rows.Scan(&lotID, &held); err != nil {
			rows.Close()
			return err
		}
		x := min(held, left)
		left -= x
		if x > 0 {
			captures = append(captures, core.LotMove{LotID: lotID, Points: core.Points(-x),
				Held: core.Points(-x)})
		}
		if y := held - x; y > 0 {
			releases = append(releases, core.LotMove{LotID: lotID, Held: core.Points(-y)})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// While the member owes points, what the release frees repays the debt
	// first: those points leave their lots instead of becoming free again.
	debt := max(0, -m.available)
	for i := range releases {
		if debt == 0 {
			break
		}
		x := min(debt, -int64(releases[i].Held))
		releases[i].Points = core.Points(-x)
		debt -= x
		if _, err := t.repaidBy(ctx, m, releases[i].LotID, x); err != nil {
			return err
		}
	}
	if err := t.applyMoves(ctx, append(append([]core.LotMove{}, captures...), releases...)); err != nil {
		return err
	}
	if c > 0 {
		_, err := t.post(ctx, m, posting{kind: core.PostCapture, heldDelta: -c, holdID: &h.id,
			partner: partnerOf(h.source), moves: captures})
		if err != nil {
			return err
		}
	}
	if rest := h.amount - c; rest > 0 {
		_, err := t.post(ctx, m, posting{kind: core.PostRelease, points: rest, heldDelta: -rest,
			holdID: &h.id, reason: status, partner: partnerOf(h.source), moves: releases})
		if err != nil {
			return err
		}
	}
	var captureTxn *string
	if c > 0 && t.cmd != nil {
		captureTxn = &t.cmd.TxnID
	}
	_, err = t.tx.Exec(ctx, `UPDATE holds SET captured = $2, status = $3, closed_at = $4,
			capture_txn_id = $5
		WHERE id = $1`, h.id, c, status, t.now, captureTxn)
	if err != nil {
		return fmt.Errorf("close hold: %w", err)
	}
	t.lastMoves = captures
	// Released points whose lot expired while they were held expire when
	// the hold ended: now, or, for a hold that ran out of time ("expired",
	// released by refresh or the sweep), at its end. Those of lots that
	// ended later were free by then, and expired by time alone, as the
	// member's other lots past their expiry did: expireByTime dates them
	// when their lots ended. (A lapsed hold's release by the sweep used to
	// date every expired point of the member at the sweep.)
	freed := t.now
	if status == "expired" && h.expires.Before(t.now) {
		freed = h.expires
	}
	if err := t.expireReleased(ctx, m, releases, freed); err != nil {
		return err
	}
	return t.expireByTime(ctx, m)
}

// expireReleased expires what a release freed at the instant freed on
// lots that had expired by then: on each lot, the points released less
// those that repaid a debt, no more; the posting is dated freed.
func (t *txn) expireReleased(ctx context.Context, m *member, releases []core.LotMove,
	freed time.Time) error {
	var ids, n []int64
	for _, r := range releases {
		if x := -int64(r.Held) + int64(r.Points); x > 0 {
			ids, n = append(ids, r.LotID), append(n, x)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	t.expiryDate = freed
	defer func() { t.expiryDate = time.Time{} }()
	_, err := t.drainLots(ctx, m, core.PostExpiry, "", `SELECT l.id,
			LEAST(l.remaining - l.held, r.n), l.pending, l.expires_at
		FROM lots l JOIN unnest($3::bigint[], $4::bigint[]) AS r(id, n) ON r.id = l.id
		WHERE l.member_id = $1 AND l.remaining > l.held AND l.expires_at <= $2
		ORDER BY l.expires_at, l.id FOR UPDATE OF l`, m.id, freed, ids, n)
	return err
}

func (t *txn) capture(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Capture
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if in.Points < 0 || in.Points > core.MaxPoints {
		return nil, core.Errorf(core.Invalid, "points", "must be between 0 and %d", core.MaxPoints)
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	h, err := t.lockHold(ctx, m, cmd.Source, in.HoldTxnID)
	if err != nil {
		return nil, err
	}
	c := int64(in.Points)
	if c == 0 {
		c = h.amount
	}
	if c > h.amount {
		return nil, core.Errorf(core.Invalid, "points", "%d exceeds the hold of %d", c, h.amount)
	}
	if err := t.settleHold(ctx, m, h, c, "captured"); err != nil {
		return nil, err
	}
	out := t.outcome(m, -c)
	out.HoldID = h.id
	return out, nil
}

func (t *txn) releaseCmd(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Release
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	h, err := t.lockHold(ctx, m, cmd.Source, in.HoldTxnID)
	if err != nil {
		return nil, err
	}
	if err := t.settleHold(ctx, m, h, 0, "released"); err != nil {
		return nil, err
	}
	out := t.outcome(m, h.amount)
	out.HoldID = h.id
	return out, nil
}

// refresh brings a locked member up to date before an operation that spends:
// pending points whose holding period ended become spendable, holds past
// their time are released, and lots past their expiry expire.
//
// What it posts is time's doing, not the command's: the postings carry the
// sweep's source and no transaction id, as the sweep's own do, so that a
// statement does not show an expired hold released by whichever command
// touched the member next.
func (t *txn) refresh(ctx context.Context, prog *program, m *member) error {
	if t.system == "" {
		t.system = sweepSource
		defer func() { t.system = "" }()
	}
	if err := t.mature(ctx, m); err != nil {
		return err
	}
	if err := t.releaseHolds(ctx, m, "expired", `AND expires_at <= $2`, t.now); err != nil {
		return err
	}
	return t.expireByTime(ctx, m)
}

// expireByTime is expireDue for lots that expired by the passing of time
// alone, which refresh and the sweep catch up on: the expiry posting is
// dated when its lots expired (the latest of their expiries, as one
// posting takes them all), not when it is written, so that the liability
// at an instant between the two does not count points gone by then (an
// accrual reported late that expires on arrival). Points a release just
// freed are not among them: the release expired those itself, dated then.
func (t *txn) expireByTime(ctx context.Context, m *member) error {
	t.datedExpiry = true
	defer func() { t.datedExpiry = false }()
	return t.expireDue(ctx, m)
}

// releaseHolds releases m's open holds that also match the extra condition
// (on $2 onwards), soonest expiry first, closing them with status.
func (t *txn) releaseHolds(ctx context.Context, m *member, status, extra string,
	args ...any) error {
	rows, err := t.tx.Query(ctx, `SELECT id, member_id, posting_id, amount, status, expires_at,
			source
		FROM holds WHERE member_id = $1 AND status = 'open' `+extra+`
		ORDER BY expires_at, id FOR UPDATE`, append([]any{m.id}, args...)...)
	if err != nil {
		return fmt.Errorf("select holds: %w", err)
	}
	var open []*hold
	for rows.Next() {
		h := &hold{}
		if err := rows.Scan(&h.id, &h.memberID, &h.postingID, &h.amount, &h.status,
			&h.expires, &h.source); err != nil {
			rows.Close()
			return err
		}
		open = append(open, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, h := range open {
		if err := t.settleHold(ctx, m, h, 0, status); err != nil {
			return err
		}
	}
	return nil
}

// mature turns m's pending lots whose holding period ended into spendable
// points, repaying any debt first.
func (t *txn) mature(ctx context.Context, m *member) error {
	if m.pending == 0 {
		return nil
	}
	rows, err := t.tx.Query(ctx, `UPDATE lots SET pending = false
		WHERE member_id = $1 AND pending AND spendable_from <= $2
		RETURNING id, remaining`, m.id, t.now)
	if err != nil {
		return fmt.Errorf("mature lots: %w", err)
	}
	var total int64
	var ids, rem []int64
	for rows.Next() {
		var id, r int64
		if err := rows.Scan(&id, &r); err != nil {
			rows.Close()
			return err
		}
		ids, rem, total = append(ids, id), append(rem, r), total+r
	}
	rows.Close()
	if err := rows.Err(); err != nil || total == 0 {
		return err
	}
	var moves []core.LotMove
	debt := max(0, -m.available)
	for i := range ids {
		if debt == 0 {
			break
		}
		x := min(debt, rem[i])
		debt -= x
		if x > 0 {
			moves = append(moves, core.LotMove{LotID: ids[i], Points: core.Points(-x)})
			if _, err := t.repaidBy(ctx, m, ids[i], x); err != nil {
				return err
			}
		}
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return err
	}
	_, err = t.post(ctx, m, posting{kind: core.PostMaturation, points: total,
		pendingDelta: -total, moves: moves})
	return err
}

// expireDue expires the unreserved part of m's lots whose time has come, in
// one expiry posting that lists the lots it took.
func (t *txn) expireDue(ctx context.Context, m *member) error {
	// remaining > 0 lets the member's own index (lots_member_fifo_idx) serve
	// this, not the index of every due lot in the ledger.
	_, err := t.drainLots(ctx, m, core.PostExpiry, "", `SELECT id, remaining - held, pending,
			expires_at
		FROM lots
		WHERE member_id = $1 AND remaining > 0 AND remaining > held AND expires_at <= $2
		ORDER BY expires_at, id FOR UPDATE`, m.id, t.now)
	return err
}

func (t *txn) adjust(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.Adjust
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if in.Points == 0 || in.Points > core.MaxPoints || in.Points < -core.MaxPoints {
		return nil, core.Errorf(core.Invalid, "points", "must be non-zero and at most %d either way",
			core.MaxPoints)
	}
	if strings.TrimSpace(in.Reason) == "" {
		return nil, core.Errorf(core.Invalid, "reason", "is required for a manual adjustment")
	}
	if strings.TrimSpace(cmd.Actor) == "" {
		return nil, core.Errorf(core.Invalid, "actor", "a manual adjustment names who made it")
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	var err error
	if in.Points > 0 {
		_, err = t.credit(ctx, m, prog, core.PostAdjustment, int64(in.Points), t.now, nil,
			posting{reason: in.Reason})
	} else {
		_, err = t.debit(ctx, m, -int64(in.Points), posting{kind: core.PostAdjustment,
			reason: in.Reason})
	}
	if err != nil {
		return nil, err
	}
	return t.outcome(m, int64(in.Points)), nil
}

// lockPair locks two members of a program in id order, so that two
// operations on the same pair never wait on each other in a cycle. The
// first member is the command's own; the second is named by the request's
// field field ("to" of a transfer, "into" of a merge), which its refusals
// name.
func (t *txn) lockPair(ctx context.Context, prog *program, a, b, field string) (*member,
	*member, error) {
	ida, err := resolveID(ctx, t.tx, prog.ID, a)
	if err != nil {
		return nil, nil, err
	}
	idb, err := resolveID(ctx, t.tx, prog.ID, b)
	if e, ok := core.AsError(err); ok && e.Kind == core.NotFound {
		return nil, nil, core.Errorf(core.NotFound, field, "no member %q in this program", b)
	}
	if err != nil {
		return nil, nil, err
	}
	if ida == idb {
		return nil, nil, core.Errorf(core.Invalid, field, "is the same member")
	}
	first, second := ida, idb
	if second < first {
		first, second = second, first
	}
	m1, err := lockMemberID(ctx, t.tx, first)
	if err != nil {
		return nil, nil, err
	}
	m2, err := lockMemberID(ctx, t.tx, second)
	if err != nil {
		return nil, nil, err
	}
	if m1.merged != nil || m2.merged != nil {
		return nil, nil, core.Errorf(core.Unavailable, "member", "a member was merged meanwhile")
	}
	if first == ida {
		return m1, m2, nil
	}
	return m2, m1, nil
}

func resolveID(ctx context.Context, tx pgx.Tx, programID, ref string) (string, error) {
	var id string
	err := tx.QueryRow(ctx, `WITH RECURSIVE chain(id, merged_into, depth) AS (
			SELECT id, merged_into, 0 FROM members WHERE program_id = $1 AND customer_ref = $2
			UNION ALL
			SELECT m.id, m.merged_into, c.depth + 1 FROM members m
			JOIN chain c ON m.id = c.merged_into WHERE c.depth < 16)
		SELECT id FROM chain WHERE merged_into IS NULL LIMIT 1`, programID, ref).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", core.Errorf(core.NotFound, "member", "no member %q in this program", ref)
	}
	return id, err
}

func (t *txn) transfer(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Transfer
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("points", in.Points); err != nil {
		return nil, err
	}
	if !core.ValidRef(in.To) {
		return nil, core.Errorf(core.Invalid, "to", "must be a member reference")
	}
	from, to, err := t.lockPair(ctx, prog, cmd.Member, in.To, "to")
	if err != nil {
		return nil, err
	}
	if err := mustBe(from, "member", "active"); err != nil {
		return nil, err
	}
	if err := mustBe(to, "to", "active"); err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, prog, from); err != nil {
		return nil, err
	}
	n := int64(in.Points)
	lots, err := t.usableLots(ctx, from, n)
	if err != nil {
		return nil, err
	}
	moves, short := take(lots, n)
	if short > 0 {
		return nil, core.Errorf(core.Insufficient, "points", "%s asked, %d available",
			core.PointsText(n), n-short)
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return nil, err
	}
	if _, err := t.post(ctx, from, posting{kind: core.PostTransferOut, points: -n,
		reason: in.Reason, moves: moves}); err != nil {
		return nil, err
	}
	byID := map[int64]lotRow{}
	for _, l := range lots {
		byID[l.id] = l
	}
	var copies []lotRow
	for _, mv := range moves {
		l := byID[mv.LotID]
		l.remaining = int64(-mv.Points)
		copies = append(copies, l)
	}
	if err := t.receiveLots(ctx, to, core.PostTransferIn, in.Reason, copies, n, 0); err != nil {
		return nil, err
	}
	out := t.outcome(from, -n)
	return out, nil
}

// receiveLots credits m with copies of lots (their dates kept, remaining as
// the amount) in one posting of the given kind.
func (t *txn) receiveLots(ctx context.Context, m *member, kind, reason string, lots []lotRow,
	spendable, pending int64) error {
	pid, err := t.post(ctx, m, posting{kind: kind, points: spendable, pendingDelta: pending,
		reason: reason})
	if err != nil {
		return err
	}
	debt := max(0, -(m.available - spendable))
	for _, l := range lots {
		remaining := l.remaining
		if !l.pending && debt > 0 {
			x := min(debt, remaining)
			debt -= x
			remaining -= x
		}
		// A merge's copy names its lot (origin_lot_id); a transfer's
		// points are the receiver's own, from wherever they came.
		var origin *int64
		if kind == core.PostMergeIn {
			origin = &l.id
		}
		var id int64
		err := t.tx.QueryRow(ctx, `INSERT INTO lots (member_id, posting_id, earned_at,
				spendable_from, expires_at, pending, original, remaining, origin_lot_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`, m.id, pid, l.earned,
			l.spendable, l.expires, l.pending, l.remaining, remaining, origin).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert lot copy: %w", err)
		}
		if _, err := t.repaidBy(ctx, m, id, l.remaining-remaining); err != nil {
			return err
		}
	}
	// Copies of lots that are already past their expiry go at once.
	return t.expireDue(ctx, m)
}

func (t *txn) merge(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var in core.Merge
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if !core.ValidRef(in.Into) {
		return nil, core.Errorf(core.Invalid, "into", "must be a member reference")
	}
	from, into, err := t.lockPair(ctx, prog, cmd.Member, in.Into, "into")
	if err != nil {
		return nil, err
	}
	if err := mustBe(from, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	if err := mustBe(into, "into", "active"); err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, prog, from); err != nil {
		return nil, err
	}
	if from.held > 0 {
		return nil, core.Errorf(core.Conflict, "member", "has open holds; settle them first")
	}
	if from.available < 0 {
		return nil, core.Errorf(core.Conflict, "member", "owes points; settle the debt first")
	}
	rows, err := t.tx.Query(ctx, `SELECT id, earned_at, spendable_from, expires_at, pending,
			original, remaining, held
		FROM lots WHERE member_id = $1 AND remaining > 0 ORDER BY id FOR UPDATE`, from.id)
	if err != nil {
		return nil, fmt.Errorf("select lots: %w", err)
	}
	lots, err := scanLots(rows)
	if err != nil {
		return nil, err
	}
	var moves []core.LotMove
	for _, l := range lots {
		moves = append(moves, core.LotMove{LotID: l.id, Points: core.Points(-l.remaining)})
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return nil, err
	}
	spendable, pending := from.available, from.pending
	if _, err := t.post(ctx, from, posting{kind: core.PostMergeOut, points: -spendable,
		pendingDelta: -pending, reason: "merged into " + into.ref, moves: moves}); err != nil {
		return nil, err
	}
	if err := t.receiveLots(ctx, into, core.PostMergeIn, "merged from "+from.ref, lots,
		spendable, pending); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(ctx, `UPDATE members SET status = 'merged', merged_into = $2,
		updated_at = $3 WHERE id = $1`, from.id, into.id, t.now)
	if err != nil {
		return nil, fmt.Errorf("mark merged: %w", err)
	}
	return t.outcome(into, spendable+pending), nil
}

func (t *txn) setStatus(ctx context.Context, prog *program, m *member, cmd *bus.Command) (any, error) {
	var in core.StatusChange
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if err := core.CheckReason(in.Reason, false); err != nil {
		return nil, err
	}
	if in.MaxForfeit != nil && (cmd.Kind != core.KindClose || *in.MaxForfeit < 0) {
		return nil, core.Errorf(core.Invalid, "max_forfeit", "bounds what a close forfeits: "+
			"give it on a close only, as 0 or more points")
	}
	// A merged reference leads to the survivor for the points it earns and
	// spends; a status is a person's decision about one account, and one
	// asked of the merged account (a line ported out) must not close or
	// suspend the account that absorbed it.
	if m.ref != cmd.Member {
		return nil, core.Errorf(core.Conflict, "member", "%q was merged into %q and has no "+
			"account of its own: there is no status of %q to change, and nothing was "+
			"changed (%q's status is the whole account's; its points include %q's)",
			cmd.Member, m.ref, cmd.Member, m.ref, cmd.Member)
	}
	next := map[string]string{core.KindSuspend: "suspended", core.KindReactivate: "active",
		core.KindClose: "closed"}[cmd.Kind]
	// A close answers the points it forfeited, negative: what it took from
	// the member.
	var forfeited int64
	switch cmd.Kind {
	case core.KindSuspend:
		if err := mustBe(m, "member", "active"); err != nil {
			return nil, err
		}
	case core.KindReactivate:
		if err := mustBe(m, "member", "suspended"); err != nil {
			return nil, err
		}
	case core.KindClose:
		if err := mustBe(m, "member", "active", "suspended"); err != nil {
			return nil, err
		}
		if err := t.noPendingConversion(ctx, m); err != nil {
			return nil, err
		}
		if err := t.noOpenHolds(ctx, m); err != nil {
			return nil, err
		}
		if in.MaxForfeit != nil {
			var all int64
			if err := t.tx.QueryRow(ctx, `SELECT coalesce(sum(remaining), 0) FROM lots
				WHERE member_id = $1 AND remaining > 0`, m.id).Scan(&all); err != nil {
				return nil, fmt.Errorf("sum lots: %w", err)
			}
			if all > int64(*in.MaxForfeit) {
				return nil, core.Errorf(core.Conflict, "max_forfeit", "the close would "+
					"forfeit %d points, more than the %d it allows: the member has earned "+
					"since; ask again with the points it has now", all, *in.MaxForfeit)
			}
		}
		n, err := t.forfeitAll(ctx, m, in.Reason)
		if err != nil {
			return nil, err
		}
		forfeited = n
	}
	_, err := t.tx.Exec(ctx, `UPDATE members SET status = $2, updated_at = $3 WHERE id = $1`,
		m.id, next, t.now)
	if err != nil {
		return nil, fmt.Errorf("set status: %w", err)
	}
	m.status = next
	out := t.outcome(m, -forfeited)
	out.Status = next
	return out, nil
}

// noOpenHolds refuses to close m while a hold on its points is open (a
// partner's payment authorized and not yet captured): the close would give
// the points back and forfeit them, and the partner's capture would fail.
// The refresh before a close has released the holds past their time, so
// those left run on; the refusal says when the last one ends.
func (t *txn) noOpenHolds(ctx context.Context, m *member) error {
	if m.held == 0 {
		return nil
	}
	var n int64
	var last *time.Time
	if err := t.tx.QueryRow(ctx, `SELECT count(*), max(expires_at) FROM holds
		WHERE member_id = $1 AND status = 'open'`, m.id).Scan(&n, &last); err != nil {
		return fmt.Errorf("count open holds: %w", err)
	}
	if n == 0 {
		return nil
	}
	holds := "open holds (payments authorized and not yet captured): capture or release " +
		"them first"
	if n == 1 {
		holds = "open hold (a payment authorized and not yet captured): capture or release " +
			"it first"
	}
	return core.Errorf(core.Conflict, "member", "member %q has %d %s, or close it after %s, "+
		"when the last one runs out (send the close then with a new idempotency key: this "+
		"one keeps this answer)", m.ref, n, holds, last.UTC().Format(time.RFC3339))
}

// noPendingConversion refuses to close m while a conversion of its points
// is pending: the other program may still credit it, and the close would
// release and forfeit the points it holds, leaving the conversion
// confirmed there and uncapturable here.
func (t *txn) noPendingConversion(ctx context.Context, m *member) error {
	if m.held == 0 {
		return nil // nothing held: no conversion waits on a hold
	}
	var id, ext string
	err := t.tx.QueryRow(ctx, `SELECT c.id, c.external_code FROM conversions c
		JOIN holds h ON h.source = $2 AND h.txn_id = c.hold_txn_id AND h.status = 'open'
		WHERE c.member_id = $1 AND c.status = 'pending'
		ORDER BY c.requested_at LIMIT 1`, m.id, core.SourceConversion).Scan(&id, &ext)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read pending conversions: %w", err)
	}
	return core.Errorf(core.Conflict, "member", "has conversion %s into %s pending: close "+
		"the membership once the other program has answered (GET .../conversions/%s)",
		id, ext, id)
}

// forfeitAll releases m's open holds and forfeits every point m has left,
// spendable and pending, in one posting. It returns the points forfeited.
func (t *txn) forfeitAll(ctx context.Context, m *member, reason string) (int64, error) {
	if err := t.releaseHolds(ctx, m, "released", ""); err != nil {
		return 0, err
	}
	if reason == "" {
		reason = "membership closed"
	}
	return t.drainLots(ctx, m, core.PostForfeit, reason, `SELECT id, remaining, pending,
			expires_at
		FROM lots WHERE member_id = $1 AND remaining > 0 ORDER BY id FOR UPDATE`, m.id)
}

// drainLots takes from m every lot the query selects (id, amount, pending,
// expires_at) the amount it names, in one posting of the given kind that
// lists the lots: spendable points leave available, pending ones leave
// pending. Under expireByTime the posting is dated at the latest expiry of
// the lots. It returns the points taken, spendable and pending.
func (t *txn) drainLots(ctx context.Context, m *member, kind, reason, query string,
	args ...any) (int64, error) {
	rows, err := t.tx.Query(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("select lots to %s: %w", kind, err)
	}
	var moves []core.LotMove
	var spendable, pending int64
	var occurred time.Time // the latest expiry of the lots
	for rows.Next() {
		var id, x int64
		var p bool
		var exp *time.Time
		if err := rows.Scan(&id, &x, &p, &exp); err != nil {
			rows.Close()
			return 0, err
		}
		if exp != nil && exp.After(occurred) {
			occurred = *exp
		}
		moves = append(moves, core.LotMove{LotID: id, Points: core.Points(-x)})
		if p {
			pending += x
		} else {
			spendable += x
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(moves) == 0 {
		return 0, err
	}
	if err := t.applyMoves(ctx, moves); err != nil {
		return 0, err
	}
	p := posting{kind: kind, points: -spendable, pendingDelta: -pending, reason: reason,
		moves: moves}
	if t.datedExpiry && kind == core.PostExpiry && !occurred.IsZero() &&
		occurred.Before(t.now) {
		p.occurredAt = occurred
	}
	if kind == core.PostExpiry && !t.expiryDate.IsZero() && t.expiryDate.Before(t.now) {
		p.occurredAt = t.expiryDate
	}
	if _, err = t.post(ctx, m, p); err != nil {
		return 0, err
	}
	return spendable + pending, nil
}
