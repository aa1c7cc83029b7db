package plainjson

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzEdgeReader hunts panics in the Reader on any input, and checks that
// what Raw takes is what encoding/json takes as a RawMessage in an array.
func FuzzEdgeReader(f *testing.F) {
	for _, s := range []string{`"a"`, `"\`, `"`, `{"a":[1,"\\"]}`, `1,`, `[`, `]`, `}`,
		`"2026-12-05T00:00:00Z"`,
		`"2026-12-05T1:00:00,5+23:59"`, `tru`, `"x\"`, `1 `, ` 1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i := 0; i < 5; i++ {
			r := NewReader(data)
			switch i {
			case 0:
				_ = r.String()
			case 1:
				_ = r.Time()
			case 2:
				v := r.Raw()
				if r.OK() && r.End() {
					var want []json.RawMessage
					in := append(append([]byte("["), data...), ']')
					if err := json.Unmarshal(in, &want); err != nil || len(want) != 1 ||
						string(want[0]) != string(v) {
						t.Fatalf("Raw(%q) = %q; encoding/json: %q, %v", data, v, want, err)
					}
				}
			case 3:
				r.Lit(`{`)
				_ = r.Raw()
				r.Next(`,`)
				_ = r.String()
				r.End()
			case 4:
				_, _ = valueEnd(data, maxDepth)
			}
		}
		want, wantErr := json.Marshal(json.RawMessage(data))
		got, ok := AppendRaw([]byte("p"), data)
		if ok != (wantErr == nil) || ok && string(got) != "p"+string(want) || !ok && string(got) != "p" {
			t.Fatalf("AppendRaw(%q) = %q, %v; encoding/json %q, %v", data, got, ok, want, wantErr)
		}
		s := string(data)
		wantS, _ := json.Marshal(s)
		if gotS := AppendString(nil, s); string(gotS) != string(wantS) {
			t.Fatalf("AppendString(%q) = %q; want %q", s, gotS, wantS)
		}
	})
}

func FuzzEdgeAppendTime(f *testing.F) {
	f.Add(int64(0), int64(0), 0)
	f.Add(int64(253402300799), int64(999999999), 86399)
	f.Add(int64(-62167219200), int64(0), -86399)
	f.Add(int64(-62167219200), int64(0), 1)
	f.Add(int64(-62167219200), int64(0), -1)
	f.Add(int64(253402300799), int64(0), 1)
	f.Fuzz(func(t *testing.T, sec, nsec int64, off int) {
		at := time.Unix(sec, nsec).In(time.FixedZone("", off))
		want, wantErr := json.Marshal(at)
		got, err := AppendTime([]byte("p"), at)
		if (err != nil) != (wantErr != nil) || err == nil && string(got) != "p"+string(want) {
			t.Fatalf("AppendTime(%v) = %q, %v; encoding/json %q, %v", at, got, err, want, wantErr)
		}
	})
}
