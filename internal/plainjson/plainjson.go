// Package plainjson writes and reads, without reflection, the JSON shapes
// Puntos writes itself on its busiest paths: commands on the bus, their
// results, the ledger's stored results and events.
//
// Writing produces the bytes encoding/json produces. Reading is strict: a
// Reader accepts exactly the shape its caller expects, keys in the order the
// writer puts them, strings without escapes, and says no to anything else,
// so that its caller can hand the input to encoding/json instead. Either
// way the caller ends up with the value encoding/json would have decoded.
package plainjson

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// AppendString appends s quoted as encoding/json quotes it. Plain ASCII
// (references, codes, ids) is copied as it is; any other string goes
// through encoding/json, which escapes it.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' ||
			c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendTime appends t as encoding/json writes a time.Time (RFC 3339 with
// nanoseconds), and refuses, as it does, a time RFC 3339 cannot say.
func AppendTime(b []byte, t time.Time) ([]byte, error) {
	if _, off := t.Zone(); t.Year() < 0 || t.Year() > 9999 || off <= -24*3600 ||
		off >= 24*3600 {
		text, err := t.MarshalJSON()
		return append(b, text...), err
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// AppendRaw appends raw, a JSON value, as encoding/json writes a
// json.RawMessage: nil as null, anything else compacted with <, > and &
// escaped. It reports false when raw is not valid JSON.
func AppendRaw(b []byte, raw []byte) ([]byte, bool) {
	if raw == nil {
		return append(b, "null"...), true
	}
	if !json.Valid(raw) {
		return b, false
	}
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xe2: // 0xe2 leads U+2028, U+2029
			var compact []byte
			if q, err := json.Marshal(json.RawMessage(raw)); err == nil {
				compact = q
			}
			return append(b, compact...), compact != nil
		}
	}
	return append(b, raw...), true
}

// Reader reads one JSON value of a known shape from the start of its input.
// Each method reads the next token when it is what the caller expects and
// reports whether it was; after the first no, every call says no.
type Reader struct {
	b  []byte
	ok bool
}

// NewReader returns a Reader of data.
func NewReader(data []byte) *Reader { return &Reader{b: data, ok: true} }

// OK tells whether everything read so far was as expected.
func (r *Reader) OK() bool { return r.ok }

// Lit reads the bytes of s exactly.
func (r *Reader) Lit(s string) bool {
	if !r.ok || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		r.ok = false
		return false
	}
	r.b = r.b[len(s):]
	return true
}

// Next reads s if the input goes on with it, and says whether it did,
// without counting a no as a failure: for optional keys.
func (r *Reader) Next(s string) bool {
	if !r.ok || len(r.b) < len(s) || string(r.b[:len(s)]) != s {
		return false
	}
	r.b = r.b[len(s):]
	return true
}

// String reads a string without escapes or control characters; any other
// string is a no.
func (r *Reader) String() string {
	if !r.ok || len(r.b) == 0 || r.b[0] != '"' {
		r.ok = false
		return ""
	}
	ascii := true
	end := 1
	for ; end < len(r.b); end++ {
		c := r.b[end]
		if c == '"' || c == '\\' || c < 0x20 {
			break
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	// encoding/json replaces bytes that are not UTF-8: leave those to it.
	if end == len(r.b) || r.b[end] != '"' || !ascii && !utf8.Valid(r.b[1:end]) {
		r.ok = false
		return ""
	}
	s := string(r.b[1:end])
	r.b = r.b[end+1:]
	return s
}

// Time reads a string as encoding/json reads a time.Time.
func (r *Reader) Time() time.Time {
	if !r.ok || len(r.b) < 2 || r.b[0] != '"' {
		r.ok = false
		return time.Time{}
	}
	end := 1
	for end < len(r.b) && r.b[end] != '"' && r.b[end] != '\\' {
		end++
	}
	var t time.Time
	if end == len(r.b) || r.b[end] != '"' || t.UnmarshalJSON(r.b[:end+1]) != nil {
		r.ok = false
		return time.Time{}
	}
	r.b = r.b[end+1:]
	return t
}

// Raw reads any valid JSON value and returns its bytes, which share the
// input's memory. The value is taken to be a member of an object, one level
// down: it may nest one level less than encoding/json allows a document.
func (r *Reader) Raw() []byte {
	if !r.ok {
		return nil
	}
	end, ok := valueEnd(r.b, maxDepth-1)
	// encoding/json leaves white space around a value out of it: let it.
	if !ok || space(r.b[0]) || space(r.b[end-1]) || !json.Valid(r.b[:end]) {
		r.ok = false
		return nil
	}
	v := r.b[:end:end]
	r.b = r.b[end:]
	return v
}

// End reads the end of the input: nothing may follow but white space.
func (r *Reader) End() bool {
	if !r.ok {
		return false
	}
	for _, c := range r.b {
		if !space(c) {
			r.ok = false
			return false
		}
	}
	r.b = nil
	return true
}

func space(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// maxDepth bounds the nesting valueEnd follows, as encoding/json bounds its
// own (at 10,000).
const maxDepth = 10000

// valueEnd finds where the JSON value at the start of b ends: after its
// closing bracket, or before the comma, brace or bracket that follows a
// scalar. It only counts brackets and skips strings; json.Valid then
// checks what it found. It says no to a value nested deeper than limit.
func valueEnd(b []byte, limit int) (int, bool) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return 0, false
			}
			if depth == 0 {
				return i + 1, true
			}
		case '{', '[':
			if depth++; depth > limit {
				return 0, false
			}
		case '}', ']':
			if depth == 0 {
				return i, i > 0
			}
			if depth--; depth == 0 {
				return i + 1, true
			}
		case ',':
			if depth == 0 {
				return i, i > 0
			}
		}
	}
	return len(b), depth == 0 && len(b) > 0
}
