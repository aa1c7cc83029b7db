package core

import (
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/text/currency"
)

// ExpiryUnit is the unit of a program's points lifetime.
type ExpiryUnit string

// Expiry units.
const (
	ExpiryNone   ExpiryUnit = "none"
	ExpiryDays   ExpiryUnit = "days"
	ExpiryMonths ExpiryUnit = "months"
)

// Negative-balance policies: what a clawback does with points already spent.
const (
	NegativeForbid = "forbid" // the shortfall is written off; the balance stays at zero
	NegativeAllow  = "allow"  // the balance goes negative and later credits repay it
)

// Program is a loyalty program and the policies its points follow.
type Program struct {
	ID              string     `json:"id"`
	Code            string     `json:"code"`
	Name            string     `json:"name"`
	TimeZone        string     `json:"time_zone"`
	Currency        string     `json:"currency"`
	PointsPerUnit   string     `json:"points_per_unit"`
	AccrualRounding Rounding   `json:"accrual_rounding"`
	ExpiryUnit      ExpiryUnit `json:"expiry_unit"`
	ExpiryLength    int        `json:"expiry_length"`
	ExpiryRound     string     `json:"expiry_round"`
	PendingDays     int        `json:"pending_days"`
	NegativeBalance string     `json:"negative_balance"`
	HoldTTLSeconds  int        `json:"hold_ttl_seconds"`

	loc *time.Location
}

// Validate checks a program definition and names the first bad field.
func (p *Program) Validate() error {
	if !codeOK(p.Code) {
		return Errorf(Invalid, "code", "must be "+CodeRule)
	}
	if p.Name == "" || len(p.Name) > 200 {
		return Errorf(Invalid, "name", "is required, at most 200 characters")
	}
	if err := checkName(p.Name, true); err != nil {
		return err
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil || p.TimeZone == "" {
		return Errorf(Invalid, "time_zone", "unknown time zone %q", p.TimeZone)
	}
	if !ValidCurrency(p.Currency) {
		return Errorf(Invalid, "currency", "must be an ISO 4217 code in capitals, such as CLP")
	}
	rate, err := ParseRate("points_per_unit", p.PointsPerUnit)
	if err != nil {
		return err
	}
	if rate.Cmp(big.NewRat(1_000_000, 1)) > 0 {
		return Errorf(Invalid, "points_per_unit", "must not exceed 1000000")
	}
	if !p.AccrualRounding.Valid() {
		return Errorf(Invalid, "accrual_rounding", "must be down, up, half_up or half_even")
	}
	switch p.ExpiryUnit {
	case ExpiryNone:
	case ExpiryDays, ExpiryMonths:
		if p.ExpiryLength <= 0 || p.ExpiryLength > 3650 {
			return Errorf(Invalid, "expiry_length", "must be between 1 and 3650")
		}
	default:
		return Errorf(Invalid, "expiry_unit", "must be none, days or months")
	}
	if p.ExpiryRound != "day" && p.ExpiryRound != "month" {
		return Errorf(Invalid, "expiry_round", "must be day or month")
	}
	if p.PendingDays < 0 || p.PendingDays > 365 {
		return Errorf(Invalid, "pending_days", "must be between 0 and 365")
	}
	if p.NegativeBalance != NegativeForbid && p.NegativeBalance != NegativeAllow {
		return Errorf(Invalid, "negative_balance", "must be forbid or allow")
	}
	if p.HoldTTLSeconds <= 0 || p.HoldTTLSeconds > 90*24*3600 {
		return Errorf(Invalid, "hold_ttl_seconds", "must be between 1 and 7776000")
	}
	return nil
}

// DefaultCurrency is the currency of a program defined without one.
const DefaultCurrency = "CLP"

// Defaults fills the fields a caller left empty.
func (p *Program) Defaults() {
	if p.TimeZone == "" {
		p.TimeZone = "America/Santiago"
	}
	if p.Currency == "" {
		p.Currency = DefaultCurrency
	}
	if p.PointsPerUnit == "" {
		p.PointsPerUnit = "1"
	}
	if p.AccrualRounding == "" {
		p.AccrualRounding = RoundDown
	}
	if p.ExpiryUnit == "" {
		p.ExpiryUnit = ExpiryNone
	}
	if p.ExpiryRound == "" {
		p.ExpiryRound = "day"
	}
	if p.NegativeBalance == "" {
		p.NegativeBalance = NegativeForbid
	}
	if p.HoldTTLSeconds == 0 {
		p.HoldTTLSeconds = 900
	}
}

// Location is the program's time zone; day and month boundaries are its own.
func (p *Program) Location() *time.Location {
	if p.loc == nil {
		p.loc = location(p.TimeZone)
	}
	return p.loc
}

// locations holds the time zones loaded so far, by name. Programs are read
// again for every ledger transaction, and time.LoadLocation reads and parses
// the zone's file each time it is called.
var locations sync.Map

// location is the named time zone, or UTC when it cannot be loaded.
func location(name string) *time.Location {
	if loc, ok := locations.Load(name); ok {
		return loc.(*time.Location)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC
	}
	locations.Store(name, loc)
	return loc
}

// ExpiresAt is the instant from which points earned at t are expired, or nil
// when the program's points never expire. A lot is usable through the whole
// of its last day (or month) in the program's time zone: the instant
// returned is the first one of the following local day (or month).
func (p *Program) ExpiresAt(earned time.Time) *time.Time {
	var y int
	var m time.Month
	var d int
	local := earned.In(p.Location())
	y, m, d = local.Date()
	switch p.ExpiryUnit {
	case ExpiryDays:
		d += p.ExpiryLength
	case ExpiryMonths:
		m += time.Month(p.ExpiryLength)
		// Clamp to the last day of the target month (Jan 31 + 1 month = Feb 28).
		if last := daysIn(y, m); d > last {
			d = last
		}
	default:
		return nil
	}
	// Normalise the last day (20 January + 30 days is 19 February) before
	// rounding it up to the end of its month.
	y, m, d = time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Date()
	var end time.Time
	if p.ExpiryRound == "month" {
		end = StartOfDay(y, m+1, 1, p.Location())
	} else {
		end = StartOfDay(y, m, d+1, p.Location())
	}
	end = end.UTC()
	return &end
}

// SpendableFrom is when points earned at t may be spent: at once, or after
// the program's holding period, from the start of a local day.
func (p *Program) SpendableFrom(earned time.Time) time.Time {
	if p.PendingDays == 0 {
		return earned
	}
	y, m, d := earned.In(p.Location()).Date()
	return StartOfDay(y, m, d+p.PendingDays, p.Location()).UTC()
}

// StartOfDay is the first instant of the local date y-m-d in loc, the
// date normalised as time.Date does (the 32nd of March is the 1st of
// April). When a daylight-saving change skips midnight it is the first
// instant that exists that day; when midnight comes twice, the first.
func StartOfDay(y int, m time.Month, d int, loc *time.Location) time.Time {
	y, m, d = time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Date()
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if ty, tm, td := t.Date(); ty != y || tm != m || td != d {
		// Midnight fell in the gap and came out on the day before: the
		// day begins where that zone ends.
		_, end := t.ZoneBounds()
		return end
	}
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return t
	}
	before := start.Add(-time.Nanosecond)
	if by, bm, bd := before.Date(); by == y && bm == m && bd == d {
		// The day began in the zone before this one: midnight came twice.
		_, offset := before.Zone()
		if early := time.Date(y, m, d, 0, 0, 0, 0, time.FixedZone("", offset)); early.Before(t) {
			return early.In(loc)
		}
	}
	return t
}

