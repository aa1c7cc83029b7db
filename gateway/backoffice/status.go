package backoffice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// statusActions are the member moves of the status form: the ledger's
// command, the audit action and the notice shown after it.
var statusActions = map[string]struct{ kind, audit, done string }{
	"suspend":    {core.KindSuspend, "member.suspended", "suspended"},
	"reactivate": {core.KindReactivate, "member.reactivated", "reactivated"},
	"close":      {core.KindClose, "member.closed", "closed"},
}

// formID is the id a member form was drawn with (see the formid template
// function), or "" when it has none or a malformed one.
func formID(r *http.Request) string {
	id, err := uuid.Parse(r.PostFormValue("form_id"))
	if err != nil {
		return ""
	}
	return id.String()
}

// formTxn is the transaction id of a posted member form: its form id, so
// that a form sent twice (a double click, the back button, a retry after a
// dropped answer) reaches the ledger once and the second answer is the
// first one's. A form without an id (a page drawn before forms had one)
// gets a fresh transaction id.
func formTxn(r *http.Request) string {
	if id := formID(r); id != "" {
		return "backoffice-form-" + id
	}
	return "backoffice-" + uuid.NewString()
}

// memberChange sends a command that moves a member's points or standing,
// with an audit note: the ledger writes the entry (the member before and
// after, the request) in the transaction that applies the command, so an
// entry exists exactly when the change does, whether the answer reached
// this page in time or not.
func (s *Server) memberChange(ctx context.Context, sess *session, kind, program, member,
	txn string, payload any, action string) (bus.Result, error) {
	cmd, err := s.command(kind, program, member, txn, sess.Name, payload)
	if err != nil {
		return bus.Result{}, err
	}
	cmd.Audit = &bus.Audit{Action: action, Target: program + "/" + member}
	return s.send(ctx, cmd)
}

// failSent shows the ledger's refusal of a member form. A refusal the
// ledger answers again, because the same form was sent before, says so:
// the cause may have been mended since, and a new form is a new request.
func (s *Server) failSent(w http.ResponseWriter, r *http.Request, sess *session,
	res bus.Result, err error) {
	var ce *core.Error
	if errors.As(err, &ce) && ce.Field == "txn_id" {
		s.failFormReused(w, r, sess) // the ledger's "used for a different request"
		return
	}
	if errors.As(err, &ce) && ce.Field == "max_forfeit" {
		s.fail(w, r, sess, statusOf(ce.Kind), fmt.Sprintf("The member has earned points "+
			"since this page was drawn, and a close now forfeits more than one person may "+
			"close alone (%s points). Nothing was changed. Open the member's page afresh "+
			"and close again: it will wait for a second person's approval.",
			formatPoints(int64(s.opt.ApprovalThreshold))), nil)
		return
	}
	if res.Replayed && errors.As(err, &ce) {
		s.fail(w, r, sess, statusOf(ce.Kind), "This form was sent before, and the ledger "+
			"refused it then: "+ledgerMessage(ce)+" Nothing was changed now. To try again, "+
			"open the member's page afresh and fill the form again.", nil)
		return
	}
	s.failLedger(w, r, sess, err)
}

// forfeitOf is what a close would take from a member with balance b: every
// point in its lots, spendable, pending and held. A debt is not set off
// against them: the close forfeits the points and the debt stays.
func forfeitOf(b core.Balance) int64 {
	return max(int64(b.Available), 0) + int64(b.Pending) + int64(b.Held)
}

// waitingClose is the id of a close of the member that waits for a second
// person (or was sent and not yet answered), or 0, and the id of the form
// that asked for it ("" when unknown).
func (s *Server) waitingClose(ctx context.Context, program, member string) (int64, string,
	error) {
	var id int64
	var form *string
	err := s.db.QueryRow(ctx, `SELECT id, form_id::text FROM bo_pending_adjustments
		WHERE kind = 'close' AND program = $1 AND member = $2
		  AND status IN ('pending', 'failed', 'submitted') ORDER BY id LIMIT 1`,
		program, member).Scan(&id, &form)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read waiting closes: %w", err)
	}
	if form == nil {
		return id, "", nil
	}
	return id, *form, nil
}

