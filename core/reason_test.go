package core

import (
	"strings"
	"testing"
)

func TestCheckReasonRefusesControlText(t *testing.T) {
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
		{"\u200b", true, false, "is required"},
		{"\u3164\u2800 \u115f\u1160\uffa0", true, false, "is required"},
		{"\u034f\ufe0f\u17b4\u17b5\U000e0100\u180b", true, false, "is required"},
		{"e\u0301", true, true, ""},
		{"refund \u202egnp.exe", true, false, "U+202E at byte 7"},
		{"\u2066isolated\u2069", false, false, "U+2066"},
		{"\x1b[2Jcleared", false, false, "U+001B"},
		// Joiners, soft hyphens and marks are part of writing.
		{"regalo 👨\u200d👩\u200d👧", true, true, ""},
		{"می\u200cخواهم", true, true, ""},
		{"co\u00adoperation", true, true, ""},
		{"\u05e9\u05dc\u05d5\u05dd\u200e 2026", true, true, ""},
		{"bell\a", true, false, "U+0007"},
		{"x\u0085y", true, false, "U+0085"},
		{strings.Repeat("é", MaxReason), true, true, ""},
		{strings.Repeat("é", MaxReason+1), true, false, "at most 500"},
		// Bytes that are not UTF-8 (a Latin-1 "ñ") are named by their offset.
		{"a\xf1o nuevo", true, false, "not valid UTF-8 (byte 1)"},
		{"\ufffd is a real character", true, true, ""},
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

// Another program's reference is one line of plain text: no breaks, tabs,
// controls, bidi overrides or bytes that are not UTF-8.
func TestCheckLine(t *testing.T) {
	for _, tc := range []struct {
		s, says string
	}{
		{"SKY-2026-000123", ""},
		{"réf 12", ""},
		{"AB\u202eCD", "U+202E at byte 2"},
		{"AB\x1b[2J", "U+001B at byte 2"},
		{"line\nbreak", "U+000A"},
		{"tab\there", "U+0009"},
		{"\xff", "not valid UTF-8 (byte 0)"},
	} {
		err := CheckLine("reference", tc.s)
		ce, isCore := AsError(err)
		switch {
		case tc.says == "" && err != nil:
			t.Errorf("%q: refused: %v", tc.s, err)
		case tc.says != "" && (!isCore || ce.Field != "reference" ||
			!strings.Contains(ce.Message, tc.says)):
			t.Errorf("%q: %v, want refused on reference saying %q", tc.s, err, tc.says)
		}
	}
}
