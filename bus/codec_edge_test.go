package bus

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// Edge cases found in review: differential checks of the hand codec against
// encoding/json.

const edgeHead = `{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",`

func edgeCmd(payload, occurred, tail string) string {
	return edgeHead + `"payload":` + payload + `,"hash":"h","occurred_at":` + occurred +
		`,"received_at":"2026-12-05T00:00:00Z"` + tail + `}`
}

var edgeNastyCommands = func() []string {
	var out []string
	for _, p := range []string{
		`-0`, `1E400`, `-1e-400`, `0.0e+0`, `"\ud800"`, `"\u0000"`, "\"\x7f\"", "\"\xed\xa0\x80\"",
		"\"\xc0\x80\"", "\"\u2028\"", `[]`, `{}`, `[[[[[]]]]]`, `{"a":{"b":[{"c":null}]}}`,
		`true`, `false`, `null`, `nul`, `truex`, `1 2`, `1,2`, `[1]]`, `{"a":1}}`, `"a"` + `"b"`,
		`"\\"`, `"\\\""`, `"\"`, `01`, `+1`, `.5`, `1.`, `1e`, `-`, "\"\t\"",
		strings.Repeat("[", 9999) + strings.Repeat("]", 9999),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat("[", 9999) + `"x"` + strings.Repeat("]", 9999),
		`{"a":"}"}`, `{"a":"\\"}`, `["]"]`, `{"}":"{"}`,
	} {
		out = append(out, edgeCmd(p, `"2026-12-05T00:00:00Z"`, ""))
	}
	for _, ts := range []string{
		`"2026-12-05T1:00:00Z"`, `"2026-12-05T00:00:00,5Z"`, `"2026-12-05T00:00:00+24:00"`,
		`"2026-12-05T00:00:00-00:00"`, `"2026-12-05T00:00:00+23:59"`, `"2026-12-05T00:00:00+00:60"`,
		`"2026-12-05T00:00:00.123456789123Z"`, `"2026-12-05T00:00:00z"`, `"2026-12-05t00:00:00Z"`,
		`"0000-01-01T00:00:00Z"`, `"9999-12-31T23:59:59.999999999Z"`, `"2026-02-30T00:00:00Z"`,
		`"2026-12-05T24:00:00Z"`, `"2026-12-05T23:59:60Z"`, `"2026-12-05T00:00:00+05:30"`,
		`"2026-12-05 00:00:00Z"`, `"2026-12-05T00:00:00Z\u0000"`, `"2026-12-05T00:00:00\u005a"`,
		"\"2026-12-05T00:00:00Z\x00\"", "\"2026-12-05T00:00:00Z\xff\"", `null`, `""`, `"`,
		`"2026-12-05T00:00:00.Z"`, `"2026-12-05T00:00:00.1234567891Z"`, `"+2026-12-05T00:00:00Z"`,
		`"2026-1-05T00:00:00Z"`, `"2026-12-5T00:00:00Z"`, `"2026-12-05T00:0:00Z"`,
		`"2026-12-05T00:00:00+0500"`, `"2026-12-05T00:00:00+05:00:00"`, `"2026-12-05T00:00:00 Z"`,
	} {
		out = append(out, edgeCmd(`{}`, ts, ""))
	}
	for _, tail := range []string{
		`,"audit":{"action":"a","target":"b"}`, `,"audit":{"action":"a","target":"b","x":1}`,
		`,"audit":{"target":"b","action":"a"}`, `,"audit":{}`, `,"audit":null`,
		`,"audit":{"action":"a","target":"b"},"audit":{"action":"c","target":"d"}`,
		`,"Audit":{"action":"a","target":"b"}`, `,"audit":{"action":"a","target":"b"}`,
	} {
		out = append(out, edgeCmd(`{}`, `"2026-12-05T00:00:00Z"`, tail))
	}
	base := edgeCmd(`{}`, `"2026-12-05T00:00:00Z"`, "")
	out = append(out, "\ufeff"+base, base+" \t\r\n", base+"\x00", base+"\v", base+"\f",
		base+"\u00a0", " "+base,
		strings.Replace(base, `"member":"m"`, `"member":"m","actor":"","channel":""`, 1),
		strings.Replace(base, `"member":"m"`, `"member":"m","channel":"c","actor":"a"`, 1),
		strings.Replace(base, `"member":"m"`, "\"member\":\"\u2028\u2029\x7f\"", 1),
		strings.Replace(base, `"member":"m"`, "\"member\":\"\xf4\x90\x80\x80\"", 1),
		strings.Replace(base, `"member":"m"`, "\"member\":\"\xef\xbf\xbd\"", 1),
		strings.Replace(base, `"member":"m"`, "\"member\":\"\xe2\x80\"", 1),
		strings.Replace(base, `"id":"x"`, `"id":null`, 1),
		strings.Replace(base, `"id":"x"`, `"ID":"x"`, 1),
		strings.Replace(base, `"id":"x"`, `"id":"x","id":"y"`, 1),
	)
	for i := 1; i < len(base); i++ { // every truncation
		out = append(out, base[:i])
	}
	return out
}()