// queuedByForm tells whether the request the form form queued already is
// this one (the same kind, member, points and person): a form sent again.
// Any other request under the same form id (the back button and a changed
// amount, or an id copied from another page) is refused, not dropped.
func (s *Server) queuedByForm(ctx context.Context, form, kind, program, member string,
	points int64, by string) (bool, error) {
	var same bool
	err := s.db.QueryRow(ctx, `SELECT kind = $2 AND program = $3 AND member = $4
			AND points = $5 AND requested_by = $6
		FROM bo_pending_adjustments WHERE form_id = $1`, form, kind, program, member, points,
		by).Scan(&same)
	if err != nil {
		return false, fmt.Errorf("read the request of form %s: %w", form, err)
	}
	return same, nil
}

// failFormReused answers a form id that queued another request.
func (s *Server) failFormReused(w http.ResponseWriter, r *http.Request, sess *session) {
	s.fail(w, r, sess, http.StatusConflict, "This form was sent before with other "+
		"content (another amount, member or action): nothing was queued now, and the first "+
		"request stands as it was. To ask for something else, open the member's page "+
		"afresh and fill the form again.", nil)
}

// memberStatus suspends, reactivates or closes a member from its page. A
// reason is required for each. A close forfeits every point the member
// has, so the person must type the member's reference to confirm it, and
// a close that forfeits more than the approval threshold waits for a
// second person, as a large negative adjustment would; one sent at once
// carries the threshold as its bound, so that points arriving meanwhile
// cannot make it take more without approval.
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
		s.failForm(w, r, sess, err)
		return
	}
	m, err := s.read.Member(ctx, program, ref)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	if m.CustomerRef != ref {
		s.fail(w, r, sess, http.StatusConflict, fmt.Sprintf("Member %s was merged into %s "+
			"and has no account of its own any more: there is no status of %s to change, "+
			"and its points are %s's. Nothing was changed. (%s's status is that person's "+
			"whole account: change it only if that is what was asked.)", ref, m.CustomerRef,
			ref, m.CustomerRef, m.CustomerRef), nil)
		return
	}
	in := core.StatusChange{Reason: reason}
	if action.kind == core.KindClose {
		forfeit := forfeitOf(m.Balance)
		if confirm := strings.TrimSpace(r.PostFormValue("confirm")); confirm != m.CustomerRef {
			what := "The confirmation box was left empty"
			if confirm != "" {
				what = fmt.Sprintf("The confirmation %q does not match the reference "+
					"(letter case counts)", confirm)
			}
			s.fail(w, r, sess, http.StatusBadRequest, fmt.Sprintf("%s. To close member %s, "+
				"type %s in the confirmation box: closing forfeits its %s points and cannot "+
				"be undone. Nothing was changed.", what, m.CustomerRef, m.CustomerRef,
				formatPoints(forfeit)), nil)
			return
		}
		if m.Balance.Held > 0 {
			s.fail(w, r, sess, http.StatusConflict, fmt.Sprintf("Member %s has %s points "+
				"held: a partner's payment waiting for capture or a conversion waiting for "+
				"the other program. A close waits until they are settled (see the "+
				"conversions below, or ask the partner). Nothing was changed.",
				m.CustomerRef, formatPoints(int64(m.Balance.Held))), nil)
			return
		}
		id, form, err := s.waitingClose(ctx, program, m.CustomerRef)
		if err != nil {
			s.fail(w, r, sess, http.StatusInternalServerError, "", err)
			return
		}
		if id != 0 && form != "" && form == formID(r) {
			same, err := s.queuedByForm(ctx, form, "close", program, m.CustomerRef,
				-forfeit, sess.Name)
			if err != nil {
				s.fail(w, r, sess, http.StatusInternalServerError, "", err)
				return
			}
			if !same {
				s.failFormReused(w, r, sess)
				return
			}
			redirect(w, r, "/admin/members", back, "close-queued") // this form's, sent again
			return
		}
		if id != 0 {
			s.fail(w, r, sess, http.StatusConflict, fmt.Sprintf("A close of member %s "+
				"already waits on the Approvals page (request %d). Nothing was changed.",
				m.CustomerRef, id), nil)
			return
		}
		if forfeit > int64(s.opt.ApprovalThreshold) {
			s.queueClose(w, r, sess, m, forfeit, reason, back)
			return
		}
		bound := s.opt.ApprovalThreshold
		in.MaxForfeit = &bound
	}
	res, err := s.memberChange(ctx, sess, action.kind, program, m.CustomerRef, formTxn(r), in,
		action.audit)
	if err != nil {
		s.failSent(w, r, sess, res, err)
		return
	}
	done := action.done
	if res.Status == "" {
		done = "pending"
	}
	if res.Replayed {
		done = "replayed"
	}
	redirect(w, r, "/admin/members", back, done)
}

