package rest

import (
	"bytes"
	"encoding/csv"
	"regexp"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core/postgres"
)

// Refunds are written negative and numbers unescaped, but no cell a
// caller's text reaches may start a spreadsheet formula: a cell that
// starts with = + - @ (or a tab or carriage return) is a plain number.
func TestLate16SettlementCSVNoFormulaThroughAnyCell(t *testing.T) {
	evil := []string{"=HYPERLINK(\"http://127.0.0.1\")", "+1+1", "-2+3", "@SUM(A1)",
		"\t=1", "\r=1"}
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	st := &postgres.Settlement{Partner: evil[0], Program: evil[1], Currency: evil[3],
		PointValue: "0.01", Captured: 200, Refunded: 450, Net: -250, Value: "-2.5"}
	for _, e := range evil {
		st.Lines = append(st.Lines,
			postgres.SettlementLine{Type: e, TxnID: e, HoldTxnID: e, Member: e, Points: 100,
				At: at},
			postgres.SettlementLine{Type: "refund", TxnID: e, HoldTxnID: e, Member: e,
				Points: -150, At: at})
	}
	body, err := SettlementCSV(st)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	number := regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	var sum int64
	for i, row := range rows {
		for j, c := range row {
			if c != "" && bytes.ContainsRune([]byte("=+-@\t\r"), rune(c[0])) &&
				!number.MatchString(c) {
				t.Errorf("row %d cell %d %q would start a formula", i, j, c)
			}
		}
		if i > 0 && i < len(rows)-1 {
			var n int64
			for _, ch := range row[4] {
				if ch != '-' {
					n = n*10 + int64(ch-'0')
				}
			}
			if row[4][0] == '-' {
				n = -n
			}
			sum += n
		}
	}
	if sum != 6*(100-150) {
		t.Errorf("points column sums to %d, want %d", sum, 6*(100-150))
	}
}
