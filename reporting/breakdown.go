package reporting

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/core"
)

// Dimension is what a breakdown of the flows groups by, besides program and
// bucket.
type Dimension string

// Dimensions. Each is a column of the events; an event without a value (a
// posting no rule made, no partner took part in, or no channel named)
// falls in the group of the empty string. ByTier groups by the member's
// tier level when the ledger recorded the event; a member without one, and
// every event copied before events carried a tier, falls in the group of
// the empty string too.
const (
	ByChannel Dimension = "channel"
	ByRule    Dimension = "rule_version"
	ByPartner Dimension = "partner"
	ByTier    Dimension = "tier"
)

// dimensionColumn maps each Dimension to its column; it is also the list of
// the dimensions a query may use, so no other text reaches the SQL.
var dimensionColumn = map[Dimension]string{
	ByChannel: "channel",
	ByRule:    "rule_version",
	ByPartner: "partner",
	ByTier:    "tier",
}

// ParseDimension reads a dimension name, as a report's query string gives
// it; "rule" is short for rule_version. Errors: invalid.
func ParseDimension(s string) (Dimension, error) {
	if s == "rule" {
		return ByRule, nil
	}
	if _, ok := dimensionColumn[Dimension(s)]; ok {
		return Dimension(s), nil
	}
	return "", core.Errorf(core.Invalid, "by", "must be channel, rule (or rule_version), partner or tier, "+
		"not %q", s)
}

// FlowsBy is the flows of one program, bucket and value of a dimension.
type FlowsBy struct {
	Flows

	// Key is the dimension's value: a channel, a rule version, a partner
	// code or a tier level, empty for the events without one.
	Key string
}

// PointFlowsBy reports the flows of q's period per program, bucket and
// value of dim, in that order. The columns mean what they mean in Flows;
// Issued, Redeemed, Expired and AdjustedDown are the issue's "issued,
// redeemed, expired and adjusted". Summed over the keys of a bucket, the
// rows give PointFlows' row for the bucket.
func PointFlowsBy(ctx context.Context, conn driver.Conn, q FlowQuery,
	dim Dimension) ([]FlowsBy, error) {
	col, ok := dimensionColumn[dim]
	if !ok {
		return nil, fmt.Errorf("point flows by: dimension %q: want channel, rule_version, "+
			"partner or tier", dim)
	}
	expr, ok := bucketExpr[q.Bucket]
	if !ok {
		return nil, fmt.Errorf("point flows by: bucket %q: want day, week or month", q.Bucket)
	}
	loc, err := zone(q.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("point flows by: %w", err)
	}

	src, args := flowSource(q.Program, q.From, q.To, wholeHours(loc))
	query := `SELECT program, ` + expr + ` AS bucket, ` + col + ` AS key, ` + flowsColumns + `
		FROM ` + src + `
		GROUP BY program, bucket, key
		ORDER BY program, bucket, key`
	rows, err := conn.Query(ctx, query, append([]any{q.TimeZone}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("point flows by %s: %w", dim, err)
	}
	defer rows.Close()

	var out []FlowsBy
	for rows.Next() {
		var f FlowsBy
		var day time.Time
		err := rows.Scan(&f.Program, &day, &f.Key, &f.Issued, &f.Redeemed, &f.Expired,
			&f.AdjustedDown, &f.ClawedBack, &f.Returned, &f.Forfeited, &f.Moved, &f.Net,
			&f.Events)
		if err != nil {
			return nil, fmt.Errorf("point flows by %s: %w", dim, err)
		}
		f.Start = startOfDay(day, loc)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("point flows by %s: %w", dim, err)
	}
	return out, nil
}

// Breakage is the share of the points issued over a period that expired
// over the same period.
//
// The rate is Expired / Issued, both as Flows counts them over [From, To):
// issued is accruals, credits and positive adjustments; expired is the
// points the expiry sweep took. It is a flow ratio, not a cohort one: points
// expiring in the period may have been issued long before it, so over a
// short period the rate can exceed 1. Over a period as long as the
// program's expiry rule, or longer, it approaches the cohort breakage.
type Breakage struct {
	Program string    `json:"program"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Issued  int64     `json:"issued"`
	Expired int64     `json:"expired"`
	// Rate is Expired / Issued as a decimal with 4 places, rounded half
	// away from zero; empty when nothing was issued.
	Rate string `json:"rate"`
}

// BreakageRate reports the breakage of program over [from, to) (see
// Breakage). Both bounds are required.
func BreakageRate(ctx context.Context, conn driver.Conn, program string,
	from, to time.Time) (Breakage, error) {
	if program == "" || from.IsZero() || to.IsZero() || !from.Before(to) {
		return Breakage{}, errors.New("breakage: want a program and a period with from < to")
	}
	src, args := flowSource(program, from, to, true)
	b := Breakage{Program: program, From: from.UTC(), To: to.UTC()}
	// Without GROUP BY the aggregates give one row, of zeros when no event
	// occurred in the period.
	var f Flows
	err := conn.QueryRow(ctx, `SELECT `+flowsColumns+`
		FROM `+src, args...).Scan(&f.Issued, &f.Redeemed,
		&f.Expired, &f.AdjustedDown, &f.ClawedBack, &f.Returned, &f.Forfeited, &f.Moved,
		&f.Net, &f.Events)
	if err != nil {
		return Breakage{}, fmt.Errorf("breakage: %w", err)
	}
	b.Issued, b.Expired = f.Issued, f.Expired
	if b.Issued != 0 {
		b.Rate = ratio(b.Expired, b.Issued, 4)
	}
	return b, nil
}

// ratio writes num/den with places decimals, rounded half away from zero.
func ratio(num, den int64, places int) string {
	r := new(big.Rat).SetFrac(big.NewInt(num), big.NewInt(den))
	return r.FloatString(places)
}
