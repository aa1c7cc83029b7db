package core

import (
	"strings"
	"testing"
)

func TestCheckReasonRefusesInvisibleText(t *testing.T) {
	for _, tc := range []struct {
		reason   string
		required bool
		ok       bool
		says     string
	}{
		{"goodwill for the outage", true, true, ""},
		{"línea 1\n\tlínea 2", true, true, ""},
		{"", false, true, ""},
		{"", true, false, "is required"},
		{" \n\t", true, false, "is required"},
		{"\u202e\u200b", true, false, "U+202E at byte 0"},
		{"refund \u202egnp.exe", true, false, "U+202E at byte 7"},
		{"a\u200bb", false, false, "U+200B"},
		{"bell\a", true, false, "U+0007"},
		{"x\u0085y", true, false, "U+0085"},
		{strings.Repeat("é", MaxReason), true, true, ""},
		{strings.Repeat("é", MaxReason+1), true, false, "at most 500"},
	} {
		err := CheckReason(tc.reason, tc.required)
		ce, isCore := AsError(err)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q: refused: %v", tc.reason, err)
		case !tc.ok && (!isCore || ce.Field != "reason" || !strings.Contains(ce.Message, tc.says)):
			t.Errorf("%q: %v, want refused on reason saying %q", tc.reason, err, tc.says)
		}
	}
}