var edgeNastyResults = func() []string {
	h := `{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok"`
	var out []string
	for _, tail := range []string{
		``, `,"replayed":true`, `,"replayed":false`, `,"replayed":tru`,
		`,"replayed":true,"replayed":false`,
		`,"error":{"kind":"a","message":"m"}`, `,"error":{"kind":"a","field":"","message":"m"}`,
		`,"error":{"kind":"a","field":"f","message":"m"}`,
		`,"error":{"kind":"a","message":"m","field":"f"}`,
		`,"error":{"kind":"a","message":"m"},"error":null`, `,"data":null`, `,"data":1`, `,"data":"x"`,
		`,"data":{}`, `,"data":[]`, `,"data":1 `, `,"data": 1`, `,"data":1e999`, `,"data":-0`,
		`,"data":{"a":"\u2028<>&"}`, `,"data":{"a":1},"data":{"b":2}`, `,"data":"\\"`,
		`,"replayed":true,"error":{"kind":"a","message":"m"},"data":{}`,
		`,"data":{},"replayed":true`,
	} {
		out = append(out, h+tail+`}`)
	}
	full := h + `,"replayed":true,"error":{"kind":"a","field":"f","message":"m"},"data":{"a":[1,"]"]}}`
	for i := 1; i < len(full); i++ {
		out = append(out, full[:i])
	}
	return out
}()

// Both decoders read every nasty command and result as encoding/json does.
func TestEdgeDecodeNasty(t *testing.T) {
	for _, s := range append(edgeNastyCommands, edgeNastyResults...) {
		checkDecodeCommand(t, []byte(s))
		checkDecodeResult(t, []byte(s))
	}
}

// FuzzEdgeDecodeCommand is FuzzDecodeCommand with the nasty seeds.
func FuzzEdgeDecodeCommand(f *testing.F) {
	for _, s := range edgeNastyCommands {
		if len(s) < 2000 {
			f.Add([]byte(s))
		}
	}
	for _, s := range edgeNastyResults {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeCommand(t, data)
		checkDecodeResult(t, data)
	})
}

// checkAppendCommand compares AppendCommand with json.Marshal.
func checkAppendCommand(t *testing.T, c *Command) {
	t.Helper()
	want, wantErr := json.Marshal(c)
	got, err := AppendCommand([]byte("prefix"), c)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%#v: error %v, encoding/json says %v", c, err, wantErr)
	}
	if err != nil {
		if string(got) != "prefix" {
			t.Fatalf("%#v: wrote %q on error", c, got)
		}
		return
	}
	if string(got) != "prefix"+string(want) {
		t.Fatalf("%#v:\n got %q\nwant prefix%q", c, got, want)
	}
	checkDecodeCommand(t, want)
}

// FuzzEdgeAppendCommand checks AppendCommand's bytes against json.Marshal.
func FuzzEdgeAppendCommand(f *testing.F) {
	f.Add("id", "member <&>\u2028\u2029\x7f\xff", "", []byte(`{"a":"<\u2028>"}`), false,
		int64(0), int64(0), 0, true)
	f.Add("", "", "actor", []byte(nil), true, int64(1e9), int64(5), -5*3600, false)
	f.Add("x", "y", "z", []byte(" [1, 2] "), false, int64(253402300799), int64(999999999), 86399, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(253402300800), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(-62167219200), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(-62167219201), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(0), int64(0), -86400, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(0), int64(0), 86400, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(0), int64(0), -86399, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(0), int64(0), 59, true)
	f.Add("x", "y", "z", []byte("{}"), false, int64(0), int64(0), -59, true)
	f.Add("x", "y", "z", []byte(""), false, int64(0), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("\"\xe2\x80\xa8\""), false, int64(0), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("\"\xe2\""), false, int64(0), int64(0), 0, true)
	f.Add("x", "y", "z", []byte("\"\xff\""), false, int64(0), int64(0), 0, true)
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, payload []byte, nilPayload bool,
		sec, nsec int64, off int, audit bool) {
		loc := time.UTC
		if off != 0 {
			loc = time.FixedZone("z", off)
		}
		at := time.Unix(sec, nsec).In(loc)
		c := Command{ID: s1, Kind: s2, Source: s3, TxnID: s1 + s2, Program: s2, Member: s3 + s1,
			Actor: s3, Channel: s2, Payload: payload, Hash: s1, OccurredAt: at,
			ReceivedAt: at.Add(time.Duration(nsec))}
		if nilPayload {
			c.Payload = nil
		}
		if audit {
			c.Audit = &Audit{Action: s2, Target: s3, Actor: s1}
		}
		checkAppendCommand(t, &c)
	})
}

