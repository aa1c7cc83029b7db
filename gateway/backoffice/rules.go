package backoffice

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// rulesReader is what the rules page needs of the ledger beyond Reader.
type rulesReader interface {
	Rules(ctx context.Context, program string) ([]core.Rule, error)
	Simulate(ctx context.Context, program string,
		in postgres.SimulateEvent) (*postgres.Simulation, error)
}

// rulesView is the rules page: the rules in force, the rule form and,
// after a simulation, what the event would earn.
type rulesView struct {
	Programs []string
	Program  string
	Rules    []core.Rule
	Event    postgres.SimulateEvent
	Result   *postgres.Simulation
	// Edit fills the rule form: a rule to change, or the one just refused.
	Edit ruleEdit
	Zone *time.Location
}

// ruleEdit is the rule form's content. Mode "update" makes a new version of
// an existing rule, "create" a new rule.
type ruleEdit struct {
	core.Rule
	Mode      string
	ValidFrom string
	ValidTo   string
	// ValidToWas is the instant ValidTo was drawn from (instantOf).
	ValidToWas string
	Bands      string
}

// rulesPage lists a program's conversion rules, offers the form that
// creates a rule or a new version of one (?edit=code fills it), and
// simulates an event against them. Simulating posts nothing, so every role
// may use it.
func (s *Server) rulesPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showRules(w, r, sess, http.StatusOK, "", nil)
}

// showRules renders the rules page; edit, when set, is a refused form to
// show again with problem.
func (s *Server) showRules(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string, edit *ruleEdit) {
	ctx := r.Context()
	rr, ok := s.read.(rulesReader)
	if !ok {
		s.fail(w, r, sess, http.StatusNotImplemented, "Rules are not available here.", nil)
		return
	}
	q := r.URL.Query()
	v := rulesView{Edit: ruleEdit{Mode: "create"}}
	if v.Program, v.Programs, ok = s.pageProgram(w, r, sess); !ok {
		return
	}
	var err error
	page := view{Title: "Rules", User: sess, Data: &v, Problem: problem}
	if v.Program == "" {
		s.render(w, r, status, "rules.html", page)
		return
	}
	v.Zone = s.zoneOf(ctx, v.Program)
	if v.Rules, err = rr.Rules(ctx, v.Program); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	switch {
	case edit != nil:
		v.Edit = *edit
	case q.Get("edit") != "":
		for _, rule := range v.Rules {
			if rule.Code == q.Get("edit") {
				v.Edit = editOf(rule, v.Zone)
			}
		}
	}
	v.Event = postgres.SimulateEvent{Member: strings.TrimSpace(q.Get("member")),
		Type: strings.TrimSpace(q.Get("type")), Amount: strings.TrimSpace(q.Get("amount")),
		Channel: q.Get("channel"), Partner: q.Get("partner")}
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

// editOf fills the rule form with a rule's latest version.
func editOf(rule core.Rule, loc *time.Location) ruleEdit {
	// The new version starts now unless the user picks a start: carrying the
	// old start over would rewrite the past without anyone asking for it.
	e := ruleEdit{Rule: rule, Mode: "update", ValidTo: localInput(rule.ValidTo, loc),
		ValidToWas: instantOf(rule.ValidTo)}
	bands := make([]string, len(rule.Formula.Bands))
	for i, b := range rule.Formula.Bands {
		bands[i] = b.From + ":" + b.Rate
	}
	e.Bands = strings.Join(bands, ", ")
	e.Version, e.Until, e.Retired = 0, nil, false
	return e
}

// saveRule creates a rule or stores a new version of one. The new version
// is in force from its valid-from, or from now when that is blank.
func (s *Server) saveRule(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	ctx := r.Context()
	program := mux.Vars(r)["program"]
	f := &form{r: r, loc: s.zoneOf(ctx, program)}
	e := ruleEdit{Mode: f.str("mode"), ValidFrom: f.str("valid_from"),
		ValidTo: f.str("valid_to"), ValidToWas: f.str("valid_to_was"), Bands: f.str("bands")}
	if e.Mode != "update" {
		e.Mode = "create"
	}
	rule := &e.Rule
	rule.Code, rule.Name = f.str("code"), f.str("name")
	rule.EventType, rule.Condition = f.str("event_type"), f.str("condition")
	rule.Formula = core.Formula{Kind: f.str("formula_kind"), Rate: f.str("rate"),
		Points: core.Points(f.int("fixed_points")), Factor: f.str("factor")}
	for _, b := range f.list("bands") {
		from, rate, ok := strings.Cut(b, ":")
		if !ok {
			f.fail("bands", "must be from:rate pairs separated by commas, such as 0:1, 100:2")
		}
		rule.Formula.Bands = append(rule.Formula.Bands, core.Band{
			From: strings.TrimSpace(from), Rate: strings.TrimSpace(rate)})
	}
	rule.Rounding = core.Rounding(f.str("rounding"))
	rule.ValidFrom, rule.ValidTo = f.time("valid_from"), f.time("valid_to")
	rule.Priority = int(f.int("priority"))
	rule.Exclusive = f.bool("exclusive")
	rule.Caps = core.Caps{PerEvent: core.Points(f.int("cap_event")),
		PerDay: core.Points(f.int("cap_day")), PerMonth: core.Points(f.int("cap_month")),
		PerYear: core.Points(f.int("cap_year")), Budget: core.Points(f.int("cap_budget"))}
	// The ledger checks the rule (the condition compiles, the formula fits).
	s.save(w, r, sess, f.err, edit{kind: core.KindRuleUpsert, program: program,
		payload: postgres.RuleUpsert{Rule: *rule, Mode: e.Mode}, action: "rule." + e.Mode + "d",
		target: program + "/" + rule.Code, page: "/admin/rules", done: "rule"},
		func(status int, problem string) { s.showRules(w, r, sess, status, problem, &e) })
}

// retireRule ends a rule's force now.
func (s *Server) retireRule(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	program, code := mux.Vars(r)["program"], mux.Vars(r)["code"]
	s.save(w, r, sess, nil, edit{kind: core.KindRuleRetire, program: program,
		payload: core.RuleRetire{Code: code}, action: "rule.retired",
		target: program + "/" + code, page: "/admin/rules", done: "retired"},
		func(status int, problem string) { s.showRules(w, r, sess, status, problem, nil) })
}

// refused answers a change that was not applied: the user's mistake is
// shown by again, with the status its kind calls for and the form
// refilled; our fault is a 500.
func (s *Server) refused(w http.ResponseWriter, r *http.Request, sess *session, err error,
	again func(status int, problem string)) {
	problem := problemOf(err)
	if problem == "" {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	ce, _ := core.AsError(err)
	s.log.Warn("Back-office change refused", "path", r.URL.Path, "reason", problem)
	again(statusOf(ce.Kind), problem)
}
