// Package core is the loyalty domain of Puntos: programs, members, lots,
// postings and the commands that change them. It knows no transport and no
// database; core/postgres stores it.
package core

import (
	"math/big"
	"regexp"
	"strings"

	"golang.org/x/text/currency"
)

// Points is an amount of loyalty points. Points are whole: every conversion
// into points names its rounding.
type Points int64

// MaxPoints bounds the points of any single operation, so that no sum of
// operations can come near the limits of int64.
const MaxPoints Points = 1_000_000_000_000

// CheckPoints validates the points of one operation: positive and bounded.
func CheckPoints(field string, p Points) error {
	if p <= 0 {
		return Errorf(Invalid, field, "must be a positive whole number of points")
	}
	if p > MaxPoints {
		return Errorf(Invalid, field, "must not exceed %d", MaxPoints)
	}
	return nil
}

// Rounding names how a fractional number of points becomes whole.
type Rounding string

// The rounding modes.
const (
	RoundDown     Rounding = "down"      // toward zero
	RoundUp       Rounding = "up"        // away from zero
	RoundHalfUp   Rounding = "half_up"   // nearest, halves away from zero
	RoundHalfEven Rounding = "half_even" // nearest, halves to the even neighbour
)

// Valid reports whether r is a known rounding mode.
func (r Rounding) Valid() bool {
	switch r {
	case RoundDown, RoundUp, RoundHalfUp, RoundHalfEven:
		return true
	}
	return false
}

var decimalRE = regexp.MustCompile(`^-?[0-9]{1,15}(\.[0-9]{1,6})?$`)

// ParseAmount parses a money amount written as a decimal string ("12990.50").
// Amounts are exact: no binary floating point is involved.
func ParseAmount(field, s string) (*big.Rat, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, Errorf(Invalid, field, "is required")
	}
	if r, ok := smallDecimal(s); ok {
		return r, nil
	}
	if !decimalRE.MatchString(s) {
		return nil, Errorf(Invalid, field,
			"must be a decimal number with at most 15 integer and 6 fraction digits, got %q", s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, Errorf(Invalid, field, "must be a decimal number, got %q", s)
	}
	return r, nil
}

// smallDecimal reads s when it has the shape decimalRE accepts and at most
// 18 digits in all, which an int64 holds: every amount a till or a bill
// writes. It reports false for anything else, which ParseAmount then reads
// the general way. It is ParseAmount's hot path: one runs per accrual.
func smallDecimal(s string) (*big.Rat, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	whole, frac, dot := strings.Cut(s, ".")
	if len(whole) < 1 || len(whole) > 15 || len(frac) > 6 || (dot && len(frac) == 0) ||
		len(whole)+len(frac) > 18 {
		return nil, false
	}
	var n, den int64 = 0, 1
	for _, part := range [2]string{whole, frac} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return nil, false
			}
			n = n*10 + int64(c-'0')
		}
	}
	for range len(frac) {
		den *= 10
	}
	if neg {
		n = -n
	}
	if den == 1 {
		return new(big.Rat).SetInt64(n), true
	}
	return new(big.Rat).SetFrac64(n, den), true
}

// ParseRate parses a conversion rate such as points per currency unit.
func ParseRate(field, s string) (*big.Rat, error) {
	r, err := ParseAmount(field, s)
	if err != nil {
		return nil, err
	}
	if r.Sign() < 0 {
		return nil, Errorf(Invalid, field, "must not be negative")
	}
	return r, nil
}

// Round turns an exact quantity into whole points with the given rounding.
func Round(x *big.Rat, mode Rounding) (Points, error) {
	num, den := new(big.Int).Set(x.Num()), x.Denom()
	neg := num.Sign() < 0
	num.Abs(num)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() != 0 {
		twice := new(big.Int).Lsh(r, 1)
		cmp := twice.Cmp(den)
		switch mode {
		case RoundDown:
		case RoundUp:
			q.Add(q, big.NewInt(1))
		case RoundHalfUp:
			if cmp >= 0 {
				q.Add(q, big.NewInt(1))
			}
		case RoundHalfEven:
			if cmp > 0 || (cmp == 0 && q.Bit(0) == 1) {
				q.Add(q, big.NewInt(1))
			}
		default:
			return 0, Errorf(Invalid, "rounding", "unknown rounding %q", mode)
		}
	}
	if !q.IsInt64() || Points(q.Int64()) > MaxPoints {
		return 0, Errorf(Invalid, "amount", "converts to more than %d points", MaxPoints)
	}
	p := Points(q.Int64())
	if neg {
		p = -p
	}
	return p, nil
}

// Convert turns a money amount into points at rate points per unit.
func Convert(amount, rate *big.Rat, mode Rounding) (Points, error) {
	return Round(new(big.Rat).Mul(amount, rate), mode)
}

// isoDigits are the currencies whose ISO 4217 minor unit is more than
// CLDR's standard digits (Iraqi dinars have three fils digits in ISO, none
// in CLDR), and the units of account with four.
var isoDigits = map[string]int{"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3,
	"TND": 3, "CLF": 4, "UYW": 4}

// CheckAmountDigits refuses an amount written with more fraction digits
// than its currency has (ISO 4217, as CLDR gives them: two for USD, three
// for KWD), and never fewer than two: cents are taken in every currency,
// pesos and yen included (a prorated charge carries them). In Chile and
// much of Europe a point separates thousands, and "12.990" pesos are twelve
// thousand nine hundred and ninety, which read as a decimal would earn a
// thousandth of the points: three digits after the point in a currency of
// two or none are such a number, or an amount no till charges, and either
// way a caller's mistake to be told, not rounded. An unknown code is left to
// the checks of currencies.
func CheckAmountDigits(field, amount, code string) error {
	u, err := currency.ParseISO(code)
	if err != nil {
		return nil
	}
	scale, _ := currency.Standard.Rounding(u)
	scale = max(scale, isoDigits[code], 2)
	_, frac, ok := strings.Cut(strings.TrimSpace(amount), ".")
	if !ok || len(frac) <= scale {
		return nil
	}
	return Errorf(Invalid, field, "%s amounts have at most %d fraction digits: %q has %d "+
		"(a point is the decimal point here, never a thousands separator: twelve thousand "+
		"nine hundred and ninety is 12990)", code, scale, amount, len(frac))
}
