package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// Reward returns a reward of the catalog. Errors: not_found.
func (l *Ledger) Reward(ctx context.Context, programCode, code string) (*core.Reward, error) {
	r, err := scanReward(l.pool.QueryRow(ctx, `SELECT `+rewardCols+` FROM rewards
		WHERE program_id = (SELECT id FROM programs WHERE code = $1) AND code = $2`,
		programCode, code))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "reward", "no reward %q in program %q", code,
			programCode)
	}
	if err != nil {
		return nil, fmt.Errorf("read reward: %w", err)
	}
	return &r.Reward, nil
}

// Rewards returns up to limit rewards of the catalog in code order, after
// the code given as cursor; next is the cursor of the following page.
// Errors: not_found (no such program), invalid (a bad cursor).
func (l *Ledger) Rewards(ctx context.Context, programCode, cursor string,
	limit int) (out []core.Reward, next string, err error) {
	if _, err := l.Program(ctx, programCode); err != nil {
		return nil, "", err
	}
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	// A cursor is the last code of a page, so a valid code.
	if cursor != "" && !core.ValidCode(cursor) {
		return nil, "", core.Errorf(core.Invalid, "cursor", "is not a cursor from a previous page")
	}
	rows, err := l.pool.Query(ctx, `SELECT `+rewardCols+` FROM rewards
		WHERE program_id = (SELECT id FROM programs WHERE code = $1) AND code > $2
		ORDER BY code LIMIT $3`, programCode, cursor, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("read rewards: %w", err)
	}
	defer rows.Close()
	out = []core.Reward{}
	for rows.Next() {
		r, err := scanReward(rows)
		if err != nil {
			return nil, "", fmt.Errorf("scan reward: %w", err)
		}
		out = append(out, r.Reward)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].Code
	}
	return out, next, nil
}

const orderCols = `o.id, r.code, m.customer_ref, o.quantity, o.points,
	coalesce(o.money_amount::text, ''), o.voucher, o.status, o.posting_id, o.txn_id,
	o.cancel_until, o.created_at, o.cancelled_at`

func scanOrder(row pgx.Row) (*core.Order, error) {
	o := &core.Order{}
	err := row.Scan(&o.ID, &o.Reward, &o.Member, &o.Quantity, &o.Points, &o.MoneyAmount,
		&o.Voucher, &o.Status, &o.PostingID, &o.TxnID, &o.CancelUntil, &o.CreatedAt,
		&o.CancelledAt)
	o.MoneyAmount = trimDecimal(o.MoneyAmount)
	return o, err
}

// Orders returns the member's catalog orders, newest first (at most 500):
// those of the member the reference leads to (the survivor of a merge) and
// of every member merged into it, so that an order stays in sight under
// both the merged reference and the survivor's. Errors: not_found.
func (l *Ledger) Orders(ctx context.Context, programCode, ref string) ([]core.Order, error) {
	m, err := l.Member(ctx, programCode, ref)
	if err != nil {
		return nil, err
	}
	rows, err := l.pool.Query(ctx, mergedMembers+`SELECT `+orderCols+` FROM reward_orders o
		JOIN rewards r ON r.id = o.reward_id JOIN members m ON m.id = o.member_id
		WHERE o.member_id IN (SELECT id FROM merged) ORDER BY o.id DESC LIMIT 500`, m.ID)
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	defer rows.Close()
	out := []core.Order{}
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("scan order: %w", err)
		}
		out = append(out, *o)
	}
	return out, rows.Err()
}

// Order returns one order of the member, or of a member merged into it (as
// Orders). Errors: not_found.
func (l *Ledger) Order(ctx context.Context, programCode, ref, id string) (*core.Order, error) {
	m, err := l.Member(ctx, programCode, ref)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, core.Errorf(core.NotFound, "order", "no order %q for this member", id)
	}
	o, err := scanOrder(l.pool.QueryRow(ctx, mergedMembers+`SELECT `+orderCols+`
		FROM reward_orders o
		JOIN rewards r ON r.id = o.reward_id JOIN members m ON m.id = o.member_id
		WHERE o.id = $2 AND o.member_id IN (SELECT id FROM merged)`, m.ID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "order", "no order %q for this member", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read order: %w", err)
	}
	return o, nil
}

