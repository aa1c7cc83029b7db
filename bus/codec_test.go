package bus

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The codec knows every field of these types by name: adding one without
// teaching the codec would drop it on the bus.
func TestCodecKnowsEveryField(t *testing.T) {
	for typ, n := range map[reflect.Type]int{
		reflect.TypeFor[Command](): 13, reflect.TypeFor[Audit](): 3,
		reflect.TypeFor[Result](): 8, reflect.TypeFor[Error](): 3,
	} {
		if typ.NumField() != n {
			t.Errorf("%s has %d fields, bus/codec.go knows %d", typ, typ.NumField(), n)
		}
	}
}

func sampleCommands() []Command {
	lima := time.FixedZone("Lima", -5*3600)
	at := time.Date(2026, 12, 5, 2, 30, 0, 123456789, time.UTC)
	plain := Command{ID: "0193a5f0-0000-7000-8000-000000000001", Kind: "accrue",
		Source: "billing", TxnID: "T-1", Program: "telco", Member: "5491100000001",
		Payload: json.RawMessage(`{"type":"bill_paid","amount":"12.34","currency":"PEN"}`),
		Hash:    strings.Repeat("ab", 32), OccurredAt: at, ReceivedAt: at.Add(time.Second)}
	cmds := []Command{plain, {}}
	add := func(change func(c *Command)) {
		c := plain
		change(&c)
		cmds = append(cmds, c)
	}
	add(func(c *Command) { c.Actor, c.Channel = "ana@back.office", "call-centre" })
	add(func(c *Command) { c.Audit = &Audit{Action: "rule.saved", Target: "telco/base"} })
	add(func(c *Command) { c.Audit = &Audit{} })
	add(func(c *Command) {
		c.Audit = &Audit{Action: "partner.saved", Target: "telco/shop", Actor: "api:crm (ana)"}
	})
	add(func(c *Command) { c.Member = "Ñandú <&> \"quoted\" \\ \t\u2028" })
	add(func(c *Command) { c.TxnID = "bad \xff byte" })
	add(func(c *Command) { c.Payload = nil })
	add(func(c *Command) { c.Payload = json.RawMessage(`null`) })
	add(func(c *Command) { c.Payload = json.RawMessage(` { "a" : [1, 2, {"b":"<x>"}] } `) })
	add(func(c *Command) { c.Payload = json.RawMessage(`{"s":"}],\"{["}`) })
	add(func(c *Command) { c.Payload = json.RawMessage(`"\u2028 line"`) })
	add(func(c *Command) { c.Payload = json.RawMessage(`12.5e3`) })
	add(func(c *Command) { c.OccurredAt = at.In(lima) })
	add(func(c *Command) { c.OccurredAt, c.ReceivedAt = time.Time{}, time.Time{} })
	return cmds
}

// AppendCommand writes json.Marshal's bytes, and DecodeCommand reads them
// back into what json.Unmarshal gives.
func TestCommandCodec(t *testing.T) {
	for i, c := range sampleCommands() {
		want, wantErr := json.Marshal(c)
		got, err := AppendCommand([]byte("prefix"), &c)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("command %d: error %v, encoding/json says %v", i, err, wantErr)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("command %d:\n got %s\nwant prefix%s", i, got, want)
		}
		checkDecodeCommand(t, want)
	}
}

