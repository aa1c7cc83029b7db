package reporting

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// The reports of this file need what ClickHouse does not hold: lots (for
// expiry dates), members (for enrollment dates), partners and reward orders.
// They read the ledger in PostgreSQL, each with one plain query, and touch
// no table they do not name.

// Valued is a program's outstanding points and their worth.
type Valued struct {
	Outstanding

	// PerPoint is the value of one point the caller gave, and Value is
	// Points × PerPoint, exact, with at most 6 decimals (trailing zeros
	// dropped). The program keeps no value of its own for a point (its
	// points_per_unit is the earning rate, not a cost), so the finance
	// team passes the cost they book a point at.
	PerPoint string
	Value    string
}

// ValueLiabilities prices each outstanding balance at perPoint, a decimal
// string of the money one point is worth ("0.85"). Errors: invalid, when
// perPoint is not such a decimal or is negative.
func ValueLiabilities(out []Outstanding, perPoint string) ([]Valued, error) {
	v, err := core.ParseAmount("value_per_point", perPoint)
	if err != nil {
		return nil, err
	}
	if v.Sign() < 0 {
		return nil, core.Errorf(core.Invalid, "value_per_point", "must not be negative")
	}
	vals := make([]Valued, len(out))
	for i, o := range out {
		worth := new(big.Rat).Mul(v, new(big.Rat).SetInt64(o.Points))
		vals[i] = Valued{Outstanding: o, PerPoint: trimZeros(v.FloatString(6)),
			Value: trimZeros(worth.FloatString(6))}
	}
	return vals, nil
}

// trimZeros drops the trailing zeros of a decimal's fraction, and its point
// when nothing is left after it.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Expiring is the points that expire within a number of days from an
// instant, unless spent first.
type Expiring struct {
	Days int `json:"days"`

	// Points is the remaining points, less those held, of the program's
	// lots whose expires_at falls in [at, at + Days × 24h); pending lots
	// are included, since pending points expire like the others. Points
	// under an open hold are left out: a capture spends them, and a release
	// brings them back to be counted again.
	Points int64 `json:"points"`

	// Lots and Members count the lots and their distinct members.
	Lots    int64 `json:"lots"`
	Members int64 `json:"members"`
}

// expiringQuery sums one window per row of the days array.
const expiringQuery = `SELECT d.days,
		coalesce(sum(l.remaining - l.held), 0)::bigint,
		count(l.id), count(DISTINCT l.member_id)
	FROM unnest($3::int[]) AS d(days)
	LEFT JOIN (lots l JOIN members m ON m.id = l.member_id
		JOIN programs g ON g.id = m.program_id AND g.code = $1)
		ON l.remaining > l.held AND l.expires_at >= $2
			AND l.expires_at < $2 + make_interval(days => d.days)
	GROUP BY d.days
	ORDER BY d.days`

