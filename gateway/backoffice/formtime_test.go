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
