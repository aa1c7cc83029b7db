package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// exchange applies the commands of the rewards catalog and of partner
// merchants. Those without a member (catalog and partner management) run as
// they are; the others lock the member and bring it up to date first.
func (t *txn) exchange(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	switch cmd.Kind {
	case core.KindRewardUpsert:
		return t.upsertReward(ctx, prog, cmd)
	case core.KindPartnerUpsert:
		return t.upsertPartner(ctx, prog, cmd)
	case core.KindPartnerKeyCreate:
		return t.createPartnerKey(ctx, prog, cmd)
	case core.KindPartnerKeyRevoke:
		return t.revokePartnerKey(ctx, prog, cmd)
	}
	if !core.ValidRef(cmd.Member) {
		return nil, core.Errorf(core.Invalid, "member", "must be a member reference")
	}
	m, err := lockMember(ctx, t.tx, prog.ID, cmd.Member)
	if err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, prog, m); err != nil {
		return nil, err
	}
	switch cmd.Kind {
	case core.KindOrderPlace:
		return t.placeOrder(ctx, prog, m, cmd)
	case core.KindOrderCancel:
		return t.cancelOrder(ctx, prog, m, cmd)
	case core.KindPartnerRefund:
		return t.partnerRefund(ctx, prog, m, cmd)
	case core.KindPartnerClawback:
		return t.partnerClawback(ctx, prog, m, cmd)
	}
	return nil, core.Errorf(core.Invalid, "kind", "unknown command kind %q", cmd.Kind)
}

