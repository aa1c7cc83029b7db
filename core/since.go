package core

import "time"

// Earliest is the earliest business time the ledger takes (an event's
// occurred_at, a member's enrolled_at, a file line's effective_date): the
// reports keep times from 1970 on, and a posting dated before would be in
// the ledger and in no report.
var Earliest = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)

// CheckSince1970 refuses a time before Earliest, naming field.
func CheckSince1970(field string, at time.Time) error {
	if at.Before(Earliest) {
		return Errorf(Invalid, field, "is before 1970-01-01T00:00:00Z, the earliest date "+
			"Puntos records")
	}
	return nil
}