func TestAppendCommandRefuses(t *testing.T) {
	bad := []Command{
		{Payload: json.RawMessage(`{"a":`)},
		{Payload: json.RawMessage(`{}`), OccurredAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Payload: json.RawMessage(`{}`), ReceivedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for i, c := range bad {
		if _, wantErr := json.Marshal(c); wantErr == nil {
			t.Fatalf("command %d: encoding/json takes it", i)
		}
		got, err := AppendCommand([]byte("prefix"), &c)
		if err == nil || string(got) != "prefix" {
			t.Errorf("command %d: wrote %q, error %v; want an error and nothing written",
				i, got, err)
		}
	}
}

// checkDecode decodes data with decode and with encoding/json, into zero
// values, and fails when they differ in value or in whether they refuse it.
func checkDecode[T any](t *testing.T, data []byte, decode func([]byte, *T) error) {
	t.Helper()
	var want, got T
	wantErr := json.Unmarshal(data, &want)
	err := decode(data, &got)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, encoding/json says %v", data, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Errorf("%q:\n got %#v\nwant %#v", data, got, want)
	}
}

func checkDecodeCommand(t *testing.T, data []byte) {
	t.Helper()
	checkDecode(t, data, DecodeCommand)
}

func checkDecodeResult(t *testing.T, data []byte) {
	t.Helper()
	checkDecode(t, data, DecodeResult)
}

// Shapes the hand reader does not expect go to encoding/json, which reads
// or refuses them as it always did.
var oddCommands = []string{
	`{"kind":"accrue","id":"x","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{ "id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x\u0041","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z","extra":1}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{"a":1,},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{"a":"\x"},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-13-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z","audit":null}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"} x`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}` + "\n",
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m\xc3",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{"a":[1,2}],"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z",` +
		`"received_at":"2026-12-05T00:00:00Z","id":"y"}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":{},"hash":"h","occurred_at":"2026-12-05T00:00:00Z"`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":}`,
	`{"id":"x","kind":"accrue","source":"s","txn_id":"t","program":"p","member":"m",` +
		`"payload":"open`,
	`{"id":1}`, `null`, `[]`, ``, `{`, `{}`,
}

func TestDecodeCommandOddShapes(t *testing.T) {
	for _, s := range oddCommands {
		checkDecodeCommand(t, []byte(s))
	}
}

func sampleResults() []Result {
	ok := Result{CommandID: "0193a5f0-0000-7000-8000-000000000001", Source: "billing",
		TxnID: "T-1", Kind: "accrue", Status: StatusOK,
		Data: json.RawMessage(`{"member":"5491100000001","points":120,"balance":{"available":120}}`)}
	rs := []Result{ok, {}}
	add := func(change func(r *Result)) {
		r := ok
		change(&r)
		rs = append(rs, r)
	}
	add(func(r *Result) { r.Replayed = true })
	add(func(r *Result) {
		r.Status, r.Data = StatusRejected, nil
		r.Error = &Error{Kind: "insufficient", Field: "points", Message: `has 10, needs "20"`}
	})
	add(func(r *Result) { r.Error = &Error{Kind: "conflict", Message: "plain"} })
	add(func(r *Result) { r.Data = json.RawMessage(`null`) })
	add(func(r *Result) { r.TxnID = "ñ\u00e9 <b>" })
	return rs
}

func TestDecodeResult(t *testing.T) {
	for _, r := range sampleResults() {
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodeResult(t, data)
	}
	for _, s := range []string{
		`{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok","replayed":false}`,
		`{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok","data":{"a":}}`,
		`{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok","error":null}`,
		`{"status":"ok","command_id":"c","source":"s","txn_id":"t","kind":"k"}`,
		`{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok","data":[1] }`,
		`{"command_id":"c","source":"s","txn_id":"t","kind":"k","status":"ok"`,
		``, `null`, `{}`,
	} {
		checkDecodeResult(t, []byte(s))
	}
}

// The decoders agree with encoding/json on anything at all.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		if data, err := json.Marshal(c); err == nil {
			f.Add(data)
		}
	}
	for _, s := range oddCommands {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeCommand(t, data)
		checkDecodeResult(t, data)
	})
}

func FuzzDecodeResult(f *testing.F) {
	for _, r := range sampleResults() {
		if data, err := json.Marshal(r); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeResult(t, data)
	})
}

// BenchmarkCommandCodec compares the codec with encoding/json on a command
// of the REST batch route and its result.
func BenchmarkCommandCodec(b *testing.B) {
	c := sampleCommands()[0]
	data, _ := json.Marshal(c)
	r := sampleResults()[0]
	res, _ := json.Marshal(r)
	for _, bc := range []struct {
		name string
		run  func() error
	}{
		{"encode/codec", func() error { _, err := AppendCommand(nil, &c); return err }},
		{"encode/encoding-json", func() error { _, err := json.Marshal(c); return err }},
		{"decode/codec", func() error { var got Command; return DecodeCommand(data, &got) }},
		{"decode/encoding-json", func() error { var got Command; return json.Unmarshal(data, &got) }},
		{"result/codec", func() error { var got Result; return DecodeResult(res, &got) }},
		{"result/encoding-json", func() error { var got Result; return json.Unmarshal(res, &got) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
