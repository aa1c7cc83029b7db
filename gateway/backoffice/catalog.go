package backoffice

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
)

// tiersView is the tiers page of one program.
type tiersView struct {
	Programs []string
	Program  string
	Tiers    *core.Tiers
	// Form is what the form shows: the levels now plus blank rows to add.
	Form core.Tiers
}

// blankLevels is how many empty rows the tiers form offers for new levels.
const blankLevels = 2

func (s *Server) tiersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showTiers(w, r, sess, http.StatusOK, "", nil)
}

func (s *Server) showTiers(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string, form *core.Tiers) {
	ps, program, programs, ok := s.paramPage(w, r, sess)
	if !ok {
		return
	}
	ctx := r.Context()
	v := tiersView{Program: program, Programs: programs}
	var err error
	if v.Program != "" {
		if v.Tiers, err = ps.Tiers(ctx, v.Program); err != nil {
			s.failLedger(w, r, sess, err)
			return
		}
	}
	switch {
	case form != nil:
		v.Form = *form
	case v.Tiers != nil:
		v.Form = *v.Tiers
		v.Form.Levels = append([]core.TierLevel{}, v.Tiers.Levels...)
	default:
		v.Form = core.Tiers{WindowDays: 365, Basis: core.TierBasisPoints}
	}
	for range blankLevels {
		v.Form.Levels = append(v.Form.Levels, core.TierLevel{})
	}
	s.render(w, r, status, "tiers.html", view{Title: "Tiers", User: sess, Problem: problem,
		Data: &v})
}

// saveTiers replaces a program's tier levels; rows left blank are dropped.
func (s *Server) saveTiers(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	program := mux.Vars(r)["program"]
	f := &form{r: r, loc: time.UTC}
	in := core.Tiers{WindowDays: int(f.int("window_days")), Basis: f.str("basis")}
	for i := 0; i < 50; i++ {
		key := func(name string) string { return fmt.Sprintf("level-%d-%s", i, name) }
		if _, ok := r.PostForm[key("code")]; !ok {
			break
		}
		l := core.TierLevel{Code: f.str(key("code")), MinPoints: core.Points(
			f.int(key("min_points"))), MinSpend: f.str(key("min_spend")),
			Multiplier: f.str(key("multiplier"))}
		if l.Code == "" && l.MinPoints == 0 && l.MinSpend == "" && l.Multiplier == "" {
			continue
		}
		in.Levels = append(in.Levels, l)
	}
	s.save(w, r, sess, f.check(in.Validate), edit{kind: core.KindTiersSet,
		program: program, payload: in, action: "tiers.set", target: program,
		page: "/admin/tiers", done: "tiers"}, func(status int, problem string) {
		s.showTiers(w, r, sess, status, problem, &in)
	})
}

// catalogView is the rewards catalog of one program.
type catalogView struct {
	Programs []string
	Program  string
	Rewards  []core.Reward
	Edit     rewardEdit
	Zone     *time.Location
}

// rewardEdit is the reward form's content.
type rewardEdit struct {
	core.Reward
	Existing   bool
	ValidFrom  string
	ValidUntil string
	// ValidFromWas and ValidUntilWas are the instants the two fields were
	// drawn from (instantOf), posted back in hidden fields.
	ValidFromWas, ValidUntilWas string
	// StockShown is the stock when the form of an existing reward was
	// drawn, posted back in a hidden field: a save that leaves the stock
	// field as it was must not undo the orders placed meanwhile.
	StockShown *int64
	// StockChanged is set when the ledger refused the save because the
	// stock is no longer StockShown; the page links to a fresh form.
	StockChanged bool
}

func (s *Server) catalogPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showCatalog(w, r, sess, http.StatusOK, "", nil)
}

func (s *Server) showCatalog(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string, edit *rewardEdit) {
	ps, program, programs, ok := s.paramPage(w, r, sess)
	if !ok {
		return
	}
	ctx := r.Context()
	v := catalogView{Program: program, Programs: programs}
	var err error
	yes := true
	v.Edit.Active = &yes
	if v.Program != "" {
		v.Zone = s.zoneOf(ctx, v.Program)
		// TODO(backoffice): page through catalogs of more than 500 rewards.
		if v.Rewards, _, err = ps.Rewards(ctx, v.Program, "", 500); err != nil {
			s.failLedger(w, r, sess, err)
			return
		}
	}
	switch {
	case edit != nil:
		v.Edit = *edit
	case r.URL.Query().Get("edit") != "":
		for _, rw := range v.Rewards {
			if rw.Code == r.URL.Query().Get("edit") {
				v.Edit = rewardEdit{Reward: rw, Existing: true,
					ValidFrom:  localInput(rw.ValidFrom, v.Zone),
					ValidUntil: localInput(rw.ValidUntil, v.Zone), StockShown: rw.Stock,
					ValidFromWas: instantOf(rw.ValidFrom), ValidUntilWas: instantOf(rw.ValidUntil)}
			}
		}
	}
	s.render(w, r, status, "catalog.html", view{Title: "Rewards catalog", User: sess,
		Problem: problem, Data: &v})
}

// saveReward creates or replaces a reward, its price and its stock. When
// the form of an existing reward comes back with its stock field as it was
// drawn, the ledger is asked to check that the stock is still that figure:
// units ordered while the form was open are not put on sale again, and the
// page says so and links to a fresh form. A stock the operator typed is
// saved as typed.
func (s *Server) saveReward(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	ctx := r.Context()
	program := mux.Vars(r)["program"]
	f := &form{r: r, loc: s.zoneOf(ctx, program)}
	e := rewardEdit{Existing: f.bool("existing"), ValidFrom: f.str("valid_from"),
		ValidUntil: f.str("valid_until"), ValidFromWas: f.str("valid_from_was"),
		ValidUntilWas: f.str("valid_until_was")}
	active := f.bool("active")
	e.Reward = core.Reward{Code: f.str("code"), Name: f.str("name"),
		Description: f.str("description"), Points: core.Points(f.int("points")),
		MoneyPoints: core.Points(f.int("money_points")), MoneyAmount: f.str("money_amount"),
		Stock: f.optInt("stock"), ValidFrom: f.time("valid_from"),
		ValidUntil: f.time("valid_until"), PerMemberLimit: f.optInt("per_member_limit"),
		ProgramLimit: f.optInt("program_limit"), Tiers: f.list("tiers"),
		Partner: f.str("partner"), CancelWindowSeconds: int(f.int("cancel_window_seconds")),
		Active: &active}
	in := core.RewardUpsert{Reward: e.Reward, Create: !e.Existing}
	if _, drawn := r.PostForm["stock_shown"]; drawn && e.Existing {
		e.StockShown = f.optInt("stock_shown")
		in.CheckStock = sameCount(e.Stock, e.StockShown)
		in.StockShown = e.StockShown
	}
	s.save(w, r, sess, f.check(e.Reward.Validate), edit{kind: core.KindRewardUpsert,
		program: program, payload: in, action: "reward.saved",
		target: program + "/" + e.Code, page: "/admin/catalog", done: "reward"},
		func(status int, problem string) {
			// The stock check is the only conflict a reward's save meets.
			e.StockChanged = in.CheckStock && status == http.StatusConflict
			s.showCatalog(w, r, sess, status, problem, &e)
		})
}

// sameCount tells whether two optional counts are equal, nil (unlimited)
// only to nil.
func sameCount(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// stockText writes a reward's stock: a number, or "unlimited".
func stockText(n *int64) string {
	if n == nil {
		return "unlimited"
	}
	return formatPoints(*n)
}

// optText writes an optional whole number for a form field: blank for nil.
func optText(n *int64) string {
	if n == nil {
		return ""
	}
	return fmt.Sprint(*n)
}

// joined writes a list for a form field.
func joined(v []string) string { return strings.Join(v, ", ") }
