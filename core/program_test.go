package core

import (
	"strings"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// In 2026 Chile (America/Santiago) turns its clocks back from -03 to -04 at
// the end of Saturday 4 April, and forward from -04 to -03 at the end of
// Saturday 5 September: Sunday 6 September starts at 01:00 local time.
func TestExpiresAt(t *testing.T) {
	tests := []struct {
		name   string
		tz     string
		unit   ExpiryUnit
		length int
		round  string
		earned string
		want   string // empty: never expires
	}{
		{"no expiry", "America/Santiago", ExpiryNone, 0, "day", "2026-03-10T15:00:00Z", ""},
		{"days, ordinary night", "America/Santiago", ExpiryDays, 10, "day",
			"2026-03-10T15:00:00Z", "2026-03-21T03:00:00Z"},
		{"the local date counts, not the UTC one", "America/Santiago", ExpiryDays, 10, "day",
			"2026-03-11T02:30:00Z", "2026-03-21T03:00:00Z"},
		{"last day is the 25-hour Saturday", "America/Santiago", ExpiryDays, 25, "day",
			"2026-03-10T15:00:00Z", "2026-04-05T04:00:00Z"},
		{"last day is the Saturday before the missing midnight", "America/Santiago",
			ExpiryDays, 25, "day", "2026-08-11T15:00:00Z", "2026-09-06T04:00:00Z"},
		{"last day is the 23-hour Sunday", "America/Santiago", ExpiryDays, 25, "day",
			"2026-08-12T15:00:00Z", "2026-09-07T03:00:00Z"},
		{"earned on the short Sunday", "America/Santiago", ExpiryDays, 1, "day",
			"2026-09-06T04:00:00Z", "2026-09-08T03:00:00Z"},
		{"earned in the repeated hour", "America/Santiago", ExpiryDays, 1, "day",
			"2026-04-05T03:30:00Z", "2026-04-06T04:00:00Z"},
		{"months", "America/Santiago", ExpiryMonths, 12, "day",
			"2026-03-10T15:00:00Z", "2027-03-11T03:00:00Z"},
		{"months, clamped to a short month", "America/Santiago", ExpiryMonths, 1, "day",
			"2026-01-31T15:00:00Z", "2026-03-01T03:00:00Z"},
		{"months, over the year end", "America/Santiago", ExpiryMonths, 1, "day",
			"2026-12-31T15:00:00Z", "2027-02-01T03:00:00Z"},
		{"months, rounded to the month end", "America/Santiago", ExpiryMonths, 2, "month",
			"2026-01-15T15:00:00Z", "2026-04-01T03:00:00Z"},
		{"months, rounded into next year", "America/Santiago", ExpiryMonths, 1, "month",
			"2026-11-15T15:00:00Z", "2027-01-01T03:00:00Z"},
		{"days within the month, rounded to the month end", "America/Santiago", ExpiryDays,
			5, "month", "2026-01-10T15:00:00Z", "2026-02-01T03:00:00Z"},
		{"days into the next month, rounded to its end", "America/Santiago", ExpiryDays,
			30, "month", "2026-01-20T15:00:00Z", "2026-03-01T03:00:00Z"},
		{"days into the next year, rounded to the month end", "America/Santiago",
			ExpiryDays, 30, "month", "2026-12-20T15:00:00Z", "2027-02-01T03:00:00Z"},
		{"UTC program", "UTC", ExpiryDays, 1, "day",
			"2026-03-10T23:30:00Z", "2026-03-12T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Program{TimeZone: tt.tz, ExpiryUnit: tt.unit, ExpiryLength: tt.length,
				ExpiryRound: tt.round}
			got := p.ExpiresAt(utc(tt.earned))
			if tt.want == "" {
				if got != nil {
					t.Fatalf("expires at %v, want never", got)
				}
				return
			}
			if got == nil || !got.Equal(utc(tt.want)) {
				t.Fatalf("expires at %v, want %s", got, tt.want)
			}
			if got.Location() != time.UTC {
				t.Fatalf("expiry %v is not in UTC", got)
			}
		})
	}
}

func TestSpendableFrom(t *testing.T) {
	tests := []struct {
		days   int
		earned string
		want   string
	}{
		{0, "2026-03-10T15:00:00Z", "2026-03-10T15:00:00Z"},
		{3, "2026-03-10T15:00:00Z", "2026-03-13T03:00:00Z"},
		{3, "2026-04-03T15:00:00Z", "2026-04-06T04:00:00Z"},
		{2, "2026-09-04T15:00:00Z", "2026-09-06T04:00:00Z"}, // Sunday starts at 01:00 -03
		{3, "2026-09-04T15:00:00Z", "2026-09-07T03:00:00Z"},
	}
	for _, tt := range tests {
		p := Program{TimeZone: "America/Santiago", PendingDays: tt.days}
		if got := p.SpendableFrom(utc(tt.earned)); !got.Equal(utc(tt.want)) {
			t.Errorf("%d days from %s: %v, want %s", tt.days, tt.earned, got, tt.want)
		}
	}
}