// upsertReward creates or replaces a reward. With CheckStock it first locks
// the reward and refuses (conflict) when its stock is no longer the one the
// editor was shown: orders placed or cancelled meanwhile would otherwise be
// forgotten, and units already sold put on sale again. Errors: invalid,
// not_found (CheckStock on a reward that does not exist), conflict.
func (t *txn) upsertReward(ctx context.Context, prog *program, cmd *bus.Command) (any, error) {
	var up core.RewardUpsert
	if err := decode(cmd.Payload, &up); err != nil {
		return nil, err
	}
	in := up.Reward
	if err := in.Validate(); err != nil {
		return nil, err
	}
	if up.Create {
		_, err := readReward(ctx, t.tx, prog.ID, in.Code, true)
		if err == nil {
			return nil, core.Errorf(core.Conflict, "code", "a reward %q exists already; "+
				"change it from its own form in the list, which keeps its stock", in.Code)
		}
		if core.KindOf(err) != core.NotFound {
			return nil, err
		}
	}
	if up.CheckStock {
		cur, err := readReward(ctx, t.tx, prog.ID, in.Code, true)
		if err != nil {
			return nil, err
		}
		if !sameCount(cur.Stock, up.StockShown) {
			return nil, core.Errorf(core.Conflict, "stock", "is now %s, not %s as when the "+
				"change began; orders took or returned units meanwhile",
				countText(cur.Stock), countText(up.StockShown))
		}
	}
	if len(in.Tiers) > 0 {
		// A reward for a tier the program does not have could be redeemed
		// by nobody.
		tiers, err := t.programTiers(ctx, prog.ID)
		if err != nil {
			return nil, err
		}
		var codes []string
		if tiers != nil {
			for _, l := range tiers.Levels {
				codes = append(codes, l.Code)
			}
		}
		for _, c := range in.Tiers {
			if !slices.Contains(codes, c) {
				if len(codes) == 0 {
					return nil, core.Errorf(core.Invalid, "tiers", "the program has no "+
						"tiers; define them first or leave tiers out")
				}
				return nil, core.Errorf(core.Invalid, "tiers", "no tier %q in the program "+
					"(it has %s)", c, strings.Join(codes, ", "))
			}
		}
	}
	if in.Partner != "" {
		// A reward supplied by a partner the program does not have (a typo)
		// would name it on every redemption of its orders.
		var known bool
		err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM partners
			WHERE program_id = $1 AND code = $2)`, prog.ID, in.Partner).Scan(&known)
		if err != nil {
			return nil, fmt.Errorf("read partner: %w", err)
		}
		if !known {
			return nil, core.Errorf(core.Invalid, "partner", "no partner %q in the program; "+
				"create it first or leave partner out", in.Partner)
		}
	}
	active := in.Active == nil || *in.Active
	var money *string
	if in.MoneyAmount != "" {
		money = &in.MoneyAmount
	}
	var moneyPoints *int64
	if in.MoneyPoints > 0 {
		mp := int64(in.MoneyPoints)
		moneyPoints = &mp
	}
	tiers := in.Tiers
	if tiers == nil {
		tiers = []string{}
	}
	id := uuid.Must(uuid.NewV7()).String()
	_, err := t.tx.Exec(ctx, `INSERT INTO rewards (id, program_id, code, name, description,
			points, money_points, money_amount, stock, valid_from, valid_until, per_member_limit,
			program_limit, tiers, partner, cancel_window_seconds, active, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9, $10, $11, $12, $13, $14, $15, $16,
			$17, $18, $18)
		ON CONFLICT (program_id, code) DO UPDATE SET name = EXCLUDED.name,
			description = EXCLUDED.description, points = EXCLUDED.points,
			money_points = EXCLUDED.money_points, money_amount = EXCLUDED.money_amount,
			stock = EXCLUDED.stock, valid_from = EXCLUDED.valid_from,
			valid_until = EXCLUDED.valid_until, per_member_limit = EXCLUDED.per_member_limit,
			program_limit = EXCLUDED.program_limit, tiers = EXCLUDED.tiers,
			partner = EXCLUDED.partner, cancel_window_seconds = EXCLUDED.cancel_window_seconds,
			active = EXCLUDED.active, updated_at = EXCLUDED.updated_at`,
		id, prog.ID, in.Code, in.Name, in.Description, int64(in.Points), moneyPoints, money,
		in.Stock, in.ValidFrom, in.ValidUntil, in.PerMemberLimit, in.ProgramLimit, tiers,
		in.Partner, in.CancelWindowSeconds, active, t.now)
	if err != nil {
		return nil, fmt.Errorf("upsert reward: %w", pgError(err))
	}
	return readReward(ctx, t.tx, prog.ID, in.Code, false)
}

// sameCount tells whether two optional counts are equal, nil (unlimited)
// only to nil.
func sameCount(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// countText writes an optional count for a message: a number, or "unlimited".
func countText(n *int64) string {
	if n == nil {
		return "unlimited"
	}
	return strconv.FormatInt(*n, 10)
}

const rewardCols = `id, code, name, description, points, coalesce(money_points, 0),
	coalesce(money_amount::text, ''), stock, valid_from, valid_until, per_member_limit,
	program_limit, redeemed, tiers, partner, cancel_window_seconds, active, updated_at`

// rewardRow is a reward with its id.
type rewardRow struct {
	id string
	core.Reward
}

func scanReward(row pgx.Row) (*rewardRow, error) {
	r := &rewardRow{}
	var active bool
	var updated time.Time
	err := row.Scan(&r.id, &r.Code, &r.Name, &r.Description, &r.Points, &r.MoneyPoints,
		&r.MoneyAmount, &r.Stock, &r.ValidFrom, &r.ValidUntil, &r.PerMemberLimit,
		&r.ProgramLimit, &r.Redeemed, &r.Tiers, &r.Partner, &r.CancelWindowSeconds, &active,
		&updated)
	if err != nil {
		return nil, err
	}
	r.MoneyAmount = trimDecimal(r.MoneyAmount)
	r.Active = &active
	u := updated.UTC()
	r.UpdatedAt = &u
	return r, nil
}

// readReward reads (and with lock, locks) a reward by code. Errors: not_found.
func readReward(ctx context.Context, tx pgx.Tx, programID, code string,
	lock bool) (*rewardRow, error) {
	q := `SELECT ` + rewardCols + ` FROM rewards WHERE program_id = $1 AND code = $2`
	if lock {
		q += ` FOR UPDATE`
	}
	r, err := scanReward(tx.QueryRow(ctx, q, programID, code))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "reward", "no reward %q in this program", code)
	}
	if err != nil {
		return nil, fmt.Errorf("read reward: %w", err)
	}
	return r, nil
}

// placeOrder redeems a reward: it checks the reward's window, tiers, limits
// and stock under the reward's row lock, debits the price soonest expiry
// first, takes the stock and issues a voucher. A refusal at any step
// changes nothing, since the command runs in its own savepoint.
func (t *txn) placeOrder(ctx context.Context, prog *program, m *member,
	cmd *bus.Command) (any, error) {
	var in core.PlaceOrder
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if in.Quantity == 0 {
		in.Quantity = 1
	}
	if in.Quantity < 0 || in.Quantity > 1000 {
		return nil, core.Errorf(core.Invalid, "quantity", "must be between 1 and 1000")
	}
	if in.Price == "" {
		in.Price = core.PricePoints
	}
	if in.Price != core.PricePoints && in.Price != core.PricePointsPlusMoney {
		return nil, core.Errorf(core.Invalid, "price", "must be points or points_plus_money")
	}
	if err := mustBe(m, "member", "active"); err != nil {
		return nil, err
	}
	// TODO(exchange): the member is locked before the reward; two batches on
	// different partitions that each order two rewards in opposite orders can
	// deadlock. PostgreSQL then aborts one batch, which the consumer retries,
	// so nothing is lost; ordering the locks would need the whole batch first.
	r, err := readReward(ctx, t.tx, prog.ID, in.Reward, true)
	if err != nil {
		return nil, err
	}

	// Is the reward on offer to this member now?
	switch {
	case !*r.Active:
		return nil, core.Errorf(core.Conflict, "reward", "the reward is withdrawn")
	case r.ValidFrom != nil && t.now.Before(*r.ValidFrom):
		return nil, core.Errorf(core.Conflict, "reward", "the reward is not on offer yet")
	case r.ValidUntil != nil && !t.now.Before(*r.ValidUntil):
		return nil, core.Errorf(core.Conflict, "reward", "the reward is no longer on offer")
	}
	if len(r.Tiers) > 0 {
		tier, err := t.tierNow(ctx, prog, m)
		if err != nil {
			return nil, err
		}
		switch {
		case tier == "":
			return nil, core.Errorf(core.Conflict, "reward", "the reward is for members of "+
				"tier %s, and the member has not reached a tier",
				strings.Join(r.Tiers, " or "))
		case !slices.Contains(r.Tiers, tier):
			return nil, core.Errorf(core.Conflict, "reward",
				"the member's tier %q may not redeem this reward", tier)
		}
	}

	// Stock and limits, read under the reward's lock.
	if r.Stock != nil && *r.Stock < in.Quantity {
		return nil, core.Errorf(core.Conflict, "reward", "out of stock: %d left, %d asked",
			*r.Stock, in.Quantity)
	}
	if r.ProgramLimit != nil && r.Redeemed+in.Quantity > *r.ProgramLimit {
		return nil, core.Errorf(core.Conflict, "reward",
			"%d more would pass the program-wide limit of %d (%d redeemed, %d left)",
			in.Quantity, *r.ProgramLimit, r.Redeemed, max(0, *r.ProgramLimit-r.Redeemed))
	}
	if r.PerMemberLimit != nil {
		// The orders of members merged into m are m's: a merge of a
		// customer's two accounts does not give the customer a second limit.
		var had int64
		err := t.tx.QueryRow(ctx, mergedMembers+`SELECT coalesce(sum(quantity), 0)
			FROM reward_orders WHERE member_id IN (SELECT id FROM merged) AND reward_id = $2
			  AND status = 'placed'`, m.id, r.id).Scan(&had)
		if err != nil {
			return nil, fmt.Errorf("count orders: %w", err)
		}
		if had+in.Quantity > *r.PerMemberLimit {
			return nil, core.Errorf(core.Conflict, "reward",
				"%d more would pass the limit of %d per member (%d redeemed, %d left)",
				in.Quantity, *r.PerMemberLimit, had, max(0, *r.PerMemberLimit-had))
		}
	}

	// The price.
	unit := int64(r.Points)
	var money *string
	if in.Price == core.PricePointsPlusMoney {
		if r.MoneyAmount == "" {
			return nil, core.Errorf(core.Invalid, "price",
				"this reward has no points-plus-money price")
		}
		unit = int64(r.MoneyPoints)
		a, err := core.ParseAmount("money_amount", r.MoneyAmount)
		if err != nil {
			return nil, err
		}
		s := trimDecimal(new(big.Rat).Mul(a, new(big.Rat).SetInt64(in.Quantity)).FloatString(6))
		money = &s
	}
	if unit > int64(core.MaxPoints)/in.Quantity {
		return nil, core.Errorf(core.Invalid, "quantity", "the price is out of range")
	}
	price := unit * in.Quantity
	pid, err := t.debit(ctx, m, price, posting{kind: core.PostRedemption,
		reason: "reward " + r.Code, partner: r.Partner})
	if err != nil {
		return nil, err
	}

	// Take the stock and issue the voucher.
	_, err = t.tx.Exec(ctx, `UPDATE rewards SET redeemed = redeemed + $2,
		stock = CASE WHEN stock IS NULL THEN NULL ELSE stock - $2 END WHERE id = $1`,
		r.id, in.Quantity)
	if err != nil {
		return nil, fmt.Errorf("take stock: %w", err)
	}
	o := core.Order{ID: uuid.Must(uuid.NewV7()).String(), Reward: r.Code, Member: m.ref,
		Quantity: in.Quantity, Points: core.Points(price), Status: core.OrderPlaced,
		PostingID: pid, TxnID: cmd.TxnID, CreatedAt: t.now}
	if money != nil {
		o.MoneyAmount = *money
	}
	if r.CancelWindowSeconds > 0 {
		u := t.now.Add(time.Duration(r.CancelWindowSeconds) * time.Second)
		o.CancelUntil = &u
	}
	for try := 0; ; try++ {
		o.Voucher = newVoucher()
		// A savepoint of its own, so that a (most unlikely) clash of codes can
		// be retried without losing the command's work.
		if _, err := t.tx.Exec(ctx, `SAVEPOINT voucher`); err != nil {
			return nil, err
		}
		_, err = t.tx.Exec(ctx, `INSERT INTO reward_orders (id, program_id, reward_id,
				member_id, source, txn_id, quantity, points, money_amount, voucher, posting_id,
				cancel_until, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10, $11, $12, $13)`,
			o.ID, prog.ID, r.id, m.id, cmd.Source, cmd.TxnID, o.Quantity, price, money,
			o.Voucher, pid, o.CancelUntil, t.now)
		if err == nil {
			if _, err := t.tx.Exec(ctx, `RELEASE SAVEPOINT voucher`); err != nil {
				return nil, err
			}
			break
		}
		if _, rerr := t.tx.Exec(ctx, `ROLLBACK TO SAVEPOINT voucher`); rerr != nil {
			return nil, rerr
		}
		if !isConstraint(err, "reward_orders_voucher_key") || try == 3 {
			return nil, fmt.Errorf("insert order: %w", err)
		}
	}
	b := m.balance()
	o.Balance = &b
	return o, nil
}

// cancelOrder cancels a placed order within its window: the points go back
// to the lots they came from (a reversal of the order's posting, which the
// ledger allows once) and the stock comes back. An order of a member since
// merged into m is m's: its points come back to m (see reverseDebit).
func (t *txn) cancelOrder(ctx context.Context, prog *program, m *member,
	cmd *bus.Command) (any, error) {
	var in core.CancelOrder
	if err := decode(cmd.Payload, &in); err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(in.OrderID); err != nil {
		return nil, core.Errorf(core.NotFound, "order_id", "no order %q for this member",
			in.OrderID)
	}
	if err := mustBe(m, "member", "active", "suspended"); err != nil {
		return nil, err
	}
	var rewardID, status, owner string
	var qty, pid int64
	var until *time.Time
	err := t.tx.QueryRow(ctx, `SELECT reward_id, status, quantity, posting_id, cancel_until,
			member_id
		FROM reward_orders WHERE id = $1 AND program_id = $2 FOR UPDATE`, in.OrderID,
		prog.ID).Scan(&rewardID, &status, &qty, &pid, &until, &owner)
	if err == nil && owner != m.id {
		var ours bool
		if ours, err = mergedFrom(ctx, t.tx, owner, m.id); err == nil && !ours {
			err = pgx.ErrNoRows
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, core.Errorf(core.NotFound, "order_id", "no order %q for this member",
			in.OrderID)
	}
	if err != nil {
		return nil, fmt.Errorf("lock order: %w", err)
	}
	if status != core.OrderPlaced {
		return nil, core.Errorf(core.Conflict, "order_id", "the order is %s", status)
	}
	if until == nil || t.now.After(*until) {
		return nil, core.Errorf(core.Conflict, "order_id", "the cancellation window is closed")
	}
	reason := in.Reason
	if reason == "" {
		reason = "order cancelled"
	}
	n := len(t.postings)
	back, recovered, err := t.reverseDebit(ctx, m, &original{id: pid, memberID: owner}, reason)
	if err != nil {
		return nil, err
	}
	cancelPosting := t.postings[n]
	_, err = t.tx.Exec(ctx, `UPDATE rewards SET redeemed = redeemed - $2,
		stock = CASE WHEN stock IS NULL THEN NULL ELSE LEAST(stock, 9223372036854775807 - $2) + $2 END
		WHERE id = $1`,
		rewardID, qty)
	if err != nil {
		return nil, fmt.Errorf("restore stock: %w", err)
	}
	_, err = t.tx.Exec(ctx, `UPDATE reward_orders SET status = 'cancelled', cancelled_at = $2,
		cancel_posting = $3 WHERE id = $1`, in.OrderID, t.now, cancelPosting)
	if err != nil {
		return nil, fmt.Errorf("cancel order: %w", err)
	}
	out := t.outcome(m, back)
	out.Recovered = core.Points(recovered)
	return out, nil
}

// tierNow is m's tier now: the level its qualification reaches now, as
// GET .../tier shows it, not the one recorded at its last review (which the
// window has moved past since, or a renaming of the levels left behind);
// "" below every level or in a program without tiers.
func (t *txn) tierNow(ctx context.Context, prog *program, m *member) (string, error) {
	tiers, err := t.programTiers(ctx, prog.ID)
	if err != nil || tiers == nil {
		return "", err
	}
	q, spend, err := t.tierQualification(ctx, tiers, m.id, t.now)
	if err != nil {
		return "", err
	}
	if lvl := tiers.Reached(q, spend); lvl != nil {
		return lvl.Code, nil
	}
	return "", nil
}

// voucherAlphabet leaves out letters that read like digits (I, L, O, U).
const voucherAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newVoucher returns a voucher code of 20 random symbols (100 bits) in
// groups of four: unguessable, and easy to read aloud.
func newVoucher() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 24)
	for i, x := range b {
		if i > 0 && i%4 == 0 {
			out = append(out, '-')
		}
		out = append(out, voucherAlphabet[x&31])
	}
	return string(out)
}

// trimDecimal drops trailing fraction zeros: "12.500000" becomes "12.5".
func trimDecimal(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] != '.' {
			continue
		}
		j := len(s)
		for j > i+1 && s[j-1] == '0' {
			j--
		}
		if j == i+1 {
			j = i
		}
		return s[:j]
	}
	return s
}