func TestEdgeAppendCommandEdges(t *testing.T) {
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	base := Command{ID: "x", Payload: json.RawMessage(`{}`), OccurredAt: at, ReceivedAt: at}
	for _, change := range []func(c *Command){
		func(c *Command) { c.Payload = json.RawMessage{} },
		func(c *Command) { c.Payload = json.RawMessage(" ") },
		func(c *Command) { c.Payload = json.RawMessage("\"\xe2\x80\xa9\u2028<>&\"") },
		func(c *Command) { c.Payload = json.RawMessage("\"\xe2\x80\xaa\"") },
		func(c *Command) { c.Payload = json.RawMessage("[\"\xe2\x80\"]") },
		func(c *Command) { c.Payload = json.RawMessage("\"\xe2\"") },
		func(c *Command) { c.Payload = json.RawMessage("\"a\xff\"") },
		func(c *Command) { c.Payload = json.RawMessage("\r\n{\"a\"\t:\t1}\r\n") },
		func(c *Command) { c.Payload = json.RawMessage("1e400") },
		func(c *Command) {
			c.Payload = json.RawMessage(strings.Repeat("[", 10001) + strings.Repeat("]", 10001))
		},
		func(c *Command) { c.Member = "\x7f\x00\u2028\u2029\xff\xfe<>&" },
		func(c *Command) { c.Audit = &Audit{Action: "<", Target: "\u2028"} },
		func(c *Command) { c.OccurredAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 86399)) },
		func(c *Command) { c.OccurredAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -86399)) },
		func(c *Command) { c.OccurredAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -86400)) },
		func(c *Command) { c.OccurredAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 30)) },
		func(c *Command) { c.OccurredAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -30)) },
		func(c *Command) { c.OccurredAt = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) },
		func(c *Command) { c.OccurredAt = time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC) },
		func(c *Command) { c.OccurredAt = time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)) },
		func(c *Command) { c.OccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.FixedZone("", -3600)) },
		func(c *Command) { c.OccurredAt = time.Unix(math.MaxInt64/2, 0) },
		func(c *Command) { c.OccurredAt = time.Unix(math.MinInt64/2, 0) },
		func(c *Command) { c.OccurredAt = time.Now() }, // monotonic reading
		func(c *Command) { c.OccurredAt = time.Now().Local() },
	} {
		c := base
		change(&c)
		checkAppendCommand(t, &c)
	}
}

// A failed AppendCommand should fail the way json.Marshal does: encoding/json
// wraps a time's refusal in a *json.MarshalerError.
func TestEdgeAppendCommandErrorKind(t *testing.T) {
	c := Command{Payload: json.RawMessage(`{}`),
		OccurredAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, wantErr := json.Marshal(c)
	_, err := AppendCommand(nil, &c)
	var me *json.MarshalerError
	if errors.As(wantErr, &me) && !errors.As(err, &me) {
		t.Errorf("AppendCommand error %q (%T); json.Marshal says %q (%T)", err, err, wantErr, wantErr)
	}
}

// encoding/json refuses a document nested deeper than 10,000 levels. The hand
// reader counts the depth of the payload (or data) alone, from zero, and
// forgets the object around it: a payload nested exactly 10,000 deep makes a
// document 10,001 deep, which encoding/json refuses and the hand path takes.
func TestEdgeDecodeDepthLimit(t *testing.T) {
	for _, depth := range []int{9999, 10000, 10001} {
		payload := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		for _, tc := range []struct {
			what string
			data []byte
			dec  func([]byte) error
			std  func([]byte) error
		}{
			{"command", []byte(edgeCmd(payload, `"2026-12-05T00:00:00Z"`, "")),
				func(b []byte) error { var c Command; return DecodeCommand(b, &c) },
				func(b []byte) error { var c Command; return json.Unmarshal(b, &c) }},
			{"result", []byte(`{"command_id":"c","source":"s","txn_id":"t","kind":"k",` +
				`"status":"ok","data":` +
				payload + `}`),
				func(b []byte) error { var r Result; return DecodeResult(b, &r) },
				func(b []byte) error { var r Result; return json.Unmarshal(b, &r) }},
		} {
			err, wantErr := tc.dec(tc.data), tc.std(tc.data)
			if (err != nil) != (wantErr != nil) {
				t.Errorf("%s with a payload nested %d deep: error %v, encoding/json says %v",
					tc.what, depth, err, wantErr)
			}
		}
	}
}