// PointsExpiring reports, for each number of days (30, 60 and 90 when none
// is given), the points of program that expire within that many days of at.
// The windows overlap: the 60-day figure includes the 30-day one.
func PointsExpiring(ctx context.Context, pg *pgxpool.Pool, program string, at time.Time,
	days ...int) ([]Expiring, error) {
	if len(days) == 0 {
		days = []int{30, 60, 90}
	}
	for _, d := range days {
		if d <= 0 || d > 3660 {
			return nil, core.Errorf(core.Invalid, "days", "must be from 1 to 3660, not %d", d)
		}
	}
	rows, err := pg.Query(ctx, expiringQuery, program, at.UTC(), days)
	if err != nil {
		return nil, fmt.Errorf("points expiring: %w", err)
	}
	defer rows.Close()
	var out []Expiring
	for rows.Next() {
		var e Expiring
		if err := rows.Scan(&e.Days, &e.Points, &e.Lots, &e.Members); err != nil {
			return nil, fmt.Errorf("points expiring: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("points expiring: %w", err)
	}
	return out, nil
}

// Activity is one bucket of a program's membership.
type Activity struct {
	// Start is the bucket's first day at midnight in the program's zone.
	Start time.Time `json:"start"`

	// Enrolled counts the members whose enrolled_at (PostgreSQL) falls in
	// the bucket.
	Enrolled int64 `json:"enrolled"`

	// Active counts the distinct members with at least one event in the
	// bucket (ClickHouse) other than what the ledger does on its own:
	// expiry and maturation. Accruals, redemptions, holds, adjustments,
	// transfers and the rest count, whoever sent them.
	Active uint64 `json:"active"`
}

// pgTrunc is the date_trunc field of each bucket; a PostgreSQL week starts
// on Monday, as ClickHouse's toMonday does.
var pgTrunc = map[Bucket]string{Day: "day", Week: "week", Month: "month"}

const enrolledQuery = `SELECT (date_trunc($2, m.enrolled_at AT TIME ZONE g.time_zone))::date,
		count(*)
	FROM members m JOIN programs g ON g.id = m.program_id
	WHERE g.code = $1 AND m.enrolled_at >= $3 AND m.enrolled_at < $4
	GROUP BY 1`

// Membership reports, per bucket of q's period in order, the members that
// enrolled and the members that were active. q.Program is required; both
// bounds of q's period are required too. Buckets with neither are left out.
func Membership(ctx context.Context, ch driver.Conn, pg *pgxpool.Pool,
	q FlowQuery) ([]Activity, error) {
	trunc, ok := pgTrunc[q.Bucket]
	if !ok {
		return nil, fmt.Errorf("membership: bucket %q: want day, week or month", q.Bucket)
	}
	if q.Program == "" || q.From.IsZero() || q.To.IsZero() {
		return nil, fmt.Errorf("membership: want a program and both bounds of the period")
	}
	loc, err := zone(q.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	byDay := map[string]*Activity{}
	get := func(day time.Time) *Activity {
		key := day.Format(time.DateOnly)
		if a, ok := byDay[key]; ok {
			return a
		}
		a := &Activity{Start: startOfDay(day, loc)}
		byDay[key] = a
		return a
	}

	// Enrollments, from PostgreSQL, cut in the program's own zone.
	from, to := q.From.UTC().Truncate(time.Second), q.To.UTC().Truncate(time.Second)
	rows, err := pg.Query(ctx, enrolledQuery, q.Program, trunc, from, to)
	if err != nil {
		return nil, fmt.Errorf("membership: read enrollments: %w", err)
	}
	for rows.Next() {
		var day time.Time
		var n int64
		if err := rows.Scan(&day, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("membership: read enrollments: %w", err)
		}
		get(day).Enrolled = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("membership: read enrollments: %w", err)
	}

	// Active members, from ClickHouse.
	where, args := periodFilter(q.Program, q.From, q.To)
	crows, err := ch.Query(ctx, `SELECT `+bucketExpr[q.Bucket]+` AS bucket, uniqExact(member)
		FROM (SELECT occurred_at AS at, member FROM ledger_events FINAL
			WHERE `+where+` AND `+countedEvents+` AND kind NOT IN (`+
		quoteList(core.PostExpiry, core.PostMaturation)+`))
		GROUP BY bucket`, append([]any{q.TimeZone}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("membership: read active members: %w", err)
	}
	defer crows.Close()
	for crows.Next() {
		var day time.Time
		var n uint64
		if err := crows.Scan(&day, &n); err != nil {
			return nil, fmt.Errorf("membership: read active members: %w", err)
		}
		get(day).Active = n
	}
	if err := crows.Err(); err != nil {
		return nil, fmt.Errorf("membership: read active members: %w", err)
	}

	out := make([]Activity, 0, len(byDay))
	for _, a := range byDay {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b Activity) int { return a.Start.Compare(b.Start) })
	return out, nil
}

// Settler is the ledger's settlement of one partner; *postgres.Ledger is
// one. The reports reuse it rather than sum captures and refunds again.
type Settler interface {
	Settlement(ctx context.Context, program, partner string,
		from, to time.Time) (*postgres.Settlement, error)
}

// PartnerSettlement is one partner's settlement over a period, without
// its transactions (GET .../partners/{partner}/settlement lists them).
type PartnerSettlement struct {
	Partner  string `json:"partner"`
	Currency string `json:"currency"`
	// PointValueNow is the partner's point value today, which new payments
	// take; Value prices each payment at the value in force when it was
	// made, so Net times PointValueNow need not be Value.
	PointValueNow string      `json:"point_value_now"`
	Captured      core.Points `json:"captured"`
	Refunded      core.Points `json:"refunded"`
	Reversed      core.Points `json:"reversed"`
	Net           core.Points `json:"net"`
	Value         string      `json:"value"`
	Lines         int         `json:"transactions"`
}

// Settlements reports, for every partner of program in order of code, its
// captures minus its refunds in [from, to) as the ledger's Settlement
// computes them.
func Settlements(ctx context.Context, pg *pgxpool.Pool, ledger Settler, program string,
	from, to time.Time) ([]PartnerSettlement, error) {
	rows, err := pg.Query(ctx, `SELECT pa.code FROM partners pa
		JOIN programs g ON g.id = pa.program_id WHERE g.code = $1 ORDER BY pa.code`, program)
	if err != nil {
		return nil, fmt.Errorf("settlements: read partners: %w", err)
	}
	var codes []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("settlements: read partners: %w", err)
		}
		codes = append(codes, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("settlements: read partners: %w", err)
	}

	out := make([]PartnerSettlement, 0, len(codes))
	for _, code := range codes {
		s, err := ledger.Settlement(ctx, program, code, from, to)
		if err != nil {
			return nil, fmt.Errorf("settlements: partner %s: %w", code, err)
		}
		out = append(out, PartnerSettlement{Partner: s.Partner, Currency: s.Currency,
			PointValueNow: s.PointValue, Captured: s.Captured, Refunded: s.Refunded,
			Reversed: s.Reversed, Net: s.Net,
			Value: s.Value, Lines: len(s.Lines)})
	}
	return out, nil
}

// RewardRank is one reward of the catalog with what its orders took.
type RewardRank struct {
	Reward string `json:"reward"`
	Name   string `json:"name"`

	// Orders, Quantity and Points sum the orders placed in the period and
	// not cancelled since.
	Orders   int64 `json:"orders"`
	Quantity int64 `json:"quantity"`
	Points   int64 `json:"points"`
}

const topRewardsQuery = `SELECT r.code, r.name, count(*), sum(o.quantity)::bigint,
		sum(o.points)::bigint
	FROM reward_orders o JOIN rewards r ON r.id = o.reward_id
	JOIN programs g ON g.id = o.program_id
	WHERE g.code = $1 AND o.status = 'placed' AND o.created_at >= $2 AND o.created_at < $3
	GROUP BY r.code, r.name
	ORDER BY 4 DESC, 5 DESC, r.code
	LIMIT $4`

// TopRewards reports the rewards of program most ordered in [from, to),
// by units, then points, then code; at most limit of them (1 to 1000).
func TopRewards(ctx context.Context, pg *pgxpool.Pool, program string, from, to time.Time,
	limit int) ([]RewardRank, error) {
	if limit <= 0 || limit > 1000 {
		return nil, core.Errorf(core.Invalid, "limit", "must be from 1 to 1000")
	}
	rows, err := pg.Query(ctx, topRewardsQuery, program, from.UTC(), to.UTC(), limit)
	if err != nil {
		return nil, fmt.Errorf("top rewards: %w", err)
	}
	defer rows.Close()
	out := []RewardRank{}
	for rows.Next() {
		var r RewardRank
		if err := rows.Scan(&r.Reward, &r.Name, &r.Orders, &r.Quantity, &r.Points); err != nil {
			return nil, fmt.Errorf("top rewards: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("top rewards: %w", err)
	}
	return out, nil
}

// AddHeld adds to each program's outstanding points (and Held) what holds
// open at the instant at reserve, from the ledger: events count a hold as
// spent when it is placed, but until it is captured the member owns those
// points. Now (at zero, or not before now) reads the open holds; a past
// instant the holds placed by then and not yet closed.
func AddHeld(ctx context.Context, pg *pgxpool.Pool, out []Outstanding, at,
	now time.Time) error {
	q := `SELECT g.code, sum(h.amount)::bigint FROM holds h
		JOIN members m ON m.id = h.member_id JOIN programs g ON g.id = m.program_id
		WHERE h.status = 'open' GROUP BY g.code`
	var args []any
	if !at.IsZero() && at.Before(now) {
		q = `SELECT g.code, sum(h.amount)::bigint FROM holds h
			JOIN members m ON m.id = h.member_id JOIN programs g ON g.id = m.program_id
			WHERE h.created_at < $1 AND (h.closed_at IS NULL OR h.closed_at >= $1)
			GROUP BY g.code`
		args = append(args, at.UTC().Truncate(time.Second))
	}
	rows, err := pg.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("held points: %w", err)
	}
	defer rows.Close()
	held := map[string]int64{}
	for rows.Next() {
		var code string
		var n int64
		if err := rows.Scan(&code, &n); err != nil {
			return fmt.Errorf("held points: %w", err)
		}
		held[code] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("held points: %w", err)
	}
	for i := range out {
		out[i].Held = held[out[i].Program]
		out[i].Points += out[i].Held
	}
	return nil
}
