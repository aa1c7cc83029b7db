package core

import (
	"fmt"
	"math/big"
	"time"
)

// Tiers are a program's member levels. A member qualifies for a level by the
// points accrued in a rolling window that ends at the moment considered:
// accruals count by when they occurred, a reversed accrual stops counting,
// and redemptions, expiry and other debits never lower it. The highest level
// whose minimum is reached applies; a member moves up as soon as an accrual
// qualifies them and down when, at a later review (the next accrual or a
// tier read), the window no longer holds enough points.
type Tiers struct {
	WindowDays int         `json:"window_days"`
	Levels     []TierLevel `json:"levels"`
}

// TierLevel is one level: its code, the qualifying points and the
// multiplier its members' rule points get (at least "1").
type TierLevel struct {
	Code       string `json:"code"`
	MinPoints  Points `json:"min_points"`
	Multiplier string `json:"multiplier"`
}

// TierChange is one entry of a member's tier history.
type TierChange struct {
	From          string    `json:"from"`
	To            string    `json:"to"`
	Qualification Points    `json:"qualification"`
	ChangedAt     time.Time `json:"changed_at"`
	Reason        string    `json:"reason"`
}

// TierStatus is a member's tier as of a moment, with its history.
type TierStatus struct {
	Tier          string       `json:"tier"`
	Qualification Points       `json:"qualification"`
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
	seen := map[string]bool{}
	for i, l := range t.Levels {
		at := fmt.Sprintf("levels[%d]", i)
		if !codeOK(l.Code) || seen[l.Code] {
			return Errorf(Invalid, at+".code", "must be a distinct code of 1-64 letters, "+
				"digits, '-' or '_'")
		}
		seen[l.Code] = true
		if l.MinPoints < 0 || l.MinPoints > MaxPoints {
			return Errorf(Invalid, at+".min_points", "must be between 0 and %d", MaxPoints)
		}
		if i > 0 && l.MinPoints <= t.Levels[i-1].MinPoints {
			return Errorf(Invalid, at+".min_points", "must be above the previous level's")
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

// Level returns the level that qualification q reaches, or nil for none.
func (t *Tiers) Level(q Points) *TierLevel {
	var out *TierLevel
	for i := range t.Levels {
		if q >= t.Levels[i].MinPoints {
			out = &t.Levels[i]
		}
	}
	return out
}

// WindowStart is the start of the qualification window ending at at.
func (t *Tiers) WindowStart(at time.Time) time.Time {
	return at.Add(-time.Duration(t.WindowDays) * 24 * time.Hour)
}
