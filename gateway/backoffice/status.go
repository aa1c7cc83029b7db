package backoffice

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
)

// statusActions are the member moves of the status form: the ledger's
// command, the audit action and the notice shown after it.
var statusActions = map[string]struct{ kind, audit, done string }{
	"suspend":    {core.KindSuspend, "member.suspended", "suspended"},
	"reactivate": {core.KindReactivate, "member.reactivated", "reactivated"},
	"close":      {core.KindClose, "member.closed", "closed"},
}

// memberStatus suspends, reactivates or closes a member from its page. A
// reason is required for each. A close forfeits every point the member
// has, so the person must type the member's reference to confirm it, and
// a close that forfeits more than the approval threshold waits for a
// second person, as a large negative adjustment would.
func (s *Server) memberStatus(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	program := r.PostFormValue("program")
	ref := strings.TrimSpace(r.PostFormValue("member"))
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	action, ok := statusActions[r.PostFormValue("action")]
	back := url.Values{"program": {program}, "member": {ref}}
	switch {
	case !ok:
		s.fail(w, r, sess, http.StatusBadRequest,
			"Choose suspend, reactivate or close; nothing was changed.", nil)
		return
	case reason == "":
		s.fail(w, r, sess, http.StatusBadRequest,
			"A reason is required to change a member's status; nothing was changed.", nil)
		return
	}
	if err := core.CheckReason(reason, true); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	m, err := s.read.Member(ctx, program, ref)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	if m.MergedInto != "" {
		s.fail(w, r, sess, http.StatusConflict, fmt.Sprintf("Member %s was merged into %s; "+
			"change the status of %s instead. Nothing was changed.", ref, m.MergedInto,
			m.MergedInto), nil)
		return
	}
	forfeit := int64(m.Balance.Available) + int64(m.Balance.Pending) + int64(m.Balance.Held)
	if action.kind == core.KindClose {
		if strings.TrimSpace(r.PostFormValue("confirm")) != m.CustomerRef {
			s.fail(w, r, sess, http.StatusBadRequest, fmt.Sprintf("To close member %s, type "+
				"its reference in the confirmation box: closing forfeits its %s points and "+
				"cannot be undone. Nothing was changed.", m.CustomerRef,
				formatPoints(max(forfeit, 0))), nil)
			return
		}
		if forfeit > int64(s.opt.ApprovalThreshold) {
			s.queueClose(w, r, sess, m, forfeit, reason, back)
			return
		}
	}
	res, err := s.submit(ctx, action.kind, program, m.CustomerRef,
		"backoffice-"+uuid.NewString(), sess.Name, core.StatusChange{Reason: reason})
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	after := map[string]any{"reason": reason, "txn_id": res.TxnID, "status": res.Status}
	if a, err := s.read.Member(ctx, program, m.CustomerRef); err == nil {
		after["member"] = map[string]any{"status": a.Status, "balance": a.Balance}
	}
	s.audit(ctx, sess.Name, action.audit, program+"/"+m.CustomerRef,
		map[string]any{"member": map[string]any{"status": m.Status, "balance": m.Balance}},
		after)
	done := action.done
	if res.Status == "" {
		done = "pending"
	}
	redirect(w, r, "/admin/members", back, done)
}

// queueClose stores a close for a second person, with its audit entry.
func (s *Server) queueClose(w http.ResponseWriter, r *http.Request, sess *session,
	m *core.Member, forfeit int64, reason string, back url.Values) {
	ctx := r.Context()
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO bo_pending_adjustments (kind, program, member,
			points, reason, requested_by, requested_at) VALUES ('close', $1, $2, $3, $4, $5, $6)
			RETURNING id`, m.Program, m.CustomerRef, -forfeit, reason, sess.Name,
			s.now()).Scan(&id)
		if err != nil {
			return fmt.Errorf("queue close: %w", err)
		}
		return s.auditIn(ctx, tx, sess.Name, "close.requested", m.Program+"/"+m.CustomerRef,
			nil, map[string]any{"pending_id": id, "points": -forfeit, "reason": reason})
	})
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	redirect(w, r, "/admin/members", back, "close-queued")
}

// approvalReason is the reason an approved request carries to the ledger:
// the requester's words and both names. When it would be longer than the
// ledger takes, the requester's words are shortened; the request keeps
// them whole.
func approvalReason(p pendingAdjustment) string {
	tail := fmt.Sprintf(" (requested by %s, approved by %s)", p.RequestedBy, p.DecidedBy)
	words := []rune(p.Reason)
	room := core.MaxReason - len([]rune(tail))
	if len(words) > room {
		words = append(words[:max(room-1, 0)], '…')
	}
	return string(words) + tail
}

// resolveConversion settles a member's pending conversion as the person
// says the other program decided: confirmed, with the other program's
// reference, or refused. The ledger refuses it while a worker is still
// asking the other program.
func (s *Server) resolveConversion(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	program := r.PostFormValue("program")
	ref := strings.TrimSpace(r.PostFormValue("member"))
	in := core.ResolveConversion{ID: r.PostFormValue("id"),
		Outcome:   r.PostFormValue("outcome"),
		Reference: strings.TrimSpace(r.PostFormValue("reference")),
		Reason:    strings.TrimSpace(r.PostFormValue("reason"))}
	if err := in.Check(); err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	m, err := s.read.Member(ctx, program, ref)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	before := m.Balance
	// A fresh transaction id each time: a resolution refused while a worker
	// held the conversion may be sent again once it lets go, and the ledger
	// refuses a second resolution of a settled conversion on its own.
	res, err := s.submit(ctx, core.KindConversionResolve, program, m.CustomerRef,
		"backoffice-"+uuid.NewString(), sess.Name, in)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	s.audit(ctx, sess.Name, "conversion.resolved", program+"/"+m.CustomerRef,
		map[string]any{"balance": before, "conversion": in.ID},
		map[string]any{"balance": s.balanceAfter(ctx, program, m.CustomerRef),
			"conversion": in.ID, "outcome": in.Outcome, "reference": in.Reference,
			"reason": in.Reason, "txn_id": res.TxnID, "status": res.Status})
	done := "resolved"
	if res.Status == "" {
		done = "pending"
	}
	redirect(w, r, "/admin/members", url.Values{"program": {program}, "member": {ref}}, done)
}
