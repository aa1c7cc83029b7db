package core

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// blankLetter tells the letters that show nothing (the Hangul fillers, the
// blank Braille pattern), which a reason made only of would seem given and
// read empty.
func blankLetter(r rune) bool {
	switch r {
	case '\u115F', '\u1160', '\u3164', '\uFFA0', '\u2800':
		return true
	}
	return false
}

// bidiControl tells the embeddings, overrides and isolates of
// bidirectional text (U+202A-U+202E, U+2066-U+2069), which change the
// order the text around them is shown in.
func bidiControl(r rune) bool {
	return (r >= '\u202A' && r <= '\u202E') || (r >= '\u2066' && r <= '\u2069')
}

// ErrorKind is one of the few kinds of failure that every edge of Puntos
// knows how to present: an HTTP status, a SOAP fault code, a file line result.
type ErrorKind string

// The error kinds.
const (
	Invalid      ErrorKind = "invalid"      // the request itself is wrong
	NotFound     ErrorKind = "not_found"    // a program, member, hold or posting is unknown
	Conflict     ErrorKind = "conflict"     // the request clashes with the ledger's state
	Insufficient ErrorKind = "insufficient" // not enough spendable points
	Unauthorized ErrorKind = "unauthorized" // the caller is not known: no key, or a wrong one
	Forbidden    ErrorKind = "forbidden"    // the caller is known but may not do this
	Unavailable  ErrorKind = "unavailable"  // a dependency is down; retry later
	Internal     ErrorKind = "internal"     // a fault of ours
)

// Error is a domain error: a kind, the field at fault when there is one, and
// a message meant for the caller.
type Error struct {
	Kind    ErrorKind
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// Errorf builds a domain error of the given kind about field.
func Errorf(kind ErrorKind, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err: the kind of the first domain error in its
// chain, or Internal when there is none.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// AsError returns the domain error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// MaxReason bounds, in characters, the reason a caller gives for a change
// of points: it is kept on the posting and shown on every statement.
const MaxReason = 500

// CheckReason refuses a reason longer than MaxReason, one holding control
// characters other than tabs and line breaks (an escape sequence rewrites
// a terminal showing the log) or the controls of bidirectional text (a
// right-to-left override or isolate makes a statement or the audit log
// read otherwise than it was written), and an empty one (nothing visible)
// when required, naming the field reason. Other format characters are
// part of writing (the joiners of Persian words and emoji, a soft hyphen,
// left-to-right marks) and pass.
func CheckReason(reason string, required bool) error {
	if n := utf8.RuneCountInString(reason); n > MaxReason {
		return Errorf(Invalid, "reason", "is %d characters; at most %d", n, MaxReason)
	}
	visible, err := plainText("reason", reason, true)
	if err != nil {
		return err
	}
	if required && !visible {
		return Errorf(Invalid, "reason", "is required")
	}
	return nil
}

// CheckLine refuses, naming field, a one-line text a caller gives (another
// program's reference, say) that is not valid UTF-8 or holds control
// characters, line breaks and tabs included, or the controls of
// bidirectional text, as CheckReason does for reasons.
func CheckLine(field, s string) error {
	_, err := plainText(field, s, false)
	return err
}

// checkName refuses a display name (a program's, a reward's, a partner's)
// that CheckLine would refuse, such as one turned around by a
// right-to-left override so that the back office shows something else, or
// a required one of which nothing shows.
func checkName(name string, required bool) error {
	visible, err := plainText("name", name, false)
	if err != nil {
		return err
	}
	switch {
	case required && !visible:
		return Errorf(Invalid, "name", "is required: nothing of it shows")
	case name != "" && !visible:
		return Errorf(Invalid, "name", "shows nothing: leave it empty or write one that shows")
	}
	return nil
}

// plainText checks s as CheckReason and CheckLine describe, allowing tabs
// and line breaks when breaks is set, and reports whether anything in it
// shows.
func plainText(field, s string, breaks bool) (visible bool, err error) {
	if !utf8.ValidString(s) {
		i := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		return false, Errorf(Invalid, field, "is not valid UTF-8 (byte %d); send text "+
			"encoded as UTF-8", i)
	}
	for i, r := range s {
		allowed := breaks && (r == '\t' || r == '\n' || r == '\r')
		if (unicode.IsControl(r) && !allowed) || bidiControl(r) {
			return false, Errorf(Invalid, field, "holds the control character %U at byte %d; "+
				"write it in plain text", r, i)
		}
		// Letters, numbers, punctuation and symbols show; marks alone,
		// spaces, format characters and the blank letters do not.
		if unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S) && !blankLetter(r) {
			visible = true
		}
	}
	return visible, nil
}
