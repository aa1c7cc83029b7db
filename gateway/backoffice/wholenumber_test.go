package backoffice

import "testing"

// Whole numbers as people type them: grouped thousands are read, anything
// that would have to be guessed at is refused.
func TestWholeNumber(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "150": 150, "-150": -150, "1500": 1500, "1,500": 1500, "1.500": 1500,
		"-1,500": -1500, "12,345,678": 12345678, "12.345.678": 12345678, "999": 999,
	} {
		if got, err := wholeNumber(in); err != nil || got != want {
			t.Errorf("wholeNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1,50", "1.5", "10.00", "1,5000", ",500", "1,500.000",
		"1.500,000", "1,,500", "1,500,", "1 500", "+5", "--5", "-", "", "x", "1e3",
		"99999999999999999999"} {
		if got, err := wholeNumber(in); err == nil {
			t.Errorf("wholeNumber(%q) = %d, want an error", in, got)
		}
	}
}
