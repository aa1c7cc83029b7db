package rest

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// registerErasure adds the route that erases a member's personal data.
func (s *Server) registerErasure(v1 *mux.Router) {
	v1.HandleFunc("/programs/{program}/members/{member}/erase", s.erase).
		Methods(http.MethodPost)
}

// erase asks the ledger to erase a member's personal data. X-Actor names
// the person who asked and the body gives the reason; both are kept.
func (s *Server) erase(w http.ResponseWriter, r *http.Request) {
	var in core.Erase
	s.write(w, r, core.KindErase, &in, func() (string, any, *time.Time, error) {
		if err := core.CheckReason(in.Reason, true); err != nil {
			return "", nil, nil, err
		}
		if strings.TrimSpace(r.Header.Get("X-Actor")) == "" {
			return "", nil, nil, core.Errorf(core.Invalid, "X-Actor",
				"header must name the person who asked for the erasure")
		}
		return memberVar(r), in, nil, nil
	})
}
