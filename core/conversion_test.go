package core

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestExternalAmount(t *testing.T) {
	for _, tc := range []struct {
		ratio    string
		rounding Rounding
		points   Points
		want     int64
	}{
		{"0.5", RoundDown, 1001, 500},
		{"0.5", RoundUp, 1001, 501},
		{"0.5", RoundHalfUp, 1001, 501},
		{"0.5", RoundHalfEven, 1001, 500},
		{"0.5", RoundHalfEven, 1003, 502},
		{"1.25", RoundDown, 3, 3},
		{"0.001", RoundDown, 999, 0},
		{"2", RoundDown, 7, 14},
	} {
		e := ExternalProgram{Ratio: tc.ratio, Rounding: tc.rounding}
		got, err := e.Amount(tc.points)
		if err != nil || got != tc.want {
			t.Errorf("%d points at %s %s: %d (%v), want %d", tc.points, tc.ratio, tc.rounding,
				got, err, tc.want)
		}
	}
}

func TestExternalValidate(t *testing.T) {
	base := func() ExternalProgram {
		e := ExternalProgram{Code: "sky", Name: "Sky", Ratio: "0.5", Flavour: FlavourHTTP,
			Endpoint: "https://127.0.0.1:8443/api", Credentials: "secret"}
		e.Defaults()
		return e
	}
	if err := func() error { e := base(); return e.Validate() }(); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
	for field, change := range map[string]func(*ExternalProgram){
		"code":            func(e *ExternalProgram) { e.Code = "a/b" },
		"ratio":           func(e *ExternalProgram) { e.Ratio = "0" },
		"rounding":        func(e *ExternalProgram) { e.Rounding = "nearest" },
		"max_points":      func(e *ExternalProgram) { e.MinPoints, e.MaxPoints = 10, 5 },
		"daily_limit":     func(e *ExternalProgram) { e.DailyLimit = -1 },
		"identify":        func(e *ExternalProgram) { e.Identify = "email" },
		"account_pattern": func(e *ExternalProgram) { e.AccountPattern = "([" },
		"flavour":         func(e *ExternalProgram) { e.Flavour = "soap" },
		"endpoint":        func(e *ExternalProgram) { e.Endpoint = "ftp://127.0.0.1/x" },
		"credentials":     func(e *ExternalProgram) { e.Credentials = "a\nb" },
	} {
		e := base()
		change(&e)
		err := e.Validate()
		if de, ok := AsError(err); !ok || de.Field != field || de.Kind != Invalid {
			t.Errorf("%s: %v, want invalid on %s", field, err, field)
		}
	}
	for _, u := range []string{"http://user:pw@127.0.0.1/", "https://127.0.0.1/?k=v", "/relative"} {
		e := base()
		e.Endpoint = u
		if de, ok := AsError(e.Validate()); !ok || de.Field != "endpoint" {
			t.Errorf("endpoint %q accepted", u)
		}
	}
	if e := base(); e.Public().Credentials != Masked || e.Credentials != "secret" {
		t.Error("Public must mask the secret of a copy only")
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("Configured", "external", base())
	if strings.Contains(buf.String(), "secret") || !strings.Contains(buf.String(), Masked) {
		t.Errorf("a logged configuration shows its secret: %s", buf.String())
	}
}

// TestDayAndMonthStart checks the local boundaries around Santiago's
// change from summer time (-03) to winter time (-04) on 4 April 2026.
func TestDayAndMonthStart(t *testing.T) {
	scl, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at, day, month string
	}{
		{"2026-03-11T02:50:00Z", "2026-03-10T03:00:00Z", "2026-03-01T03:00:00Z"},
		{"2026-03-11T03:10:00Z", "2026-03-11T03:00:00Z", "2026-03-01T03:00:00Z"},
		{"2026-04-01T03:30:00Z", "2026-04-01T03:00:00Z", "2026-04-01T03:00:00Z"},
		{"2026-04-05T12:00:00Z", "2026-04-05T04:00:00Z", "2026-04-01T03:00:00Z"},
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := DayStart(at, scl).UTC().Format(time.RFC3339); got != tc.day {
			t.Errorf("day of %s starts %s, want %s", tc.at, got, tc.day)
		}
		if got := MonthStart(at, scl).UTC().Format(time.RFC3339); got != tc.month {
			t.Errorf("month of %s starts %s, want %s", tc.at, got, tc.month)
		}
	}
}

func TestExternalEndpointNeverLinkLocal(t *testing.T) {
	for endpoint, ok := range map[string]bool{
		"https://miles.example.com/api": true,
		"http://10.9.9.9/x":             true,
		"http://127.0.0.1:9000":         true,
		"http://169.254.169.254/latest": false,
		"http://[fe80::1]/x":            false,
		"http://0.0.0.0/x":              false,
		"http://[::ffff:169.254.1.1]/x": false,
	} {
		e := ExternalProgram{Code: "sky", Name: "Sky", Ratio: "0.5", Flavour: FlavourHTTP,
			Endpoint: endpoint}
		e.Defaults()
		err := e.Validate()
		if got := err == nil; got != ok {
			t.Errorf("%s: %v, want allowed %v", endpoint, err, ok)
		}
		if de, isErr := AsError(err); !ok && (!isErr || de.Field != "endpoint") {
			t.Errorf("%s: %v, want a refusal naming endpoint", endpoint, err)
		}
	}
}

// Messages count points as a sentence does: "1 point asked", never
// "1 points asked".
func TestPointsText(t *testing.T) {
	for n, want := range map[Points]string{0: "0 points", 1: "1 point", 2: "2 points",
		-1: "-1 points", 1500: "1500 points"} {
		if got := PointsText(n); got != want {
			t.Errorf("PointsText(%d) = %q, want %q", n, got, want)
		}
	}
}