// queueClose stores a close for a second person, with its audit entry. A
// form sent twice queues it once.
func (s *Server) queueClose(w http.ResponseWriter, r *http.Request, sess *session,
	m *core.Member, forfeit int64, reason string, back url.Values) {
	ctx := r.Context()
	var form any
	if id := formID(r); id != "" {
		form = id
	}
	reused := false
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO bo_pending_adjustments (kind, program, member,
			points, reason, requested_by, requested_at, form_id)
			VALUES ('close', $1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (form_id) DO NOTHING RETURNING id`, m.Program, m.CustomerRef,
			-forfeit, reason, sess.Name, s.now(), form).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			same, err := s.queuedByForm(ctx, form.(string), "close", m.Program,
				m.CustomerRef, -forfeit, sess.Name)
			reused = !same
			return err
		}
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
	if reused {
		s.failFormReused(w, r, sess)
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
		s.failForm(w, r, sess, err)
		return
	}
	m, err := s.read.Member(ctx, program, ref)
	if err != nil {
		s.failLedger(w, r, sess, err)
		return
	}
	// A refusal while a worker held the conversion is answered again to the
	// same form: the page says to draw it afresh, and the ledger refuses a
	// second resolution of a settled conversion on its own.
	res, err := s.memberChange(ctx, sess, core.KindConversionResolve, program, m.CustomerRef,
		formTxn(r), in, "conversion.resolved")
	if err != nil {
		s.failSent(w, r, sess, res, err)
		return
	}
	done := "resolved-" + in.Outcome
	if res.Status == "" {
		done = "pending"
	}
	if res.Replayed {
		done = "replayed"
	}
	redirect(w, r, "/admin/members", url.Values{"program": {program}, "member": {ref}}, done)
}

// settleDispute marks a conversion's open dispute settled: the person says
// how the member's points were put right (an adjustment, a call with the
// other program). The dispute leaves the member's page and /metrics; the
// conversion keeps who settled it, when and how, and the audit log has it.
func (s *Server) settleDispute(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	program := r.PostFormValue("program")
	ref := strings.TrimSpace(r.PostFormValue("member"))
	id := r.PostFormValue("id")
	note := strings.TrimSpace(r.PostFormValue("note"))
	if err := core.CheckReason(note, true); err != nil {
		ce, _ := core.AsError(err)
		s.fail(w, r, sess, http.StatusBadRequest, "Say how the dispute was settled (the "+
			"adjustment made, who at the other program agreed): the note "+ce.Message+
			". Nothing was changed.", nil)
		return
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := postgres.SettleDispute(ctx, tx, program, ref, id, sess.Name, note,
			s.now()); err != nil {
			return err
		}
		return s.auditIn(ctx, tx, sess.Name, "conversion.dispute_settled", program+"/"+ref,
			nil, map[string]any{"conversion": id, "note": note})
	})
	if _, ok := core.AsError(err); ok {
		s.failLedger(w, r, sess, err)
		return
	}
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, "", err)
		return
	}
	redirect(w, r, "/admin/members", url.Values{"program": {program}, "member": {ref}},
		"dispute-settled")
}