func TestValidCurrency(t *testing.T) {
	for s, want := range map[string]bool{"CLP": true, "USD": true, "EUR": true, "XYZ": false,
		"clp": false, "Clp": false, "CL": false, "CLPX": false, "": false, "C1P": false} {
		if got := ValidCurrency(s); got != want {
			t.Errorf("ValidCurrency(%q) = %v, want %v", s, got, want)
		}
	}
}

// CheckRef says what is wrong with a reference, not only that it is wrong:
// a caller told "is required" about a 200-character one looks for a
// missing field.
func TestCheckRefSaysWhatIsWrong(t *testing.T) {
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'm'
		}
		return string(b)
	}
	rule := "; it must be " + RefRule
	tests := []struct{ ref, want string }{
		{"m-5:x@y", ""},
		{long(128), ""},
		{"", "member: is required: the member's reference, " + RefRule},
		{long(129), "member: is 129 characters long, over the limit of 128" + rule},
		{long(5000), "member: is 5000 characters long, over the limit of 128" + rule},
		{" m5", "member: begins with a space" + rule},
		{"m5 ", "member: ends with a space" + rule},
		{"m 5", "member: has ' ' at character 2, which is not allowed" + rule},
		{"mé5", "member: has 'é' at character 2, which is not allowed" + rule},
		{"m5\x00", "member: contains the NUL character" + rule},
		{"m5\xff", "member: is not valid UTF-8" + rule},
		// A name made of one or two dots is a step of a URL path: a member
		// enrolled so could not be read over REST (an attack found).
		{".", "member: is a step of a URL path, which a URL cannot carry as a name" + rule},
		{"..", "member: is a step of a URL path, which a URL cannot carry as a name" + rule},
		{"...", ""},
		{".m.", ""},
	}
	for _, tt := range tests {
		err := CheckRef("member", "the member's reference", tt.ref)
		got := ""
		if err != nil {
			got = err.Error()
			if KindOf(err) != Invalid {
				t.Errorf("%.20q: kind %s, want invalid", tt.ref, KindOf(err))
			}
		}
		if got != tt.want {
			t.Errorf("%.20q:\n got %q\nwant %q", tt.ref, got, tt.want)
		}
	}
}

// CheckCode and CheckCatalogCode keep the rule of their writes and say
// first what no code can hold.
func TestCheckCodeSaysWhatIsWrong(t *testing.T) {
	tests := []struct {
		check      func(field, s string) error
		code, want string
	}{
		{CheckCode, "Telco_2", ""},
		{CheckCode, "te lco", "program: must be " + CodeRule},
		{CheckCode, "te\x00lco", "program: contains the NUL character; it must be " + CodeRule},
		{CheckCatalogCode, "cafe-sur", ""},
		{CheckCatalogCode, "Cafe", "program: must be " + CatalogCodeRule},
		{CheckCatalogCode, "cafe\xff", "program: is not valid UTF-8; it must be " +
			CatalogCodeRule},
	}
	for _, tt := range tests {
		got := ""
		if err := tt.check("program", tt.code); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%q:\n got %q\nwant %q", tt.code, got, tt.want)
		}
	}
}

// A day's first instant, in zones whose clocks skip or repeat midnight:
// expiries, holding periods, report bounds and file dates all begin days
// here.
func TestStartOfDay(t *testing.T) {
	for _, c := range []struct {
		zone string
		y    int
		m    time.Month
		d    int
		want string
	}{
		{"America/Santiago", 2026, 9, 5, "2026-09-05T04:00:00Z"},  // midnight at -04
		{"America/Santiago", 2026, 9, 6, "2026-09-06T04:00:00Z"},  // skipped: 01:00 -03
		{"America/Santiago", 2026, 8, 37, "2026-09-06T04:00:00Z"}, // the 37th of August is that day
		{"America/Santiago", 2026, 4, 4, "2026-04-04T03:00:00Z"},  // 25 hours, from -03
		{"America/Havana", 2024, 11, 3, "2024-11-03T04:00:00Z"},   // midnight twice: the first
		{"UTC", 2026, 12, 32, "2027-01-01T00:00:00Z"},
	} {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Fatal(err)
		}
		if got := StartOfDay(c.y, c.m, c.d, loc).UTC().Format(time.RFC3339); got != c.want {
			t.Errorf("%s %d-%d-%d: %s, want %s", c.zone, c.y, c.m, c.d, got, c.want)
		}
	}
}