// Partner returns a partner of the program and its keys (never the keys
// themselves, which are not kept). Errors: not_found.
func (l *Ledger) Partner(ctx context.Context, programCode, code string) (*core.Partner,
	[]core.PartnerKey, error) {
	return readPartner(ctx, l.pool, programCode, code)
}

// PartnerAuth is what a partner's API key grants.
type PartnerAuth struct {
	Partner core.Partner
	KeyID   string
	Scopes  []string
}

// PartnerByKey finds the live key with the given SHA-256 digest and its
// active partner. Errors: unauthorized (no such live key), forbidden (a
// live key of a partner the operator deactivated).
func (l *Ledger) PartnerByKey(ctx context.Context, digest []byte) (*PartnerAuth, error) {
	a := &PartnerAuth{}
	var code, program string
	var active bool
	err := l.pool.QueryRow(ctx, `SELECT k.id, k.scopes, pa.code, pr.code, pa.active
		FROM partner_keys k JOIN partners pa ON pa.id = k.partner_id
		JOIN programs pr ON pr.id = pa.program_id
		WHERE k.digest = $1 AND k.revoked_at IS NULL`, digest).Scan(
		&a.KeyID, &a.Scopes, &code, &program, &active)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.Unauthorized, "Authorization", "the partner key is not valid")
	}
	if err == nil && !active {
		return nil, core.Errorf(core.Forbidden, "Authorization", "partner %q is deactivated: "+
			"its keys may not be used until the operator activates it again", code)
	}
	if err != nil {
		return nil, fmt.Errorf("read partner key: %w", err)
	}
	p, _, err := readPartner(ctx, l.pool, program, code)
	if err != nil {
		return nil, err
	}
	a.Partner = *p
	return a, nil
}

// PartnerTxn is a partner's payment in points: a hold, what it captured,
// what was refunded of that, and what the operator reversed.
type PartnerTxn struct {
	TxnID     string      `json:"txn_id"`
	Member    string      `json:"member"`
	Status    string      `json:"status"`
	Amount    core.Points `json:"authorized"`
	Captured  core.Points `json:"captured"`
	Refunded  core.Points `json:"refunded"`
	Reversed  core.Points `json:"reversed"`
	ExpiresAt time.Time   `json:"expires_at"`
	CreatedAt time.Time   `json:"created_at"`
	ClosedAt  *time.Time  `json:"closed_at,omitempty"`
}

// PartnerTransaction returns the payment the source made with transaction
// id txn. A payment of another source is not found: a partner sees only
// its own. Errors: not_found.
func (l *Ledger) PartnerTransaction(ctx context.Context, source, txn string) (*PartnerTxn,
	error) {
	x := &PartnerTxn{TxnID: txn}
	err := l.pool.QueryRow(ctx, `SELECT m.customer_ref, h.status, h.amount, h.captured,
			coalesce((SELECT sum(points) FROM partner_refunds r WHERE r.hold_id = h.id), 0),
			coalesce((SELECT rv.points FROM postings rv WHERE rv.id = h.reversal_posting_id), 0),
			h.expires_at, h.created_at, h.closed_at
		FROM holds h JOIN members m ON m.id = h.member_id
		WHERE h.source = $1 AND h.txn_id = $2`, source, txn).Scan(&x.Member, &x.Status,
		&x.Amount, &x.Captured, &x.Refunded, &x.Reversed, &x.ExpiresAt, &x.CreatedAt,
		&x.ClosedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "txn_id", "no transaction %q of this partner", txn)
	}
	if err != nil {
		return nil, fmt.Errorf("read partner transaction: %w", err)
	}
	// An open hold past its time is released by the next sweep; say so now.
	if x.Status == "open" && !x.ExpiresAt.After(l.Clock()) {
		x.Status = "expired"
	}
	return x, nil
}

// SettlementLine is one capture, refund or operator's reversal in a
// partner's settlement.
type SettlementLine struct {
	Type      string      `json:"type"` // capture, refund or reversal
	TxnID     string      `json:"txn_id"`
	HoldTxnID string      `json:"hold_txn_id"`
	Member    string      `json:"member"`
	Points    core.Points `json:"points"` // captured positive, refunded or reversed negative
	// Value is what the points are worth at the point value in force when
	// the member's payment was placed (the hold), negative as Points.
	Value string    `json:"value"`
	At    time.Time `json:"at"`
}

