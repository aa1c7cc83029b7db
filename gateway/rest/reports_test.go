package rest

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestReportCellEscapesFormulas(t *testing.T) {
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   any
		want string
	}{
		{"=SUM(A1:A9)", "'=SUM(A1:A9)"},
		{"+56912345678", "'+56912345678"},
		{"-2+3", "'-2+3"},
		{"@cmd", "'@cmd"},
		{"\tpadded", "'\tpadded"},
		{"\rreturn", "'\rreturn"},
		{"shop=1", "shop=1"}, // only the first character counts
		{"'quoted", "'quoted"},
		{"", ""},
		{"web", "web"},
		{int64(-15), "-15"}, // numbers we format stay numbers
		{int64(1500), "1500"},
		{uint64(7), "7"},
		{time.Date(2026, 3, 1, 0, 0, 0, 0, santiago), "2026-03-01T00:00:00-03:00"},
	}
	for _, tt := range tests {
		if got := reportCell(tt.in); got != tt.want {
			t.Errorf("reportCell(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteReportCSV(t *testing.T) {
	rec := httptest.NewRecorder()
	writeReportCSV(rec, &reportTable{name: "flows", program: "p/1",
		cols: []string{"channel", "net"},
		rows: [][]any{{"=HYPERLINK(\"x\",\"y\")", int64(-70)}, {"web, app", int64(3)}}})
	want := "channel,net\n\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\",-70\n\"web, app\",3\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("CSV\n%s\nwant\n%s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if cd := rec.Header().Get("Content-Disposition"); cd !=
		`attachment; filename="p_1-flows.csv"` {
		t.Errorf("Content-Disposition %q", cd)
	}
}
