package core

import (
	"math/big"
	"strings"
	"testing"
)

// decimalOf computes the exact value of a decimal string the slow way, digit
// by digit, so that ParseAmount is checked against an independent reading.
func decimalOf(s string) *big.Rat {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, _ := strings.Cut(s, ".")
	num, scale := new(big.Int), big.NewInt(1)
	ten := big.NewInt(10)
	for _, c := range whole + frac {
		num.Mul(num, ten)
		num.Add(num, big.NewInt(int64(c-'0')))
	}
	for range frac {
		scale.Mul(scale, ten)
	}
	if neg {
		num.Neg(num)
	}
	return new(big.Rat).SetFrac(num, scale)
}

// FuzzParseAmount: any string is either refused as invalid, naming the
// field, or read exactly; what is read prints back to a decimal that reads
// to the same value.
func FuzzParseAmount(f *testing.F) {
	// Around the bounds of the int64 fast path (smallDecimal) and of the
	// grammar: every one is read exactly as the general path would.
	for _, s := range []string{"0", "-0", "0.", ".5", "+1", "1e3", "-", "", " 12 ", "12.",
		"00012.500000", "123456789012.123456", "1234567890123.123456",
		"123456789012345.123456", "-123456789012345.123456", "1234567890123456",
		"999999999999999.999999", "999999999999.999999", "9999999999999.99999",
		"1.2345678", "1..2", "1.2.3", "--1", "\u0661\u0662", "12\x00", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAmount("amount", s)
		if (err == nil) != decimalRE.MatchString(strings.TrimSpace(s)) {
			t.Fatalf("ParseAmount(%q): error %v, but the grammar says %v", s, err,
				decimalRE.MatchString(strings.TrimSpace(s)))
		}
		if err != nil {
			de, ok := AsError(err)
			if !ok || de.Kind != Invalid || de.Field != "amount" {
				t.Fatalf("ParseAmount(%q): %v is not an invalid error about amount", s, err)
			}
			return
		}
		if want := decimalOf(s); r.Cmp(want) != 0 {
			t.Fatalf("ParseAmount(%q) = %s, want %s", s, r.RatString(), want.RatString())
		}
		printed := r.FloatString(6)
		back, err := ParseAmount("amount", printed)
		if err != nil || back.Cmp(r) != 0 {
			t.Fatalf("ParseAmount(%q) printed as %q reads back as %v, %v", s, printed, back, err)
		}
	})
}

// FuzzRound: any fraction and any mode either rounds to whole points no
// further than the mode allows, or is refused as invalid naming a field.
func FuzzRound(f *testing.F) {
	f.Fuzz(func(t *testing.T, num, den int64, mode string) {
		if den == 0 {
			return
		}
		x := big.NewRat(num, den)
		p, err := Round(x, Rounding(mode))
		if err != nil {
			de, ok := AsError(err)
			if !ok || de.Kind != Invalid || (de.Field != "rounding" && de.Field != "amount") {
				t.Fatalf("Round(%s, %q): %v is not an invalid error naming a field",
					x.RatString(), mode, err)
			}
			if de.Field == "rounding" && Rounding(mode).Valid() {
				t.Fatalf("Round(%s, %q) refused a valid mode", x.RatString(), mode)
			}
			return
		}
		if p > MaxPoints || p < -MaxPoints {
			t.Fatalf("Round(%s, %q) = %d, beyond MaxPoints", x.RatString(), mode, p)
		}
		// diff = |x| - |p|: how far the rounding moved the magnitude.
		ax := new(big.Rat).Abs(x)
		ap := new(big.Rat).SetInt64(int64(p))
		ap.Abs(ap)
		diff := new(big.Rat).Sub(ax, ap)
		if x.Sign() != 0 && p != 0 && (x.Sign() < 0) != (p < 0) {
			t.Fatalf("Round(%s, %q) = %d: the sign changed", x.RatString(), mode, p)
		}
		one, half := big.NewRat(1, 1), big.NewRat(1, 2)
		abs := new(big.Rat).Abs(diff)
		switch Rounding(mode) {
		case RoundDown:
			if diff.Sign() < 0 || diff.Cmp(one) >= 0 {
				t.Fatalf("Round(%s, down) = %d", x.RatString(), p)
			}
		case RoundUp:
			if diff.Sign() > 0 || abs.Cmp(one) >= 0 {
				t.Fatalf("Round(%s, up) = %d", x.RatString(), p)
			}
		case RoundHalfUp, RoundHalfEven:
			if abs.Cmp(half) > 0 {
				t.Fatalf("Round(%s, %s) = %d, more than half away", x.RatString(), mode, p)
			}
			if abs.Cmp(half) == 0 && mode == string(RoundHalfUp) && diff.Sign() > 0 {
				t.Fatalf("Round(%s, half_up) = %d: a half went toward zero", x.RatString(), p)
			}
			if abs.Cmp(half) == 0 && mode == string(RoundHalfEven) && p%2 != 0 {
				t.Fatalf("Round(%s, half_even) = %d: a half went to odd", x.RatString(), p)
			}
		default:
			if x.IsInt() {
				return // whole numbers need no mode
			}
			t.Fatalf("Round(%s, %q) accepted an unknown mode", x.RatString(), mode)
		}
	})
}

// FuzzCompileRule: any condition and any decimal strings either compile or
// are refused as invalid naming a field; CEL never panics on what a caller
// writes.
func FuzzCompileRule(f *testing.F) {
	f.Fuzz(func(t *testing.T, cond, rate string, kind string) {
		r := Rule{Code: "r1", EventType: "*", Condition: cond, Rounding: RoundDown,
			Formula: Formula{Kind: kind, Rate: rate, Factor: rate, Points: 10,
				Bands: []Band{{From: "0", Rate: rate}}}}
		c, err := CompileRule(r)
		if err != nil {
			de, ok := AsError(err)
			if !ok || de.Kind != Invalid || de.Field == "" {
				t.Fatalf("CompileRule(%q, %q, %q): %v is not an invalid error naming a field",
					cond, rate, kind, err)
			}
			return
		}
		if c.prg == nil && strings.TrimSpace(cond) != "" {
			t.Fatalf("CompileRule(%q) accepted a condition without a program", cond)
		}
	})
}
