package rest

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// RulesReader answers the rules engine's queries. The ledger implements it;
// a Reader without it answers those routes with 503.
type RulesReader interface {
	Rules(ctx context.Context, program string) ([]core.Rule, error)
	RuleVersions(ctx context.Context, program, code string) ([]core.Rule, error)
	Simulate(ctx context.Context, program string,
		in postgres.SimulateEvent) (*postgres.Simulation, error)
	MemberTier(ctx context.Context, program, ref string, at time.Time) (*core.TierStatus, error)
}

// registerRules adds the routes of the rules engine: rules and their
// versions, simulation, member attributes and tiers.
func (s *Server) registerRules(v1 *mux.Router) {
	p := "/programs/{program}"
	v1.HandleFunc(p+"/rules", s.createRule).Methods(http.MethodPost)
	v1.HandleFunc(p+"/rules", s.listRules).Methods(http.MethodGet)
	v1.HandleFunc(p+"/rules/{code}", s.getRule).Methods(http.MethodGet)
	v1.HandleFunc(p+"/rules/{code}", s.updateRule).Methods(http.MethodPut)
	v1.HandleFunc(p+"/rules/{code}", s.retireRule).Methods(http.MethodDelete)
	v1.HandleFunc(p+"/simulate", s.simulate).Methods(http.MethodGet)
	v1.HandleFunc(p+"/tiers", s.putTiers).Methods(http.MethodPut)
	v1.HandleFunc(p+"/members/{member}/attributes", s.putAttributes).Methods(http.MethodPut)
	v1.HandleFunc(p+"/members/{member}/tier", s.getTier).Methods(http.MethodGet)
}

func (s *Server) rulesReader(w http.ResponseWriter, r *http.Request) (RulesReader, bool) {
	rr, ok := s.read.(RulesReader)
	if !ok {
		s.writeError(w, r, core.Errorf(core.Unavailable, "", "rules are not served here"))
	}
	return rr, ok
}

// checkRule validates a rule at the edge, as core will, so that a bad rule
// is refused before it uses the caller's transaction id.
func checkRule(rule *core.Rule) error {
	if rule.Version != 0 || rule.Until != nil || rule.Retired {
		return core.Errorf(core.Invalid, "version",
			"version, until and retired are assigned by Puntos")
	}
	if rule.Rounding == "" {
		rule.Rounding = core.RoundDown
	}
	return rule.Validate()
}

func (s *Server) createRule(w http.ResponseWriter, r *http.Request) {
	var in core.Rule
	s.write(w, r, core.KindRuleUpsert, &in, func() (string, any, *time.Time, error) {
		if err := checkRule(&in); err != nil {
			return "", nil, nil, err
		}
		return "", postgres.RuleUpsert{Rule: in, Mode: "create"}, nil, nil
	})
}

func (s *Server) updateRule(w http.ResponseWriter, r *http.Request) {
	var in core.Rule
	s.write(w, r, core.KindRuleUpsert, &in, func() (string, any, *time.Time, error) {
		code := mux.Vars(r)["code"]
		if in.Code != "" && in.Code != code {
			return "", nil, nil, core.Errorf(core.Invalid, "code", "differs from the path")
		}
		in.Code = code
		if err := checkRule(&in); err != nil {
			// A malformed code in the path names no rule: core refuses it,
			// naming the field, like an unknown one.
			if e, ok := core.AsError(err); !ok || e.Field != "code" {
				return "", nil, nil, err
			}
		}
		return "", postgres.RuleUpsert{Rule: in, Mode: "update"}, nil, nil
	})
}

type retireBody struct {
	At *time.Time `json:"at"`
}

func (s *Server) retireRule(w http.ResponseWriter, r *http.Request) {
	var in retireBody
	s.write(w, r, core.KindRuleRetire, &in, func() (string, any, *time.Time, error) {
		return "", core.RuleRetire{Code: mux.Vars(r)["code"], At: in.At}, nil, nil
	})
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	rr, ok := s.rulesReader(w, r)
	if !ok {
		return
	}
	rules, err := rr.Rules(r.Context(), mux.Vars(r)["program"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": rules})
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) {
	rr, ok := s.rulesReader(w, r)
	if !ok {
		return
	}
	versions, err := rr.RuleVersions(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["code"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rule": versions[len(versions)-1],
		"versions": versions})
}

// simulate answers what an event would earn, posting nothing. It is a GET:
// it changes nothing and needs no transaction id.
func (s *Server) simulate(w http.ResponseWriter, r *http.Request) {
	rr, ok := s.rulesReader(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	in := postgres.SimulateEvent{Member: q.Get("member"), Type: q.Get("type"),
		Amount: strings.TrimSpace(q.Get("amount")), Currency: q.Get("currency"),
		Partner: q.Get("partner"), Channel: q.Get("channel")}
	if v := q.Get("occurred_at"); v != "" {
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeError(w, r, core.Errorf(core.Invalid, "occurred_at",
				"must be an RFC 3339 timestamp with an offset, such as 2026-03-01T10:00:00-03:00"))
			return
		}
		// As an accrual would be: year 1 is no date, nor anything before 1970.
		if err := checkOccurred(&at); err != nil {
			s.writeError(w, r, err)
			return
		}
		in.OccurredAt = &at
	}
	if in.Channel == "" {
		in.Channel = r.Header.Get("X-Channel")
	}
	sim, err := rr.Simulate(r.Context(), mux.Vars(r)["program"], in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sim)
}

func (s *Server) putAttributes(w http.ResponseWriter, r *http.Request) {
	var in core.MemberAttributes
	s.write(w, r, core.KindMemberAttributes, &in, func() (string, any, *time.Time, error) {
		if err := in.Validate(); err != nil {
			return "", nil, nil, err
		}
		return memberVar(r), in, nil, nil
	})
}

func (s *Server) putTiers(w http.ResponseWriter, r *http.Request) {
	var in core.Tiers
	s.write(w, r, core.KindTiersSet, &in, func() (string, any, *time.Time, error) {
		if err := in.Validate(); err != nil {
			return "", nil, nil, err
		}
		return "", in, nil, nil
	})
}

func (s *Server) getTier(w http.ResponseWriter, r *http.Request) {
	rr, ok := s.rulesReader(w, r)
	if !ok {
		return
	}
	st, err := rr.MemberTier(r.Context(), mux.Vars(r)["program"], memberVar(r), s.now().UTC())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
