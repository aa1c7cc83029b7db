package backoffice

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// partnersView is the partners page of one program.
type partnersView struct {
	Programs []string
	Program  string
	Partners []postgres.PartnerView
	Edit     core.Partner
	Scopes   []string
	// NewKey is a key just issued, shown in this one answer and never again.
	NewKey *issuedKey
}

// issuedKey is a partner key as the one page that shows it needs it.
type issuedKey struct {
	Partner string
	ID      string
	Key     string
	// Pending is set when the ledger had not answered in time: the key is
	// on its way and works once the ledger applies it.
	Pending bool
}

func (s *Server) partnersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showPartners(w, r, sess, http.StatusOK, "", nil, nil)
}

func (s *Server) showPartners(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string, edit *core.Partner, key *issuedKey) {
	ps, program, programs, ok := s.paramPage(w, r, sess)
	if !ok {
		return
	}
	ctx := r.Context()
	v := partnersView{Program: program, Programs: programs, Scopes: core.Scopes, NewKey: key}
	var err error
	yes := true
	v.Edit = core.Partner{CanBurn: true, Active: &yes}
	if v.Program != "" {
		if v.Partners, err = ps.Partners(ctx, v.Program); err != nil {
			s.failLedger(w, r, sess, err)
			return
		}
	}
	switch {
	case edit != nil:
		v.Edit = *edit
	case r.URL.Query().Get("edit") != "":
		for _, p := range v.Partners {
			if p.Partner.Code == r.URL.Query().Get("edit") {
				v.Edit = p.Partner
			}
		}
	}
	notice := ""
	switch {
	case key != nil && key.Pending:
		notice = "The key was accepted and will work once the ledger applies it, " +
			"shortly. Copy it now: it is shown only this once."
	case key != nil:
		notice = "The key was issued. Copy it now: it is shown only this once."
	}
	s.render(w, r, status, "partners.html", view{Title: "Partners", User: sess,
		Problem: problem, Notice: notice, Data: &v})
}

// savePartner creates or replaces a partner merchant.
func (s *Server) savePartner(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	program := mux.Vars(r)["program"]
	f := &form{r: r}
	active := f.bool("active")
	p := core.Partner{Code: f.str("code"), Name: f.str("name"), Currency: f.str("currency"),
		PointValue: f.str("point_value"), CanBurn: f.bool("can_burn"),
		CanEarn: f.bool("can_earn"), MaxBurnPoints: core.Points(f.int("max_burn_points")),
		MaxEarnAmount:  f.str("max_earn_amount"),
		HoldTTLSeconds: int(f.int("hold_ttl_seconds")), Active: &active}
	s.save(w, r, sess, f.check(p.Validate), edit{kind: core.KindPartnerUpsert,
		program: program, payload: p, action: "partner.saved", target: program + "/" + p.Code,
		page: "/admin/partners", done: "partner"}, func(status int, problem string) {
		s.showPartners(w, r, sess, status, problem, &p, nil)
	})
}

// issueKey makes a partner API key and shows it once. The key is made here,
// in the gateway, so that only its SHA-256 digest travels on the bus and
// reaches the ledger; the audit log records its id and prefix.
func (s *Server) issueKey(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	program, partner := mux.Vars(r)["program"], mux.Vars(r)["partner"]
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, sess, http.StatusBadRequest, "The form could not be read.", nil)
		return
	}
	scopes := r.PostForm["scopes"]
	key, create, err := core.NewPartnerKey(partner, scopes)
	var res bus.Result
	if err == nil {
		res, err = s.change(r.Context(), sess, core.KindPartnerKeyCreate, program, "", create,
			"partner.key_issued", program+"/"+partner)
	}
	if err != nil {
		s.refused(w, r, sess, err, func(status int, problem string) {
			s.showPartners(w, r, sess, status, problem, nil, nil)
		})
		return
	}
	// The answer to the POST itself shows the key, never a later page. A
	// reload would post again and make a second key (the browser asks first).
	s.showPartners(w, r, sess, http.StatusCreated, "", nil,
		&issuedKey{Partner: partner, ID: create.KeyID, Key: key, Pending: pending(res)})
}

