package rest

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/gateway/files"
)

// filesService serves bulk point loads from files.
type filesService = files.Service

// MountFiles has the server serve the bulk point-load routes of svc
// (gateway/files) under /v1, behind the same API-key check and with the
// same problem documents. Call it before Register. Without it the routes
// answer 503.
func (s *Server) MountFiles(svc *files.Service) {
	svc.SetEdge(func(r *http.Request) string { return caller(r).Source }, s.writeError)
	s.files = svc
}

// registerFiles adds the batch routes; see gateway/files.
func (s *Server) registerFiles(v1 *mux.Router) {
	s.files.Register(v1)
}
