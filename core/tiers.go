package core

import (
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Tiers are a program's member levels. A member qualifies for a level by
// what they accrued in a rolling window that ends at the moment considered:
// by basis "points" (the default) the points of their accruals, by basis
// "spend" the money amounts, in the program's currency, of the accrual
// events that posted points. Accruals count by when they occurred, a
// reversed accrual stops counting, and redemptions, expiry and other debits
// never lower it. The highest level whose minimum is reached applies; a
// member moves up as soon as an accrual qualifies them and down when, at a
// later review (the next accrual or a tier read), the window no longer
// holds enough.
type Tiers struct {
	WindowDays int         `json:"window_days"`
	Basis      string      `json:"basis,omitempty"`
	Levels     []TierLevel `json:"levels"`
}

// Tier qualification bases.
const (
	TierBasisPoints = "points"
	TierBasisSpend  = "spend"
)

// TierLevel is one level: its code, the qualifying points (basis points) or
// spend (basis spend, a decimal string in the program's currency), and the
// multiplier its members' rule points get (at least "1").
type TierLevel struct {
	Code       string `json:"code"`
	MinPoints  Points `json:"min_points"`
	MinSpend   string `json:"min_spend,omitempty"`
	Multiplier string `json:"multiplier"`
}

// TierChange is one entry of a member's tier history.
type TierChange struct {
	From          string    `json:"from"`
	To            string    `json:"to"`
	Qualification Points    `json:"qualification"`
	Spend         string    `json:"spend,omitempty"`
	ChangedAt     time.Time `json:"changed_at"`
	Reason        string    `json:"reason"`
}

// TierStatus is a member's tier as of a moment, with its history.
type TierStatus struct {
	Tier          string       `json:"tier"`
	Qualification Points       `json:"qualification"`
	Basis         string       `json:"basis"`
	Spend         string       `json:"spend,omitempty"`
	WindowDays    int          `json:"window_days"`
	Since         time.Time    `json:"window_start"`
	History       []TierChange `json:"history"`
}

// Validate checks the levels: codes, ascending minimums, multipliers.
func (t *Tiers) Validate() error {
	if t.WindowDays < 1 || t.WindowDays > 3660 {
		return Errorf(Invalid, "window_days", "must be between 1 and 3660")
	}
	if len(t.Levels) > 20 {
		return Errorf(Invalid, "levels", "has at most 20 levels")
	}
	if t.Basis != "" && t.Basis != TierBasisPoints && t.Basis != TierBasisSpend {
		return Errorf(Invalid, "basis", "must be points or spend")
	}
	seen := map[string]bool{}
	var prevSpend *big.Rat
	for i, l := range t.Levels {
		at := fmt.Sprintf("levels[%d]", i)
		if !codeOK(l.Code) || seen[l.Code] {
			return Errorf(Invalid, at+".code", "must be a distinct code of 1-64 letters, "+
				"digits, '-' or '_'")
		}
		seen[l.Code] = true
		if t.BySpend() {
			min, err := t.minSpend(i)
			if err != nil {
				return err
			}
			if l.MinPoints != 0 {
				return Errorf(Invalid, at+".min_points", "must be unset when the basis is spend")
			}
			if prevSpend != nil && min.Cmp(prevSpend) <= 0 {
				return Errorf(Invalid, at+".min_spend", "must be above the previous level's")
			}
			prevSpend = min
		} else {
			if l.MinSpend != "" {
				return Errorf(Invalid, at+".min_spend", "is only for the basis spend")
			}
			if l.MinPoints < 0 || l.MinPoints > MaxPoints {
				return Errorf(Invalid, at+".min_points", "must be between 0 and %d", MaxPoints)
			}
			if i > 0 && l.MinPoints <= t.Levels[i-1].MinPoints {
				return Errorf(Invalid, at+".min_points", "must be above the previous level's")
			}
		}
		m, err := ParseRate(at+".multiplier", l.Multiplier)
		if err != nil {
			return err
		}
		if m.Cmp(big.NewRat(1, 1)) < 0 || m.Cmp(big.NewRat(10, 1)) > 0 {
			return Errorf(Invalid, at+".multiplier", "must be between 1 and 10")
		}
	}
	return nil
}

// BySpend tells whether members qualify by spend rather than points.
func (t *Tiers) BySpend() bool {
	return t.Basis == TierBasisSpend
}

// minSpend parses level i's min_spend: a non-negative decimal string.
func (t *Tiers) minSpend(i int) (*big.Rat, error) {
	field := fmt.Sprintf("levels[%d].min_spend", i)
	v, err := ParseAmount(field, t.Levels[i].MinSpend)
	if err != nil {
		return nil, err
	}
	if v.Sign() < 0 {
		return nil, Errorf(Invalid, field, "must not be negative")
	}
	return v, nil
}

// Level returns the level that qualification q reaches, or nil for none.
// With the basis spend, LevelBySpend applies instead.
func (t *Tiers) Level(q Points) *TierLevel {
	var out *TierLevel
	for i := range t.Levels {
		if q >= t.Levels[i].MinPoints {
			out = &t.Levels[i]
		}
	}
	return out
}

// LevelBySpend returns the level that spend reaches, or nil for none. The
// levels must have been validated.
func (t *Tiers) LevelBySpend(spend *big.Rat) *TierLevel {
	var out *TierLevel
	for i := range t.Levels {
		min, err := t.minSpend(i)
		if err == nil && spend.Cmp(min) >= 0 {
			out = &t.Levels[i]
		}
	}
	return out
}

// Reached returns the level that a qualification reaches by the basis of t:
// points q, or spend (nil counts as zero).
func (t *Tiers) Reached(q Points, spend *big.Rat) *TierLevel {
	if !t.BySpend() {
		return t.Level(q)
	}
	if spend == nil {
		spend = new(big.Rat)
	}
	return t.LevelBySpend(spend)
}

// WindowStart is the start of the qualification window ending at at.
func (t *Tiers) WindowStart(at time.Time) time.Time {
	return at.Add(-time.Duration(t.WindowDays) * 24 * time.Hour)
}

// FormatDecimal prints an exact decimal amount (at most 6 fraction digits,
// as ParseAmount takes them) without trailing fraction zeros: "15000.5".
func FormatDecimal(r *big.Rat) string {
	s := r.FloatString(6)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
