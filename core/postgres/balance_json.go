package postgres

import (
	"strconv"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/plainjson"
)

// AppendJSON appends v as encoding/json would encode it, and fails where
// it would (an instant RFC 3339 cannot write). The balance is the
// busiest read of the API and a member holds dozens of lots, each with three
// instants: encoding them by reflection cost more than reading them
// (docs/benchmarks.md). TestBalanceJSON holds the two encodings equal.
func (v *BalanceView) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"member":`...)
	b = plainjson.AppendString(b, v.Member)
	b = append(b, `,"program":`...)
	b = plainjson.AppendString(b, v.Program)
	b = append(b, `,"status":`...)
	b = plainjson.AppendString(b, v.Status)
	b = append(b, `,"balance":{"available":`...)
	b = strconv.AppendInt(b, int64(v.Balance.Available), 10)
	b = append(b, `,"pending":`...)
	b = strconv.AppendInt(b, int64(v.Balance.Pending), 10)
	b = append(b, `,"held":`...)
	b = strconv.AppendInt(b, int64(v.Balance.Held), 10)
	b = append(b, '}')
	var err error
	if v.Lots != nil {
		b = append(b, `,"lots":`...)
		if b, err = appendLots(b, v.Lots); err != nil {
			return nil, err
		}
	}
	if v.LotsTruncated {
		b = append(b, `,"lots_truncated":true`...)
	}
	b = append(b, `,"next_expiries":`...)
	if v.NextExpiries == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, e := range v.NextExpiries {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"expires_at":`...)
			if b, err = plainjson.AppendTime(b, e.ExpiresAt); err != nil {
				return nil, err
			}
			b = append(b, `,"points":`...)
			b = strconv.AppendInt(b, int64(e.Points), 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"as_of":`...)
	if b, err = plainjson.AppendTime(b, v.AsOf); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendLots appends a list of lots (never nil: a summary leaves the key
// out).
func appendLots(b []byte, lots []core.Lot) ([]byte, error) {
	var err error
	b = append(b, '[')
	for i := range lots {
		l := &lots[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, l.ID, 10)
		b = append(b, `,"earned_at":`...)
		if b, err = plainjson.AppendTime(b, l.EarnedAt); err != nil {
			return nil, err
		}
		b = append(b, `,"spendable_from":`...)
		if b, err = plainjson.AppendTime(b, l.SpendableFrom); err != nil {
			return nil, err
		}
		if l.ExpiresAt != nil {
			b = append(b, `,"expires_at":`...)
			if b, err = plainjson.AppendTime(b, *l.ExpiresAt); err != nil {
				return nil, err
			}
		}
		b = append(b, `,"pending":`...)
		b = strconv.AppendBool(b, l.Pending)
		b = append(b, `,"original":`...)
		b = strconv.AppendInt(b, int64(l.Original), 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, int64(l.Remaining), 10)
		b = append(b, `,"held":`...)
		b = strconv.AppendInt(b, int64(l.Held), 10)
		b = append(b, '}')
	}
	return append(b, ']'), nil
}
