package backoffice

import (
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

func (s *Server) programsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	codes, err := s.programCodes(ctx)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	list := make([]*core.Program, 0, len(codes))
	for _, c := range codes {
		p, err := s.read.Program(ctx, c)
		if err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
		list = append(list, p)
	}
	s.render(w, r, http.StatusOK, "programs.html", view{Title: "Programs", User: sess,
		Data: list})
}

// updateProgram changes a program's parameters (not its code or currency)
// and records the before and after in the audit log, in the ledger
// transaction of the change.
func (s *Server) updateProgram(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.params(w, r, sess) == nil {
		return
	}
	ctx := r.Context()
	code := mux.Vars(r)["program"]
	before, err := s.read.Program(ctx, code)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	p := *before
	f := &form{r: r}
	p.Name = f.str("name")
	p.TimeZone = f.str("time_zone")
	p.PointsPerUnit = f.str("points_per_unit")
	p.AccrualRounding = core.Rounding(f.str("accrual_rounding"))
	p.ExpiryUnit = core.ExpiryUnit(f.str("expiry_unit"))
	p.ExpiryRound = f.str("expiry_round")
	p.NegativeBalance = f.str("negative_balance")
	p.ExpiryLength = int(f.int("expiry_length"))
	p.PendingDays = int(f.int("pending_days"))
	p.HoldTTLSeconds = int(f.int("hold_ttl_seconds"))
	err = f.err
	if err == nil {
		err = p.Validate()
	}
	if err == nil {
		// The ledger takes the program as REST sends it: code in the envelope.
		payload := p
		payload.Code, payload.ID = "", ""
		var res bus.Result
		res, err = s.change(ctx, sess, core.KindProgramUpsert, code, "", payload,
			"program.updated", code)
		if err == nil && pending(res) {
			redirect(w, r, "/admin/programs", nil, "pending")
			return
		}
	}
	if err != nil {
		s.refused(w, r, sess, err, func(status int, problem string) {
			s.fail(w, r, sess, status, problem, nil)
		})
		return
	}
	redirect(w, r, "/admin/programs", nil, "saved")
}

// auditEntry is one line of the audit log.
type auditEntry struct {
	ID     int64
	At     time.Time
	Actor  string
	Action string
	Target string
	Before string
	After  string
}

// auditView is the audit page: the search and up to 200 newest matches.
type auditView struct {
	Query   string
	Entries []auditEntry
}

// auditPage lists the newest entries whose actor, action or target contain
// the search text.
func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	like := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q) + "%"
	rows, err := s.db.Query(r.Context(), `SELECT id, at, actor, action, target,
			coalesce(before::text, ''), coalesce(after::text, '')
		FROM bo_audit WHERE actor ILIKE $1 OR action ILIKE $1 OR target ILIKE $1
		ORDER BY id DESC LIMIT 200`, like)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auditEntry, error) {
		var e auditEntry
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.Before, &e.After)
		return e, err
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.render(w, r, http.StatusOK, "audit.html", view{Title: "Audit log", User: sess,
		Data: auditView{Query: q, Entries: list}})
}

// userRow is one user on the users page.
type userRow struct {
	Name        string
	Role        Role
	CreatedAt   time.Time
	LockedUntil *time.Time
	Locked      bool
	Disabled    bool
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showUsers(w, r, sess, http.StatusOK, "")
}

func (s *Server) showUsers(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string) {
	rows, err := s.db.Query(r.Context(), `SELECT name, role, created_at, locked_until,
			disabled_at IS NOT NULL
		FROM bo_users ORDER BY name`)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	now := s.now()
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (userRow, error) {
		var u userRow
		err := row.Scan(&u.Name, &u.Role, &u.CreatedAt, &u.LockedUntil, &u.Disabled)
		u.Locked = u.LockedUntil != nil && now.Before(*u.LockedUntil)
		return u, err
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.render(w, r, status, "users.html", view{Title: "Users", User: sess, Problem: problem,
		Data: list})
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, sess *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	role := Role(r.PostFormValue("role"))
	err := createUser(r.Context(), s.db, name, role, r.PostFormValue("password"), sess.Name,
		s.now())
	if k := core.KindOf(err); k == core.Invalid || k == core.Conflict {
		s.showUsers(w, r, sess, http.StatusBadRequest, "The user was not created: "+
			err.Error())
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	redirect(w, r, "/admin/users", nil, "created")
}

func (s *Server) unlockUser(w http.ResponseWriter, r *http.Request, sess *session) {
	err := unlockUser(r.Context(), s.db, r.PostFormValue("name"), sess.Name, s.now())
	if core.KindOf(err) == core.NotFound {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such user.", nil)
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	redirect(w, r, "/admin/users", nil, "unlocked")
}