// Settlement is what the operator owes a partner for a period: the points
// its members paid with (captured, less what the partner refunded and what
// the operator reversed) and their worth in the partner's currency, exactly:
// each line's points times the point value in force when the member's
// payment was placed, so that a price changed later does not change what a
// closed period owed.
type Settlement struct {
	Partner  string    `json:"partner"`
	Program  string    `json:"program"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Currency string    `json:"currency"`
	// PointValue is the partner's point value now, which new payments take.
	PointValue string           `json:"point_value"`
	Captured   core.Points      `json:"captured"`
	Refunded   core.Points      `json:"refunded"`
	Reversed   core.Points      `json:"reversed"`
	Net        core.Points      `json:"net"`
	Value      string           `json:"value"`
	Lines      []SettlementLine `json:"transactions"`
}

// Settlement reports a partner's captures (by the time the hold closed),
// refunds and the operator's reversals of captures (by the time they were
// made) in [from, to). A capture the operator reversed gave the member the
// points back, so the partner is not paid for it: the reversal is a line of
// its own, negative as a refund is. Errors: not_found.
func (l *Ledger) Settlement(ctx context.Context, programCode, partner string, from,
	to time.Time) (*Settlement, error) {
	p, _, err := readPartner(ctx, l.pool, programCode, partner)
	if err != nil {
		return nil, err
	}
	if !to.After(from) {
		return nil, core.Errorf(core.Invalid, "to", "must be after from: the period includes from and "+
			"excludes to (for one day, to is the next day)")
	}
	s := &Settlement{Partner: p.Code, Program: programCode, From: from.UTC(), To: to.UTC(),
		Currency: p.Currency, PointValue: p.PointValue, Lines: []SettlementLine{}}
	source := core.PartnerSource(p.Code)
	// Each line is worth its points at the hold's point value; a hold from
	// before holds kept one (none) at the partner's of now.
	rows, err := l.pool.Query(ctx, `
		SELECT 'capture', coalesce(h.capture_txn_id, h.txn_id), h.txn_id, m.customer_ref,
			h.captured, h.closed_at, coalesce(h.point_value, $4::numeric)::text
		FROM holds h JOIN members m ON m.id = h.member_id
		WHERE h.source = $1 AND h.captured > 0 AND h.closed_at >= $2 AND h.closed_at < $3
		UNION ALL
		SELECT 'refund', r.txn_id, h.txn_id, m.customer_ref, -r.points, r.created_at,
			coalesce(h.point_value, $4::numeric)::text
		FROM partner_refunds r JOIN holds h ON h.id = r.hold_id
		JOIN members m ON m.id = h.member_id
		WHERE r.source = $1 AND r.created_at >= $2 AND r.created_at < $3
		UNION ALL
		SELECT 'reversal', coalesce(rv.txn_id, ''), h.txn_id, m.customer_ref, -rv.points,
			h.reversed_at, coalesce(h.point_value, $4::numeric)::text
		FROM holds h JOIN members m ON m.id = h.member_id
		JOIN postings rv ON rv.id = h.reversal_posting_id
		WHERE h.source = $1 AND h.reversed_at >= $2 AND h.reversed_at < $3
		ORDER BY 6, 2`, source, from, to, p.PointValue)
	if err != nil {
		return nil, fmt.Errorf("read settlement: %w", err)
	}
	defer rows.Close()
	total := new(big.Rat)
	for rows.Next() {
		var ln SettlementLine
		var price string
		if err := rows.Scan(&ln.Type, &ln.TxnID, &ln.HoldTxnID, &ln.Member, &ln.Points,
			&ln.At, &price); err != nil {
			return nil, fmt.Errorf("scan settlement: %w", err)
		}
		ln.At = ln.At.UTC()
		v, err := core.ParseAmount("point_value", price)
		if err != nil {
			return nil, err
		}
		v.Mul(v, new(big.Rat).SetInt64(int64(ln.Points)))
		total.Add(total, v)
		ln.Value = trimDecimal(v.FloatString(6))
		switch ln.Type {
		case "capture":
			s.Captured += ln.Points
		case "refund":
			s.Refunded -= ln.Points
		default:
			s.Reversed -= ln.Points
		}
		s.Lines = append(s.Lines, ln)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.Net = s.Captured - s.Refunded - s.Reversed
	s.Value = trimDecimal(total.FloatString(6))
	return s, nil
}
