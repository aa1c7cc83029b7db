package backoffice

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The dates and times of the rules and catalog forms are the program's
// wall clock. One the clocks skip (Santiago's midnight of 6 September
// 2026, which a datetime-local input sends as 2026-09-06T00:00) starts at
// the first instant after the gap; it was stored as 23:00 of the 5th, and
// a rule valid from the 6th ran an hour of the day before.
func TestFormTimesInTheProgramsZone(t *testing.T) {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"2026-09-06T00:00":    "2026-09-06T04:00:00Z",
		"2026-09-06T00:30:00": "2026-09-06T04:00:00Z",
		"2026-09-06":          "2026-09-06T04:00:00Z",
		"2026-09-05T23:59":    "2026-09-06T03:59:00Z",
		"2026-07-01T12:00":    "2026-07-01T16:00:00Z",
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(url.Values{"at": {in}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		f := &form{r: r, loc: loc}
		got := f.time("at")
		if f.err != nil || got == nil || got.Format(time.RFC3339) != want {
			t.Errorf("%s in Santiago: %v (%v), want %s", in, got, f.err, want)
		}
	}
}

// A field left as drawn keeps the instant it was drawn from: its seconds,
// and which of an hour the clocks show twice it was (Madrid's 02:30 of 25
// October 2026 is 00:30 and 01:30 UTC). The input shows minutes only, and
// a reward saved with a new name used to move its window by an hour.
func TestFormTimesKeepTheirInstantWhenUnchanged(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Madrid")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ in, was, want string }{
		{"2026-10-25T02:30", "2026-10-25T01:30:00Z", "2026-10-25T01:30:00Z"},
		{"2026-10-25T02:30", "", "2026-10-25T00:30:00Z"},
		{"2027-10-31T02:45", "2027-10-31T00:45:30Z", "2027-10-31T00:45:30Z"},
		{"2027-10-31T02:46", "2027-10-31T00:45:30Z", "2027-10-31T00:46:00Z"}, // changed: the first 02:46
	} {
		values := url.Values{"at": {c.in}, "at_was": {c.was}}
		r := httptest.NewRequest("POST", "/", strings.NewReader(values.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		f := &form{r: r, loc: loc}
		got := f.time("at")
		if f.err != nil || got == nil || got.Format(time.RFC3339) != c.want {
			t.Errorf("%s drawn from %q: %v (%v), want %s", c.in, c.was, got, f.err, c.want)
		}
	}
}