// revokeKey revokes a partner's key for good.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	v := mux.Vars(r)
	s.save(w, r, sess, nil, edit{kind: core.KindPartnerKeyRevoke, program: v["program"],
		payload: core.RevokePartnerKey{Partner: v["partner"], KeyID: v["key"]},
		action:  "partner.key_revoked", target: v["program"] + "/" + v["partner"],
		page: "/admin/partners", done: "revoked"}, func(status int, problem string) {
		s.showPartners(w, r, sess, status, problem, nil, nil)
	})
}

// externalView is the external programs page of one program.
type externalView struct {
	Programs []string
	Program  string
	External []core.ExternalProgram
	Edit     core.ExternalProgram
	// Existing is set when the form changes a stored external program.
	Existing bool
	// RemoveCredentials keeps the "remove the stored credentials" box
	// ticked on the form of a refused save that had it ticked.
	RemoveCredentials bool
}

func (s *Server) externalPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showExternal(w, r, sess, http.StatusOK, "", nil)
}

func (s *Server) showExternal(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string, edit *core.ExternalProgram) {
	ps, program, programs, ok := s.paramPage(w, r, sess)
	if !ok {
		return
	}
	ctx := r.Context()
	v := externalView{Program: program, Programs: programs}
	var err error
	v.Edit.Defaults()
	if v.Program != "" {
		if v.External, err = ps.ExternalPrograms(ctx, v.Program); err != nil {
			s.failLedger(w, r, sess, err)
			return
		}
	}
	switch {
	case edit != nil:
		v.Edit = *edit
		v.Edit.Credentials = ""
		for _, e := range v.External {
			v.Existing = v.Existing || e.Code == edit.Code
		}
		v.RemoveCredentials = v.Existing && r.PostFormValue("remove_credentials") != ""
	case r.URL.Query().Get("edit") != "":
		for _, e := range v.External {
			if e.Code == r.URL.Query().Get("edit") {
				v.Edit, v.Existing = e, true
				v.Edit.Credentials = ""
			}
		}
	}
	s.render(w, r, status, "external.html", view{Title: "External programs", User: sess,
		Problem: problem, Data: &v})
}

// saveExternal creates or replaces an external program and its ratio. A
// blank credentials field keeps the stored secret of an existing one: the
// command leaves the field out, and the ledger keeps what it holds, so
// that the secret is neither decrypted here nor sent on the bus again. For
// a new one, blank is none. The "remove the stored credentials" box sends
// them empty, which removes them.
func (s *Server) saveExternal(w http.ResponseWriter, r *http.Request, sess *session) {
	ps := s.params(w, r, sess)
	if ps == nil {
		return
	}
	program := mux.Vars(r)["program"]
	f := &form{r: r}
	enabled := f.bool("enabled")
	e := core.ExternalProgram{Code: f.str("code"), Name: f.str("name"), Ratio: f.str("ratio"),
		Rounding: core.Rounding(f.str("rounding")), MinPoints: core.Points(f.int("min_points")),
		MaxPoints: core.Points(f.int("max_points")), DailyLimit: core.Points(
			f.int("daily_limit")), MonthlyLimit: core.Points(f.int("monthly_limit")),
		Identify: f.str("identify"), AccountPattern: f.str("account_pattern"),
		Flavour: f.str("flavour"), Endpoint: f.str("endpoint"),
		Credentials: r.PostFormValue("credentials"), Enabled: &enabled}
	remove := f.bool("remove_credentials")
	check := e.Validate
	if remove && e.Credentials != "" {
		check = func() error {
			return core.Errorf(core.Invalid, "credentials", "give new credentials or remove "+
				"the stored ones, not both")
		}
	}
	e.Defaults()
	// The command's member is the external program's code, as REST sends
	// it: changes to one external program apply in order.
	payload := core.ExternalUpsert{ExternalProgram: e}
	payload.Code = ""
	switch {
	case remove:
		none := ""
		payload.Credentials = &none
	case e.Credentials != "":
		payload.Credentials = &e.Credentials
	}
	s.save(w, r, sess, f.check(check), edit{kind: core.KindExternalUpsert,
		program: program, member: e.Code, payload: payload, action: "external.saved",
		target: program + "/" + e.Code, page: "/admin/external", done: "external"},
		func(status int, problem string) { s.showExternal(w, r, sess, status, problem, &e) })
}
