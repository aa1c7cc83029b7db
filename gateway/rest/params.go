package rest

import (
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// pathChecks check a route's path variables by name, with the rule the
// write that makes the thing named applies, so that a read and a write
// refuse the same value with the same words. A variable not listed here (an
// order's, a conversion's, a file batch's or a key's id, a report's name)
// gets checkText.
var pathChecks = map[string]func(field, v string) error{
	"program": core.CheckCode,
	"code":    checkCodeText,
	"reward":  core.CheckCatalogCode,
	"partner": core.CheckCatalogCode,
	"member":  checkRef,
	"hold":    checkRef,
	"txn":     checkRef,
}

// pathOrder is the order path variables are checked in, outermost first,
// so that the first bad one of a path is the one named.
var pathOrder = []string{"program", "partner", "reward", "code", "member", "hold", "order",
	"conversion", "batch", "key", "txn", "name"}

// checkRef checks a reference or transaction id in a path, never empty there.
func checkRef(field, v string) error { return core.CheckRef(field, "", v) }

// checkCodeText checks a rule's or an external program's code only for
// what no code can hold: the ledger judges the rest (putExternal,
// updateRule), and records its refusal as the command's result.
func checkCodeText(field, v string) error {
	if why := core.TextFault(v, core.MaxCode); why != "" {
		return core.Errorf(core.Invalid, field, "%s; it must be %s", why, core.CodeRule)
	}
	return nil
}

// checkText refuses an id or a name that could not reach PostgreSQL as it
// is: not UTF-8, with NUL, or longer than any reference.
func checkText(field, v string) error {
	if why := core.TextFault(v, core.MaxRef); why != "" {
		return core.Errorf(core.Invalid, field, "%s", why)
	}
	return nil
}

// checkParams refuses a request whose path variables or query parameters
// are not fit to be read: each path variable must pass its rule
// (pathChecks), and no query parameter may hold bytes that are not UTF-8
// or NUL, which PostgreSQL refuses, turning a caller's mistake into a 500.
// It runs after authentication, before any handler reads the request.
func (s *Server) checkParams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkRequestParams(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkRequestParams is checkParams' test of one request: the first fault,
// path before query, or nil.
func checkRequestParams(r *http.Request) error {
	vars := mux.Vars(r)
	names := make([]string, 0, len(vars))
	for name := range vars {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		ia, ib := slices.Index(pathOrder, a), slices.Index(pathOrder, b)
		if ia < 0 {
			ia = len(pathOrder)
		}
		if ib < 0 {
			ib = len(pathOrder)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		check, ok := pathChecks[name]
		if !ok {
			check = checkText
		}
		if err := check(name, vars[name]); err != nil {
			return err
		}
	}

	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !textOK(k) {
			return core.Errorf(core.Invalid, "query",
				"has a parameter name that is not valid UTF-8 or holds NUL")
		}
		// Of two values one would be read and the other dropped without a
		// word (?limit=1&limit=2, two date patterns of a file).
		if len(q[k]) > 1 {
			return core.Errorf(core.Invalid, k, "is given %d times; give it once", len(q[k]))
		}
		for _, v := range q[k] {
			if !utf8.ValidString(v) {
				return core.Errorf(core.Invalid, k, "is not valid UTF-8")
			}
			if strings.IndexByte(v, 0) >= 0 {
				return core.Errorf(core.Invalid, k, "contains the NUL character")
			}
		}
	}

	// Who acts and through which channel are stored with every posting and
	// audit entry, as sent (a long name whole): only what the database
	// cannot store is refused.
	// Two transaction ids in one request: a proxy that keeps the other one
	// would make a retry apply again.
	for _, h := range []string{"Idempotency-Key", "X-Actor", "X-Channel"} {
		if n := len(r.Header.Values(h)); n > 1 {
			return core.Errorf(core.Invalid, h, "header is given %d times; give it once", n)
		}
	}
	for _, h := range []string{"X-Actor", "X-Channel"} {
		v := r.Header.Get(h)
		if !utf8.ValidString(v) {
			return core.Errorf(core.Invalid, h, "is not valid UTF-8; send text encoded as UTF-8")
		}
		if strings.IndexByte(v, 0) >= 0 {
			return core.Errorf(core.Invalid, h, "contains the NUL character")
		}
	}
	return nil
}

// textOK reports whether s is UTF-8 without NUL.
func textOK(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }
