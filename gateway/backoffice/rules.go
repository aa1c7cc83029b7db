package backoffice

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// rulesReader is what the rules page needs of the ledger beyond Reader.
type rulesReader interface {
	Rules(ctx context.Context, program string) ([]core.Rule, error)
	Simulate(ctx context.Context, program string,
		in postgres.SimulateEvent) (*postgres.Simulation, error)
}

// rulesView is the rules page: the rules in force and, after a
// simulation, what the event would earn.
type rulesView struct {
	Programs []string
	Program  string
	Rules    []core.Rule
	Event    postgres.SimulateEvent
	Result   *postgres.Simulation
}

// rulesPage lists a program's conversion rules and simulates an event
// against them. Simulating posts nothing, so every role may use it.
// TODO(backoffice): editing rules here; for now they change through the
// REST API (POST/PUT /v1/programs/{program}/rules).
func (s *Server) rulesPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	rr, ok := s.read.(rulesReader)
	if !ok {
		s.fail(w, r, sess, http.StatusNotImplemented, "Rules are not available here.", nil)
		return
	}
	q := r.URL.Query()
	v := rulesView{Program: q.Get("program")}
	var err error
	if v.Programs, err = s.programCodes(ctx); err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	if v.Program == "" && len(v.Programs) > 0 {
		v.Program = v.Programs[0]
	}
	page := view{Title: "Rules", User: sess, Data: &v}
	if v.Program == "" {
		s.render(w, r, http.StatusOK, "rules.html", page)
		return
	}
	if v.Rules, err = rr.Rules(ctx, v.Program); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	v.Event = postgres.SimulateEvent{Member: strings.TrimSpace(q.Get("member")),
		Type: strings.TrimSpace(q.Get("type")), Amount: strings.TrimSpace(q.Get("amount")),
		Channel: q.Get("channel"), Partner: q.Get("partner")}
	status := http.StatusOK
	if q.Has("simulate") {
		v.Result, err = rr.Simulate(ctx, v.Program, v.Event)
		var ce *core.Error
		switch {
		case err == nil:
		case errors.As(err, &ce):
			status, page.Problem = http.StatusBadRequest, "Cannot simulate: "+ce.Error()
		default:
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
	}
	s.render(w, r, status, "rules.html", page)
}
