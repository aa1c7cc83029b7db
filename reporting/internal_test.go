package reporting

import (
	"slices"
	"testing"
	"time"
)

func TestStartOfDay(t *testing.T) {
	tests := []struct{ zone, date, want string }{
		{"America/Santiago", "2024-09-07", "2024-09-07T04:00:00Z"}, // midnight at -04
		{"America/Santiago", "2024-09-08", "2024-09-08T04:00:00Z"}, // no midnight: 01:00 -03
		{"America/Santiago", "2024-04-06", "2024-04-06T03:00:00Z"}, // midnight at -03, 25 hours
		{"America/Santiago", "2024-04-07", "2024-04-07T04:00:00Z"}, // midnight at -04
		{"America/Havana", "2024-03-10", "2024-03-10T05:00:00Z"},   // no midnight: 01:00 CDT
		{"America/Havana", "2024-11-03", "2024-11-03T04:00:00Z"},   // midnight twice: the first
		{"UTC", "2024-03-10", "2024-03-10T00:00:00Z"},
	}
	for _, tt := range tests {
		loc, err := time.LoadLocation(tt.zone)
		if err != nil {
			t.Fatal(err)
		}
		date, _ := time.Parse(time.DateOnly, tt.date)
		got := startOfDay(date, loc)
		if got.UTC().Format(time.RFC3339) != tt.want {
			t.Errorf("%s %s: %s; want %s", tt.zone, tt.date, got.UTC().Format(time.RFC3339),
				tt.want)
		}
		if got.Location() != loc {
			t.Errorf("%s %s: in %s; want %s", tt.zone, tt.date, got.Location(), loc)
		}
	}
}

func TestSplitStatements(t *testing.T) {
	body := `-- A comment; with a semicolon.
CREATE TABLE a (
    x Int64 -- trailing words stay
);

-- Another.
CREATE TABLE b (y String);
ALTER TABLE b ADD COLUMN z String`
	got := splitStatements(body)
	want := []string{
		"CREATE TABLE a (\n    x Int64 -- trailing words stay\n)",
		"CREATE TABLE b (y String)",
		"ALTER TABLE b ADD COLUMN z String",
	}
	if !slices.Equal(got, want) {
		t.Errorf("statements\n%q\nwant\n%q", got, want)
	}
}

func TestWholeHours(t *testing.T) {
	for zone, want := range map[string]bool{
		"UTC": true, "America/Santiago": true, "Europe/Madrid": true,
		"Asia/Kolkata": false, "Asia/Kathmandu": false,
		"Africa/Monrovia": false, // -00:44:30 until 1972
	} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		if got := wholeHours(loc); got != want {
			t.Errorf("wholeHours(%s) = %v; want %v", zone, got, want)
		}
	}
}
