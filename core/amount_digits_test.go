package core

import (
	"strings"
	"testing"
)

// Amounts more precise than their currency (and than cents) are refused:
// "12.990" pesos (twelve thousand nine hundred and ninety, written the
// Chilean way) are not twelve.
func TestCheckAmountDigits(t *testing.T) {
	for _, c := range []struct {
		amount, code string
		ok           bool
	}{
		{"12990", "CLP", true},
		{"12.990", "CLP", false},
		{"12990.50", "CLP", true},
		{"1.500", "CLP", false},
		{"29.85", "USD", true},
		{"29.8", "USD", true},
		{"10.999", "USD", false},
		{"29.8500", "USD", false},
		{"1500", "JPY", true},
		{"1.5", "JPY", true},
		{"1.000", "JPY", false},
		{"1.250", "KWD", true},
		{"1.2501", "KWD", false},
		{"1.250", "IQD", true},
		{"1.2500", "CLF", true},
	} {
		err := CheckAmountDigits("amount", c.amount, c.code)
		if (err == nil) != c.ok {
			t.Errorf("%s %s: %v, want ok=%v", c.amount, c.code, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), c.code) ||
			!strings.Contains(err.Error(), c.amount)) {
			t.Errorf("%s %s: %v does not name the currency and the amount", c.amount, c.code,
				err)
		}
	}
}
