package rest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode"
)

// repeatedKey finds the first object key of the JSON text b that its object
// already holds, compared without regard to case, and answers its path
// (such as events[2].points). encoding/json keeps the last of two equal keys
// and matches a key to a field whatever its case, so {"points": 5,
// "Points": -5000} would move -5000 points while a proxy or a log reading the
// first key saw 5: such a body is refused instead. The walk stops at the
// first repeat; text that is not JSON before it answers false, for the
// decoder to say what is wrong with it.
func repeatedKey(b []byte) (string, bool) {
	s := keyScan{b: b}
	s.value()
	if s.bad || s.found == nil {
		return "", false
	}
	var p strings.Builder
	for _, seg := range s.found {
		switch {
		case seg.index >= 0:
			p.WriteString("[" + strconv.Itoa(seg.index) + "]")
		case p.Len() > 0:
			p.WriteString("." + string(seg.key))
		default:
			p.Write(seg.key)
		}
	}
	return p.String(), true
}

// keyScan walks one JSON value without building anything but the path of
// a repeated key; bad is set on text that is not JSON.
type keyScan struct {
	b     []byte
	i     int
	bad   bool
	path  []segment // where the walk is
	found []segment // the path of the first repeated key
	keys  [][]byte  // the keys of the objects the walk is in, innermost last
}

// segment is a step of a path: an object's key, or an array's index when
// index is not negative.
type segment struct {
	key   []byte
	index int
}

func (s *keyScan) done() bool { return s.bad || s.found != nil }

func (s *keyScan) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// maxDepth bounds how deep the walk follows nested objects and arrays: no
// body of the API nests more than a few levels, and a body of a million
// brackets would otherwise cost a million stack frames. Deeper text is
// left to the decoder, which refuses it.
const maxDepth = 100

// value skips one value at s.i, checking the keys of the objects in it.
func (s *keyScan) value() {
	s.space()
	if s.i >= len(s.b) || len(s.path) >= maxDepth {
		s.bad = true
		return
	}
	switch s.b[s.i] {
	case '{':
		s.object()
	case '[':
		s.array()
	case '"':
		s.str()
	default: // a number, true, false or null: up to the next delimiter
		for s.i < len(s.b) && strings.IndexByte(",]} \t\n\r", s.b[s.i]) < 0 {
			s.i++
		}
	}
}

func (s *keyScan) array() {
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return
	}
	s.path = append(s.path, segment{})
	defer func() { s.path = s.path[:len(s.path)-1] }()
	for n := 0; ; n++ {
		s.path[len(s.path)-1].index = n
		s.value()
		if !s.more(']') {
			return
		}
	}
}

// more reads what follows a member of an array or object: true after a
// comma, false at the closer (or when the walk is done or the text is not
// JSON).
func (s *keyScan) more(closer byte) bool {
	s.space()
	switch {
	case s.done():
		return false
	case s.i >= len(s.b):
		s.bad = true
		return false
	case s.b[s.i] == closer:
		s.i++
		return false
	case s.b[s.i] == ',':
		s.i++
		return true
	}
	s.bad = true
	return false
}

// object skips an object at s.i, comparing each key with those before it:
// in a list for a small object, in a map of lower-cased keys for a large
// one.
func (s *keyScan) object() {
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return
	}
	s.path = append(s.path, segment{index: -1})
	first := len(s.keys)
	defer func() { s.path, s.keys = s.path[:len(s.path)-1], s.keys[:first] }()
	var many map[string]bool
	for !s.done() {
		s.space()
		key := s.str()
		if s.bad {
			return
		}
		if many != nil {
			fold := foldKey(key)
			if many[fold] {
				s.repeated(key)
				return
			}
			many[fold] = true
		} else {
			for _, k := range s.keys[first:] {
				if bytes.EqualFold(k, key) {
					s.repeated(key)
					return
				}
			}
			s.keys = append(s.keys, key)
			if len(s.keys)-first > 16 {
				many = make(map[string]bool, 2*(len(s.keys)-first))
				for _, k := range s.keys[first:] {
					many[foldKey(k)] = true
				}
			}
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			s.bad = true
			return
		}
		s.i++
		s.path[len(s.path)-1].key = key
		s.value()
		if !s.more('}') {
			return
		}
	}
}

// foldKey is key with each letter replaced by the least of the letters
// Unicode folds it with (K, k and the Kelvin sign K all become K; s and
// the long s ſ become S), so that two keys equal under case folding, as
// bytes.EqualFold and encoding/json compare them, are equal strings.
func foldKey(key []byte) string {
	var b strings.Builder
	for _, r := range string(key) {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// repeated notes the path of key, repeated in the object the walk is in.
func (s *keyScan) repeated(key []byte) {
	s.found = append([]segment(nil), s.path...)
	s.found[len(s.found)-1].key = key
}

// str reads a string at s.i and answers its text, escapes decoded (the
// bytes of b themselves when it has none).
func (s *keyScan) str() []byte {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		s.bad = true
		return nil
	}
	start, escaped := s.i, false
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return raw[1 : len(raw)-1]
			}
			var text string
			if json.Unmarshal(raw, &text) != nil {
				s.bad = true
				return nil
			}
			return []byte(text)
		}
	}
	s.bad = true
	return nil
}
