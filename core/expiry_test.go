package core

import (
	"testing"
	"time"
)

func TestExpiresOn(t *testing.T) {
	p := &Program{TimeZone: "America/Santiago"}
	for _, tc := range []struct {
		date, want string
	}{
		{"2026-12-31", "2027-01-01T03:00:00Z"}, // summer time, -03
		{"2026-06-30", "2026-07-01T04:00:00Z"}, // winter time, -04
		{"2026-04-04", "2026-04-05T04:00:00Z"}, // the 25-hour Saturday
		{"2026-09-05", "2026-09-06T04:00:00Z"}, // Sunday's midnight is skipped: 01:00 -03
		{"2028-02-29", "2028-03-01T03:00:00Z"},
	} {
		got, err := p.ExpiresOn(tc.date)
		if err != nil || got.Format(time.RFC3339) != tc.want {
			t.Errorf("ExpiresOn(%s) = %v, %v; want %s", tc.date, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "2026-02-29", "31/12/2026", "2026-12-31T00:00:00Z"} {
		if _, err := p.ExpiresOn(bad); KindOf(err) != Invalid {
			t.Errorf("ExpiresOn(%q): %v, want invalid", bad, err)
		}
	}
}

func TestCheckNoticeDays(t *testing.T) {
	for _, tc := range []struct {
		days []int
		ok   bool
	}{
		{nil, true}, {[]int{30, 7, 1}, true}, {[]int{3650}, true},
		{[]int{0}, false}, {[]int{7, 7}, false}, {[]int{3651}, false}, {[]int{-1}, false},
	} {
		if err := CheckNoticeDays(tc.days); (err == nil) != tc.ok {
			t.Errorf("CheckNoticeDays(%v) = %v, want ok %v", tc.days, err, tc.ok)
		}
	}
}