// LocalTime is the instant at which loc's clocks show the wall time of
// local (its date and time of day, whatever its zone). A time a change of
// clocks skips (00:30 on 6 September 2026 in Santiago) is the first
// instant after the gap, as StartOfDay takes a skipped midnight: a rule
// valid from then starts with that day, not an hour into the one before.
// A time the clocks show twice (when they go back) is the first of the two.
func LocalTime(local time.Time, loc *time.Location) time.Time {
	y, m, d := local.Date()
	h, mi, sec := local.Clock()
	t := time.Date(y, m, d, h, mi, sec, local.Nanosecond(), loc)
	shown := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(),
		t.Nanosecond(), time.UTC)
	want := time.Date(y, m, d, h, mi, sec, local.Nanosecond(), time.UTC)
	start, end := t.ZoneBounds()
	switch {
	case shown.Before(want) && !end.IsZero():
		return end // placed before the gap, in the zone that ends there
	case shown.After(want) && !start.IsZero():
		return start // placed after it, in the zone that begins there
	case !start.IsZero():
		// Shown twice? The zone before this one shows it earlier.
		_, offset := start.Add(-time.Nanosecond).Zone()
		early := time.Date(y, m, d, h, mi, sec, local.Nanosecond(), time.FixedZone("", offset))
		if early.Before(start) && early.Before(t) {
			return early.In(loc)
		}
	}
	return t
}

// Later reports whether a comes after b as the ledger stores them, to the
// microsecond: a window a nanosecond long would be stored empty.
func Later(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).After(b.Truncate(time.Microsecond))
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 12, 0, 0, 0, time.UTC).Day()
}

// CodeRule says what a program's, a rule's or an external program's code
// may be, for error messages.
const CodeRule = "1-64 letters, digits, '-' or '_'"