// Display names are shown on the back office's pages: one a right-to-left
// override turns around ("Gold <U+202E>000,01 sniop" shows as "Gold points
// 10,000"), or one of which nothing shows, is refused naming the field,
// for programs, external programs, rewards, partners and rules alike.
func TestNamesShowWhatTheySay(t *testing.T) {
	validate := map[string]func(name string) error{
		"program": func(n string) error {
			p := Program{Code: "telco", Name: n}
			p.Defaults()
			return p.Validate()
		},
		"external program": func(n string) error {
			e := ExternalProgram{Code: "sky", Name: n, Ratio: "0.5", Flavour: FlavourHTTP,
				Endpoint: "https://127.0.0.1:8443/api"}
			e.Defaults()
			return e.Validate()
		},
		"reward": func(n string) error {
			r := Reward{Code: "movie", Name: n, Points: 1200}
			return r.Validate()
		},
		"partner": func(n string) error {
			p := Partner{Code: "cafe", Name: n, Currency: "CLP", PointValue: "1"}
			return p.Validate()
		},
		"rule": func(n string) error {
			_, err := CompileRule(Rule{Code: "base", Name: n, EventType: "bill_paid",
				Rounding: RoundDown, Formula: Formula{Kind: FormulaPerUnit, Rate: "1"}})
			return err
		},
	}
	for what, check := range validate {
		if err := check("Puntos Móvil"); err != nil {
			t.Errorf("%s named Puntos Móvil: %v", what, err)
		}
		for _, bad := range []string{"Gold \u202e000,01 sniop\u202c", "line\nbreak"} {
			if err := check(bad); KindOf(err) != Invalid || !strings.Contains(err.Error(), "name") {
				t.Errorf("%s named %q: %v; want refused naming the name", what, bad, err)
			}
		}
		if err := check("\u200b"); KindOf(err) != Invalid {
			t.Errorf("%s named only a zero-width space: %v; want refused", what, err)
		}
		if what == "rule" {
			if err := check(""); err != nil {
				t.Errorf("a rule without a name: %v; want it taken (the name is optional)", err)
			}
		}
	}
}

// A wall time in a zone, including one the clocks skip.
func TestLocalTime(t *testing.T) {
	for _, c := range []struct{ zone, local, want string }{
		{"America/Santiago", "2026-09-05T23:30:00", "2026-09-06T03:30:00Z"},
		{"America/Santiago", "2026-09-06T00:00:00", "2026-09-06T04:00:00Z"}, // skipped: 01:00 -03
		{"America/Santiago", "2026-09-06T00:59:00", "2026-09-06T04:00:00Z"},
		{"America/Santiago", "2026-09-06T01:00:00", "2026-09-06T04:00:00Z"},
		{"Europe/Madrid", "2026-03-29T02:30:00", "2026-03-29T01:00:00Z"}, // skipped: 03:00 +02
		{"Europe/Madrid", "2026-07-01T12:00:00", "2026-07-01T10:00:00Z"},
		{"Europe/Madrid", "2026-10-25T02:30:00", "2026-10-25T00:30:00Z"},    // twice: the first
		{"America/Santiago", "2026-04-04T23:30:00", "2026-04-05T02:30:00Z"}, // twice: the first
		{"UTC", "2026-07-01T12:00:00", "2026-07-01T12:00:00Z"},
	} {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Fatal(err)
		}
		local, err := time.Parse("2006-01-02T15:04:05", c.local)
		if err != nil {
			t.Fatal(err)
		}
		if got := LocalTime(local, loc).UTC().Format(time.RFC3339); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.zone, c.local, got, c.want)
		}
	}
}

// A reward's window a nanosecond long would be stored empty, the ledger
// keeping microseconds: refused as a rule's is.
func TestRewardWindowOfANanosecond(t *testing.T) {
	from := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)
	until := from.Add(time.Nanosecond)
	r := Reward{Code: "movie", Name: "Movie", Points: 1200, ValidFrom: &from, ValidUntil: &until}
	if err := r.Validate(); KindOf(err) != Invalid || !strings.Contains(err.Error(), "valid_until") {
		t.Fatalf("a window of a nanosecond: %v; want refused on valid_until", err)
	}
	until = from.Add(time.Microsecond)
	if err := r.Validate(); err != nil {
		t.Fatalf("a window of a microsecond: %v; want it taken", err)
	}
}
