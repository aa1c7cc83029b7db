package rest

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// expiringReader lists members with points expiring soon; the ledger
// implements it.
type expiringReader interface {
	Expiring(ctx context.Context, program string, days int, cursor string,
		limit int) (*postgres.ExpiringPage, error)
}

// registerExpiry adds the routes of the expiry engine.
func (s *Server) registerExpiry(v1 *mux.Router) {
	v1.HandleFunc("/programs/{program}/expiring", s.getExpiring).Methods(http.MethodGet)
}

// getExpiring answers the members with points expiring within ?days=
// (default 30), one page at a time.
func (s *Server) getExpiring(w http.ResponseWriter, r *http.Request) {
	er, ok := s.read.(expiringReader)
	if !ok {
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "expiring points are not served here"))
		return
	}
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > core.MaxNoticeDays {
			s.writeError(w, r, core.Errorf(core.Invalid, "days",
				"must be a whole number from 1 to %d", core.MaxNoticeDays))
			return
		}
		days = n
	}
	limit, err := queryInt(r, "limit", 50)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	page, err := er.Expiring(r.Context(), mux.Vars(r)["program"], days,
		r.URL.Query().Get("cursor"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
