package core

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrorKind is one of the few kinds of failure that every edge of Puntos
// knows how to present: an HTTP status, a SOAP fault code, a file line result.
type ErrorKind string

// The error kinds.
const (
	Invalid      ErrorKind = "invalid"      // the request itself is wrong
	NotFound     ErrorKind = "not_found"    // a program, member, hold or posting is unknown
	Conflict     ErrorKind = "conflict"     // the request clashes with the ledger's state
	Insufficient ErrorKind = "insufficient" // not enough spendable points
	Unauthorized ErrorKind = "unauthorized" // the caller may not do this
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

// CheckReason refuses a reason longer than MaxReason, and an empty one
// (only spaces) when required, naming the field reason.
func CheckReason(reason string, required bool) error {
	if required && strings.TrimSpace(reason) == "" {
		return Errorf(Invalid, "reason", "is required")
	}
	if n := utf8.RuneCountInString(reason); n > MaxReason {
		return Errorf(Invalid, "reason", "is %d characters; at most %d", n, MaxReason)
	}
	return nil
}
