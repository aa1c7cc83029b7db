package backoffice

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"
)

// errDisabled means an administrator has disabled the user.
var errDisabled = errors.New("this user is disabled")

// auditIn records a change in the transaction that makes it: both are
// stored, or neither.
func (s *Server) auditIn(ctx context.Context, tx pgx.Tx, actor, action, target string,
	before, after any) error {
	_, err := tx.Exec(ctx, `INSERT INTO bo_audit (at, actor, action, target, before, after)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.now(), actor, action, target, before, after)
	if err != nil {
		return fmt.Errorf("write audit entry: %w", err)
	}
	return nil
}

// accountPage lets every user change their own password.
func (s *Server) accountPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.render(w, r, http.StatusOK, "account.html", view{Title: "Your account", User: sess})
}

// changePassword replaces the user's password after checking the current
// one, and ends the user's other sessions, in one transaction with its
// audit entry. A wrong current password counts as a failed sign-in.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	current, next := r.PostFormValue("current"), r.PostFormValue("new")
	again := func(status int, problem string) {
		s.log.Warn("Password change refused", "user", sess.Name, "reason", problem)
		s.render(w, r, status, "account.html", view{Title: "Your account", User: sess,
			Problem: problem})
	}
	switch {
	case passwordProblem(next) != "":
		again(http.StatusBadRequest, "The new password "+passwordProblem(next)+".")
		return
	case next != r.PostFormValue("confirm"):
		again(http.StatusBadRequest, "The new password and its confirmation differ.")
		return
	case next == current:
		again(http.StatusBadRequest, "The new password must differ from the current one.")
		return
	}
	// The current password is checked as a sign-in is, lockout included.
	if _, err := s.checkPassword(ctx, sess.Name, current); err != nil {
		switch {
		case errors.Is(err, ErrLocked), errors.Is(err, errBadCredentials):
			// One answer for both: during a lock, telling the right
			// password apart would let whoever holds the session guess
			// without limit.
			again(http.StatusBadRequest, "The current password is not right, or too many "+
				"wrong passwords have locked the account for 15 minutes.")
		default:
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		}
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(next), bcryptCost)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	keep := []byte{}
	if c, err := r.Cookie(cookieName); err == nil {
		sum := sha256.Sum256([]byte(c.Value))
		keep = sum[:]
	}
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE bo_users SET password_hash = $2 WHERE id = $1`,
			sess.UserID, string(hash)); err != nil {
			return fmt.Errorf("store password: %w", err)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM bo_sessions WHERE user_id = $1 AND id_hash <> $2`,
			sess.UserID, keep)
		if err != nil {
			return fmt.Errorf("end sessions: %w", err)
		}
		return s.auditIn(ctx, tx, sess.Name, "user.password_changed", sess.Name, nil,
			map[string]any{"other_sessions_ended": tag.RowsAffected()})
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	redirect(w, r, "/admin/account", nil, "password")
}

// disableUser stops a user from signing in and ends all their sessions.
// An administrator cannot disable themself, so one always remains.
func (s *Server) disableUser(w http.ResponseWriter, r *http.Request, sess *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == sess.Name {
		s.showUsers(w, r, sess, http.StatusBadRequest, "You cannot disable yourself.")
		return
	}
	s.setDisabled(w, r, sess, name, true)
}

// enableUser lets a disabled user sign in again, with a clean failure count.
func (s *Server) enableUser(w http.ResponseWriter, r *http.Request, sess *session) {
	s.setDisabled(w, r, sess, strings.TrimSpace(r.PostFormValue("name")), false)
}

func (s *Server) setDisabled(w http.ResponseWriter, r *http.Request, sess *session,
	name string, disable bool) {
	ctx := r.Context()
	found := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var id int64
		var wasDisabled bool
		err := tx.QueryRow(ctx, `SELECT id, disabled_at IS NOT NULL FROM bo_users
			WHERE name = $1 FOR UPDATE`, name).Scan(&id, &wasDisabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read user: %w", err)
		}
		found = true
		if disable {
			_, err = tx.Exec(ctx, `UPDATE bo_users SET disabled_at = coalesce(disabled_at, $2)
				WHERE id = $1`, id, s.now())
			if err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM bo_sessions WHERE user_id = $1`, id)
			}
		} else {
			_, err = tx.Exec(ctx, `UPDATE bo_users SET disabled_at = NULL, failed_count = 0,
				locked_until = NULL WHERE id = $1`, id)
		}
		if err != nil {
			return fmt.Errorf("change user: %w", err)
		}
		action := "user.enabled"
		if disable {
			action = "user.disabled"
		}
		return s.auditIn(ctx, tx, sess.Name, action, name,
			map[string]any{"disabled": wasDisabled}, map[string]any{"disabled": disable})
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	if !found {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such user.", nil)
		return
	}
	done := "enabled"
	if disable {
		done = "disabled"
	}
	redirect(w, r, "/admin/users", nil, done)
}
