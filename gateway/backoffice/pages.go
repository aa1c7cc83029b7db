package backoffice

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"

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
// through the ledger, and records the before and after in the audit log.
func (s *Server) updateProgram(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	code := mux.Vars(r)["program"]
	before, err := s.read.Program(ctx, code)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	p := *before
	f := r.PostFormValue
	p.Name = strings.TrimSpace(f("name"))
	p.TimeZone = strings.TrimSpace(f("time_zone"))
	p.PointsPerUnit = strings.TrimSpace(f("points_per_unit"))
	p.AccrualRounding = core.Rounding(f("accrual_rounding"))
	p.ExpiryUnit = core.ExpiryUnit(f("expiry_unit"))
	p.ExpiryRound = f("expiry_round")
	p.NegativeBalance = f("negative_balance")
	for field, dst := range map[string]*int{"expiry_length": &p.ExpiryLength,
		"pending_days": &p.PendingDays, "hold_ttl_seconds": &p.HoldTTLSeconds} {
		n, err := strconv.Atoi(strings.TrimSpace(f(field)))
		if err != nil {
			s.fail(w, r, sess, http.StatusBadRequest,
				strings.ReplaceAll(field, "_", " ")+" must be a whole number.", nil)
			return
		}
		*dst = n
	}
	if err := p.Validate(); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}

	// The ledger takes the program as REST sends it: code in the envelope.
	payload := p
	payload.Code, payload.ID = "", ""
	res, err := s.submit(ctx, core.KindProgramUpsert, code, "",
		"backoffice-program-"+uuid.NewString(), sess.Name, payload)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	after, _ := s.read.Program(ctx, code)
	s.audit(ctx, sess.Name, "program.updated", code, before, after)
	done := "saved"
	if res.Status == "" {
		done = "accepted"
	}
	redirect(w, r, "/admin/programs", nil, done)
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
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.showUsers(w, r, sess, http.StatusOK, "")
}

func (s *Server) showUsers(w http.ResponseWriter, r *http.Request, sess *session,
	status int, problem string) {
	rows, err := s.db.Query(r.Context(), `SELECT name, role, created_at, locked_until
		FROM bo_users ORDER BY name`)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	now := s.now()
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (userRow, error) {
		var u userRow
		err := row.Scan(&u.Name, &u.Role, &u.CreatedAt, &u.LockedUntil)
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
	err := CreateUser(r.Context(), s.db, name, role, r.PostFormValue("password"))
	if k := core.KindOf(err); k == core.Invalid || k == core.Conflict {
		s.showUsers(w, r, sess, http.StatusBadRequest, "The user was not created: "+
			err.Error())
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	s.audit(r.Context(), sess.Name, "user.created", name, nil,
		map[string]any{"name": name, "role": role})
	redirect(w, r, "/admin/users", nil, "created")
}

func (s *Server) unlockUser(w http.ResponseWriter, r *http.Request, sess *session) {
	name := r.PostFormValue("name")
	tag, err := s.db.Exec(r.Context(), `UPDATE bo_users SET failed_count = 0,
		locked_until = NULL WHERE name = $1`, name)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	if tag.RowsAffected() == 0 {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such user.", nil)
		return
	}
	s.audit(r.Context(), sess.Name, "user.unlocked", name, map[string]any{"locked": true},
		map[string]any{"locked": false})
	redirect(w, r, "/admin/users", nil, "unlocked")
}
