package core

import (
	"time"
)

// EventExpiryNotice is the kind of the bus event that warns of points about
// to expire. It moves no points: its Points field is 0, and what expires is
// told in its detail, an ExpiryNotice.
const EventExpiryNotice = "expiry_notice"

// DefaultNoticeDays are the thresholds, in days before expiry, at which
// members are warned of their expiring points unless configured otherwise.
var DefaultNoticeDays = []int{30, 7, 1}

// MaxNoticeDays bounds a notice threshold and the window of an expiring
// points listing.
const MaxNoticeDays = 3650

// ExpiryNotice is the detail of an expiry_notice event: the points of one
// member that expire within ThresholdDays days (of 24 hours) of AsOf, lot by
// lot. Each lot is announced at most once per threshold; a lot found within
// several thresholds at once is announced under the smallest only.
type ExpiryNotice struct {
	ThresholdDays int         `json:"threshold_days"`
	AsOf          time.Time   `json:"as_of"`
	Points        Points      `json:"points"`
	ExpiresAt     time.Time   `json:"expires_at"` // the earliest expiry of the lots
	Lots          []NoticeLot `json:"lots"`
}

// NoticeLot is one lot of an expiry notice: its points that will expire
// (the remaining points not reserved by a hold) and when.
type NoticeLot struct {
	LotID     int64     `json:"lot_id"`
	Points    Points    `json:"points"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CheckNoticeDays validates a set of notice thresholds: each between 1 and
// MaxNoticeDays days, none twice.
func CheckNoticeDays(days []int) error {
	seen := map[int]bool{}
	for _, d := range days {
		if d < 1 || d > MaxNoticeDays {
			return Errorf(Invalid, "notice_days", "each must be between 1 and %d", MaxNoticeDays)
		}
		if seen[d] {
			return Errorf(Invalid, "notice_days", "%d is listed twice", d)
		}
		seen[d] = true
	}
	return nil
}

// ExpiresOn is the instant from which points given a fixed last day (a
// campaign's "valid until 31 December") are expired: the first instant of
// the local day after date, a calendar date written YYYY-MM-DD, in the
// program's time zone. The points are usable through the whole of that day.
// Errors: invalid (field expires_on) when date is not a calendar date.
func (p *Program) ExpiresOn(date string) (time.Time, error) {
	d, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return time.Time{}, Errorf(Invalid, "expires_on",
			"must be a calendar date such as 2026-12-31, got %q", date)
	}
	y, m, day := d.Date()
	return StartOfDay(y, m, day+1, p.Location()).UTC(), nil
}
