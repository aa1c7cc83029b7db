package demo

import (
	"strings"
	"testing"
)

// FuzzParseSubscribers: whatever the file, the reader never panics; every
// row it keeps is one the demo may send, and every row it refuses names a
// line and a column.
func FuzzParseSubscribers(f *testing.F) {
	columns := map[string]bool{colCustomerID: true, colTenure: true, colMonthlyCharges: true,
		colTotalCharges: true, "row": true}
	f.Fuzz(func(t *testing.T, data string) {
		subs, bad, err := ParseSubscribers(strings.NewReader(data))
		if err != nil {
			if len(subs) > 0 || len(bad) > 0 {
				t.Fatalf("an unusable file still gave rows: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, s := range subs {
			if s.CustomerID == "" || len(s.CustomerID) > 128 || seen[s.CustomerID] ||
				strings.ContainsFunc(s.CustomerID, func(r rune) bool {
					return r < 0x20 || r == 0x7f
				}) {
				t.Fatalf("line %d: customerID %q kept", s.Line, s.CustomerID)
			}
			seen[s.CustomerID] = true
			if s.Tenure < 0 || s.Tenure > maxTenure || !decimalRE.MatchString(s.MonthlyCharges) {
				t.Fatalf("line %d: kept %+v", s.Line, s)
			}
			if !s.BlankTotal() && !decimalRE.MatchString(strings.TrimSpace(s.TotalCharges)) {
				t.Fatalf("line %d: TotalCharges %q kept", s.Line, s.TotalCharges)
			}
		}
		for _, e := range bad {
			if e.Line < 1 || !columns[e.Field] || e.Reason == "" {
				t.Fatalf("refusal without line or column: %+v", e)
			}
		}
	})
}
