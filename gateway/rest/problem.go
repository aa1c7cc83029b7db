package rest

import (
	"encoding/json"
	"net/http"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// statusOf is the one table from error kind to HTTP status.
var statusOf = map[core.ErrorKind]int{
	core.Invalid:      http.StatusBadRequest,
	core.NotFound:     http.StatusNotFound,
	core.Conflict:     http.StatusConflict,
	core.Insufficient: http.StatusUnprocessableEntity,
	core.Unauthorized: http.StatusUnauthorized,
	core.Forbidden:    http.StatusForbidden,
	core.Unavailable:  http.StatusServiceUnavailable,
	core.Internal:     http.StatusInternalServerError,
}

var titleOf = map[core.ErrorKind]string{
	core.Invalid:      "Invalid request",
	core.NotFound:     "Not found",
	core.Conflict:     "Conflict",
	core.Insufficient: "Insufficient points",
	core.Unauthorized: "Unauthorized",
	core.Forbidden:    "Forbidden",
	core.Unavailable:  "Service unavailable",
	core.Internal:     "Internal error",
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Field    string `json:"field,omitempty"`
	Kind     string `json:"kind"`
	Instance string `json:"instance,omitempty"`
	TxnID    string `json:"txn_id,omitempty"`
}

// writeError answers with the problem document for err. Client mistakes are
// logged at Warn, our own faults at Error.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := core.AsError(err); !ok && postgres.Unreachable(err) {
		// The database is down or the connection broke: a state to wait
		// out, not a fault of the request (it answered 500 "retry with the
		// same Idempotency-Key", even to a read).
		s.log.Error("Database not reachable", "method", r.Method, "path", r.URL.Path,
			"error", err)
		err = core.Errorf(core.Unavailable, "", "the ledger's database is not reachable "+
			"now; retry shortly")
	}
	kind := core.KindOf(err)
	p := Problem{Type: "urn:puntos:error:" + string(kind), Title: titleOf[kind],
		Status: statusOf[kind], Kind: string(kind), Instance: r.URL.Path,
		TxnID: r.Header.Get("Idempotency-Key")}
	if de, ok := core.AsError(err); ok {
		p.Detail, p.Field = de.Error(), de.Field
	} else if r.Method == http.MethodGet || r.Method == http.MethodHead {
		p.Detail = "the request could not be completed; it may be retried"
	} else {
		p.Detail = "the request could not be completed; it may be retried with the same " +
			"Idempotency-Key"
	}
	if p.Status >= 500 {
		s.log.Error("Request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	} else {
		s.log.Warn("Request refused", "method", r.Method, "path", r.URL.Path, "kind", kind,
			"field", p.Field, "detail", p.Detail)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	if kind == core.Unauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="puntos"`)
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