// MaxCode is the longest code CodeRule and CatalogCodeRule allow, in
// characters.
const MaxCode = 64

// CheckCode refuses s, given as field, unless it is a program's, a rule's
// or an external program's code (CodeRule). Errors: invalid.
func CheckCode(field, s string) error {
	if codeOK(s) {
		return nil
	}
	return codeError(field, s, CodeRule)
}

// codeError refuses s as a code, saying first what TextFault finds in it.
func codeError(field, s, rule string) error {
	if why := TextFault(s, MaxCode); why != "" {
		return Errorf(Invalid, field, "%s; it must be %s", why, rule)
	}
	return Errorf(Invalid, field, "must be %s", rule)
}

func codeOK(s string) bool {
	if len(s) == 0 || len(s) > MaxCode {
		return false
	}
	for _, c := range s {
		ok := c == '-' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
			(c >= 'A' && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// RefRule says what ValidRef accepts, for error messages.
const RefRule = "1-128 letters (a-z, A-Z), digits or - . _ ~ : @ ! $ & ' ( ) * + , ; =, " +
	"but not . or .. alone"

// ValidRef reports whether s is acceptable as an external reference or
// transaction id: 1-128 characters that need no escaping in a URL path
// segment (letters, digits and - . _ ~ : @ ! $ & ' ( ) * + , ; =). A slash,
// '?', '#', '%' or a space would make the member's or the command's URL
// ambiguous; so would "." or "..", which a URL path takes as a step of its
// own (an HTTP client or server cleans /members/../balance away).
func ValidRef(s string) bool {
	if len(s) == 0 || len(s) > MaxRef || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !refChar(s[i]) {
			return false
		}
	}
	return true
}

// refChar tells the bytes a reference may hold.
func refChar(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		strings.IndexByte("-._~:@!$&'()*+,;=", c) >= 0
}

// MaxRef is the longest reference or transaction id ValidRef accepts, in
// characters (all of them ASCII, so also in bytes).
const MaxRef = 128

// CheckRef refuses s, given as field, unless ValidRef accepts it, and says
// what is wrong with it: missing, not UTF-8, holding NUL, too long, or the
// first character that is not allowed (a space at either end named as
// such). what says what the field is, for the message of a missing one,
// such as "the member's customer reference"; it may be empty.
// Errors: invalid.
func CheckRef(field, what, s string) error {
	if ValidRef(s) {
		return nil
	}
	if s == "" {
		if what == "" {
			return Errorf(Invalid, field, "is required: %s", RefRule)
		}
		return Errorf(Invalid, field, "is required: %s, %s", what, RefRule)
	}
	return Errorf(Invalid, field, "%s; it must be %s", refFault(s), RefRule)
}

// TextFault says what makes s unfit as a code, reference or id of at most
// max characters whatever its own rule: not UTF-8, holding NUL (which
// PostgreSQL cannot store or compare) or too long. It is "" when s has
// none of these faults.
func TextFault(s string, max int) string {
	switch n := utf8.RuneCountInString(s); {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains the NUL character"
	case n > max:
		return fmt.Sprintf("is %d characters long, over the limit of %d", n, max)
	}
	return ""
}

// refFault says why ValidRef refuses s, which is not empty.
func refFault(s string) string {
	if why := TextFault(s, MaxRef); why != "" {
		return why
	}
	if s == "." || s == ".." {
		return "is a step of a URL path, which a URL cannot carry as a name"
	}
	pos := 0
	for i, c := range s {
		pos++
		if c < utf8.RuneSelf && refChar(byte(c)) {
			continue
		}
		switch {
		case c == ' ' && i == 0:
			return "begins with a space"
		case c == ' ' && i == len(s)-1:
			return "ends with a space"
		}
		return fmt.Sprintf("has %q at character %d, which is not allowed", c, pos)
	}
	return "is not valid" // not reached: ValidRef refused s for a reason above
}

// ValidCurrency reports whether s is an ISO 4217 currency code as the
// ledger stores it: three capital letters naming a currency ("XYZ" and
// "clp" are not).
func ValidCurrency(s string) bool {
	if len(s) != 3 || strings.ToUpper(s) != s {
		return false
	}
	_, err := currency.ParseISO(s)
	return err == nil
}

// LatestExpiry bounds the expiry a caller may give points: a date past it
// is a data error (such as 9999-12-31 used for "never"), and past year 9999
// the instant could not even be written in a statement or a balance.
var LatestExpiry = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// CheckExpiry refuses an expiry at or after LatestExpiry, naming field.
func CheckExpiry(field string, t time.Time) error {
	if !t.Before(LatestExpiry) {
		return Errorf(Invalid, field, "must be before %s; leave it out for the program's "+
			"own expiry", LatestExpiry.Format("2006-01-02"))
	}
	return nil
}
