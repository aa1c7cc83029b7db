package plainjson

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRaw(t *testing.T) {
	for _, tc := range []struct {
		in, value, rest string
		ok              bool
	}{
		{`{"a":[1,{"b":"}"}]},"x"`, `{"a":[1,{"b":"}"}]}`, `,"x"`, true},
		{`"say \"hi\" ]",1`, `"say \"hi\" ]"`, `,1`, true},
		{`12.5e3}`, `12.5e3`, `}`, true},
		{`true`, `true`, ``, true},
		{`[]]`, `[]`, `]`, true},
		{`{"a":1,}`, ``, ``, false},
		{`{"a":"\q"}`, ``, ``, false},
		{`{"a":1`, ``, ``, false},
		{`"open`, ``, ``, false},
		{`,`, ``, ``, false},
		{``, ``, ``, false},
		{`tru,`, ``, ``, false},
		{` 0}`, ``, ``, false},
		{`0 }`, ``, ``, false},
	} {
		r := NewReader([]byte(tc.in))
		v := r.Raw()
		if r.OK() != tc.ok || string(v) != tc.value || tc.ok && string(r.b) != tc.rest {
			t.Errorf("Raw(%q) = %q, ok %v, rest %q; want %q, ok %v, rest %q",
				tc.in, v, r.OK(), r.b, tc.value, tc.ok, tc.rest)
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`"plain",`, "plain", true},
		{`"ñandú"`, "ñandú", true},
		{`""`, "", true},
		{`"esc\"aped"`, "", false},
		{"\"tab\there\"", "", false},
		{"\"bad \xff\"", "", false},
		{`"open`, "", false},
		{`plain`, "", false},
	} {
		r := NewReader([]byte(tc.in))
		if got := r.String(); got != tc.want || r.OK() != tc.ok {
			t.Errorf("String(%q) = %q, ok %v; want %q, ok %v", tc.in, got, r.OK(), tc.want, tc.ok)
		}
		// After a no, every read says no.
		if !tc.ok && (r.Lit("") || r.Next("") || r.End()) {
			t.Errorf("String(%q): the reader goes on after a no", tc.in)
		}
	}
}

func TestAppendRawAndTime(t *testing.T) {
	for _, raw := range []string{`{"a":1}`, ` { "a" : "<&>" } `, `"\u2028"`, "\"\u2028\"", `[1, 2]`} {
		want, _ := json.Marshal(json.RawMessage(raw))
		got, ok := AppendRaw(nil, []byte(raw))
		if !ok || string(got) != string(want) {
			t.Errorf("AppendRaw(%q) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	if got, ok := AppendRaw([]byte("x"), []byte(`{"a":`)); ok || string(got) != "x" {
		t.Errorf("AppendRaw of broken JSON = %q, %v; want it refused", got, ok)
	}
	for _, at := range []time.Time{
		time.Date(2026, 12, 5, 2, 30, 0, 120, time.UTC),
		time.Date(2026, 12, 5, 2, 30, 0, 0, time.FixedZone("", -5*3600-1800)),
		{},
	} {
		want, _ := json.Marshal(at)
		got, err := AppendTime(nil, at)
		if err != nil || string(got) != string(want) {
			t.Errorf("AppendTime(%v) = %s, %v; want %s", at, got, err, want)
		}
	}
	if _, err := AppendTime(nil, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("AppendTime of the year 10000: no error")
	}
}
