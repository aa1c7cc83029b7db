package rest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestRepeatedKey(t *testing.T) {
	for _, tc := range []struct {
		in, path string
		found    bool
	}{
		{`{"points":5,"points":-5000,"reason":"dup"}`, "points", true},
		{`{"points":5,"Points":-5000}`, "Points", true},
		{`{"po\u0069nts":5,"points":1}`, "points", true},
		{`{"points":5,"pointſ":-5000}`, "pointſ", true},
		{`{"kind":1,"\u212aind":2}`, "\u212aind", true},
		{`{"events":[{"txn_id":"a","amount":"1"},{"txn_id":"b","amount":"1","AMOUNT":"9"}]}`,
			"events[1].AMOUNT", true},
		{`{"a":{"b":[{"c":1},{"c":2,"d":{"e":1,"e":2}}]}}`, "a.b[1].d.e", true},
		{`{"events":[],"events":[{"txn_id":"x"}]}`, "events", true},
		// Equal keys in different objects, and values equal to keys, are fine.
		{`{"a":{"x":1},"b":{"x":1},"c":["a","a"],"d":"a"}`, "", false},
		{`{"k\"":1,"k":2}`, "", false},
		{`{}`, "", false},
		{`[{},{}]`, "", false},
		// Not JSON before any repeat: left to the decoder.
		{`{"a":1,"b"`, "", false},
		{`{"a":1,}`, "", false},
		{`{"a" 1,"a":2}`, "", false},
	} {
		path, found := repeatedKey([]byte(tc.in))
		if path != tc.path || found != tc.found {
			t.Errorf("%s: %q %v, want %q %v", tc.in, path, found, tc.path, tc.found)
		}
	}
	// Nesting past maxDepth is left to the decoder, in constant stack.
	deep := []byte(strings.Repeat("[", 1<<20))
	if _, found := repeatedKey(deep); found {
		t.Fatal("a repeat found in a million brackets")
	}
	deep = []byte(strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat("}", 200))
	if _, found := repeatedKey(deep); found {
		t.Fatal("a repeat found in distinct nested objects")
	}
	// A large object (past the list of 16) is compared through the map.
	obj := map[string]int{}
	for i := range 40 {
		obj[string(rune('a'+i%26))+string(rune('a'+i/26))] = i
	}
	b, _ := json.Marshal(obj)
	if _, found := repeatedKey(b); found {
		t.Fatalf("%s: a repeat found in distinct keys", b)
	}
	b = append(b[:len(b)-1], []byte(`,"AA":1}`)...)
	if path, found := repeatedKey(b); !found || path != "AA" {
		t.Fatalf("%s: %q %v, want AA repeated", b, path, found)
	}
}

// BenchmarkRepeatedKey walks a batch of 500 accrual events, as the load
// generator sends them, looking for a repeated key.
func BenchmarkRepeatedKey(b *testing.B) {
	var evs []string
	for i := range 500 {
		evs = append(evs, fmt.Sprintf(`{"member":"M-%06d","txn_id":"c-3-117-%d",`+
			`"type":"purchase","amount":"10","occurred_at":"2026-12-05T12:00:00Z"}`, i, i))
	}
	body := []byte(`{"events":[` + strings.Join(evs, ",") + `]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, found := repeatedKey(body); found {
			b.Fatal("a repeat found")
		}
	}
}
