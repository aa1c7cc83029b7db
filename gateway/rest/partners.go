package rest

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

func (s *Server) upsertPartner(w http.ResponseWriter, r *http.Request) {
	var in core.Partner
	s.write(w, r, core.KindPartnerUpsert, &in, func() (string, any, *time.Time, error) {
		if in.Program != "" || in.UpdatedAt != nil {
			return "", nil, nil, core.Errorf(core.Invalid, "program", "is set by Puntos")
		}
		if err := in.Validate(); err != nil {
			return "", nil, nil, err
		}
		return "", in, nil, nil
	})
}

func (s *Server) getPartner(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, keys, err := x.Partner(r.Context(), mux.Vars(r)["program"], mux.Vars(r)["partner"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"partner": p, "keys": keys})
}

type keyBody struct {
	Scopes []string `json:"scopes"`
}

// createPartnerKey makes a new key, sends only its digest to the ledger and
// shows the key in this one answer. A retry with the same Idempotency-Key
// makes another key, so it is refused as a conflict: if the answer was
// lost, revoke the key (its id is in the partner's key list) and make one
// with a new Idempotency-Key.
func (s *Server) createPartnerKey(w http.ResponseWriter, r *http.Request) {
	var in keyBody
	var key string
	buf := &bufferedWriter{header: http.Header{}}
	s.write(buf, r, core.KindPartnerKeyCreate, &in, func() (string, any, *time.Time, error) {
		var create core.CreatePartnerKey
		var err error
		key, create, err = core.NewPartnerKey(mux.Vars(r)["partner"], in.Scopes)
		if err != nil {
			return "", nil, nil, err
		}
		return "", create, nil, nil
	})
	if buf.status == http.StatusConflict {
		// A retry of a lost answer: the conflict is not another request but
		// a key that cannot be shown again.
		var p Problem
		if json.Unmarshal(buf.body.Bytes(), &p) == nil && p.Field == "txn_id" {
			s.writeError(w, r, core.Errorf(core.Conflict, "txn_id", "a key was made under "+
				"this Idempotency-Key already, and a key is shown only once: if its answer "+
				"was lost, revoke that key (listed on the partner) and make another under "+
				"a new Idempotency-Key"))
			return
		}
	}
	if buf.status == http.StatusCreated && buf.header.Get("Idempotent-Replayed") == "" {
		var res bus.Result
		if err := json.Unmarshal(buf.body.Bytes(), &res); err == nil {
			copyHeader(w.Header(), buf.header)
			writeJSON(w, http.StatusCreated, map[string]any{"command_id": res.CommandID,
				"source": res.Source, "txn_id": res.TxnID, "kind": res.Kind,
				"status": res.Status, "data": res.Data, "key": key})
			return
		}
	}
	buf.flush(w)
}

func (s *Server) revokePartnerKey(w http.ResponseWriter, r *http.Request) {
	var in struct{}
	s.write(w, r, core.KindPartnerKeyRevoke, &in, func() (string, any, *time.Time, error) {
		return "", core.RevokePartnerKey{Partner: mux.Vars(r)["partner"],
			KeyID: mux.Vars(r)["key"]}, nil, nil
	})
}

func (s *Server) operatorSettlement(w http.ResponseWriter, r *http.Request) {
	s.settlement(w, r, mux.Vars(r)["program"], mux.Vars(r)["partner"])
}

// settlement answers a partner's settlement for [from, to), as JSON or, with
// format=csv, as a CSV file.
func (s *Server) settlement(w http.ResponseWriter, r *http.Request, program, partner string) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if err := checkQuery(r.URL.RawQuery, q, "settlement", []string{"format", "from", "to"}); err != nil {
		s.writeError(w, r, err)
		return
	}
	prog, err := s.read.Program(r.Context(), program)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	loc, err := time.LoadLocation(prog.TimeZone)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("program %s: time zone %q: %w", program, prog.TimeZone,
			err))
		return
	}
	var bounds [2]time.Time
	for i, field := range []string{"from", "to"} {
		v := q.Get(field)
		if v == "" {
			s.writeError(w, r, core.Errorf(core.Invalid, field, "is required: a date "+
				"(2026-03-01, the day's first instant in the program's time zone) or an "+
				"RFC 3339 instant"))
			return
		}
		// Whole seconds, as the settlement report reads them, so that
		// both answer alike for the same period.
		if bounds[i], err = reportBound(field, v, loc, false); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	from, to := bounds[0], bounds[1]
	format := q.Get("format")
	if format != "" && format != "json" && format != "csv" {
		s.writeError(w, r, core.Errorf(core.Invalid, "format", "must be json or csv"))
		return
	}
	st, err := x.Settlement(r.Context(), program, partner, from, to)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if format != "csv" {
		writeJSON(w, http.StatusOK, st)
		return
	}
	body, err := SettlementCSV(st)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="settlement-`+st.Partner+"-"+
		st.From.Format("20060102")+"-"+st.To.Format("20060102")+`.csv"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// SettlementCSV writes a settlement as CSV: one line per capture, refund or
// operator's reversal, a refund's or reversal's points and value negative as
// in the JSON, so that the column
// adds up to the total line's net points and value. Every text cell that
// a spreadsheet would read as a formula is escaped; numbers are written
// as they are (a leading minus escaped would make them text).
func SettlementCSV(st *postgres.Settlement) ([]byte, error) {
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write([]string{"type", "txn_id", "hold_txn_id", "member", "points", "value",
		"currency", "at"})
	for _, ln := range st.Lines {
		_ = cw.Write([]string{csvCell(ln.Type), csvCell(ln.TxnID), csvCell(ln.HoldTxnID),
			csvCell(ln.Member), strconv.FormatInt(int64(ln.Points), 10), ln.Value,
			csvCell(st.Currency), ln.At.UTC().Format(time.RFC3339)})
	}
	_ = cw.Write([]string{"total", "", "", "", strconv.FormatInt(int64(st.Net), 10), st.Value,
		csvCell(st.Currency), ""})
	cw.Flush()
	return b.Bytes(), cw.Error()
}

// csvCell escapes a cell that a spreadsheet would take for a formula.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// decimalString writes an exact decimal without trailing fraction zeros.
func decimalString(v *big.Rat) string {
	s := v.FloatString(6)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// bufferedWriter holds an answer so that a handler can look at it first.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedWriter) flush(w http.ResponseWriter) {
	copyHeader(w.Header(), b.header)
	if b.status == 0 {
		return
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

// The partner API: /v1/partner/..., authenticated by a partner's own key.

type partnerKey struct{}

// registerPartnerAPI adds the partner API to r. It must come before the
// operator's /v1 routes: a partner's key is not an operator key.
func (s *Server) registerPartnerAPI(r *mux.Router) {
	pa := r.PathPrefix("/v1/partner").Subrouter()
	pa.Use(s.authenticatePartner)
	pa.Use(s.checkParams)
	m := "/members/{member}"
	tx := "/transactions/{txn}"
	pa.HandleFunc(m+"/balance", s.partnerBalance).Methods(http.MethodGet)
	pa.HandleFunc(m+"/purchases", s.partnerEarn).Methods(http.MethodPost)
	pa.HandleFunc(m+"/purchase-refunds", s.partnerClawback).Methods(http.MethodPost)
	pa.HandleFunc("/transactions", s.partnerAuthorize).Methods(http.MethodPost)
	pa.HandleFunc(tx, s.partnerTransaction).Methods(http.MethodGet)
	pa.HandleFunc(tx+"/capture", s.partnerCapture).Methods(http.MethodPost)
	pa.HandleFunc(tx+"/void", s.partnerVoid).Methods(http.MethodPost)
	pa.HandleFunc(tx+"/refunds", s.partnerRefund).Methods(http.MethodPost)
	pa.HandleFunc("/settlement", s.partnerSettlement).Methods(http.MethodGet)
	pa.HandleFunc("/commands/{txn}", s.getCommand).Methods(http.MethodGet)
	pa.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, core.Errorf(core.NotFound, "path", "no such route"))
	})
	pa.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, core.Errorf(core.Invalid, "method", "%s is not allowed here",
			r.Method))
	})
}

// authenticatePartner accepts a partner key as "Authorization: Bearer KEY"
// or "X-Api-Key: KEY". The request then acts as the source
// "partner:<code>" in the partner's program.
func (s *Server) authenticatePartner(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		if h := r.Header.Get("Authorization"); key == "" && strings.HasPrefix(h, "Bearer ") {
			key = strings.TrimPrefix(h, "Bearer ")
		}
		if !strings.HasPrefix(key, core.PartnerKeyPrefix) {
			s.writeError(w, r, core.Errorf(core.Unauthorized, "Authorization",
				"a partner API key is required"))
			return
		}
		x, err := s.exchange()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		auth, err := x.PartnerByKey(r.Context(), core.PartnerKeyDigest(key))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		vars := map[string]string{}
		for k, v := range mux.Vars(r) {
			vars[k] = v
		}
		vars["program"] = auth.Partner.Program
		r = mux.SetURLVars(r, vars)
		ctx := context.WithValue(r.Context(), callerKey{},
			&Caller{Source: core.PartnerSource(auth.Partner.Code)})
		ctx = context.WithValue(ctx, partnerKey{}, auth)
		pw := &partnerWriter{ResponseWriter: w}
		next.ServeHTTP(pw, r.WithContext(ctx))
	})
}

// partnerWriter points the status URL of a 202 answer at the partner API.
type partnerWriter struct {
	http.ResponseWriter
	accepted bool
}

func (p *partnerWriter) WriteHeader(status int) {
	if status == http.StatusAccepted {
		p.accepted = true
		if l := p.Header().Get("Location"); strings.HasPrefix(l, "/v1/commands/") {
			p.Header().Set("Location", "/v1/partner"+strings.TrimPrefix(l, "/v1"))
		}
	}
	p.ResponseWriter.WriteHeader(status)
}

func (p *partnerWriter) Write(b []byte) (int, error) {
	if p.accepted {
		n := len(b)
		b = bytes.ReplaceAll(b, []byte(`"/v1/commands/`), []byte(`"/v1/partner/commands/`))
		_, err := p.ResponseWriter.Write(b)
		return n, err
	}
	return p.ResponseWriter.Write(b)
}

func partnerAuth(r *http.Request) *postgres.PartnerAuth {
	return r.Context().Value(partnerKey{}).(*postgres.PartnerAuth)
}

// TODO(exchange): the burn and earn flags and limits are checked here, from
// the partner as read when the request was authenticated; the ledger does
// not check them again, so a change of limits binds only later requests.

// allowed checks that the partner's key carries scope.
func allowed(r *http.Request, scope string) error {
	if !slices.Contains(partnerAuth(r).Scopes, scope) {
		return core.Errorf(core.Forbidden, "Authorization",
			"this key may not call %s operations", scope)
	}
	return nil
}

func (s *Server) partnerBalance(w http.ResponseWriter, r *http.Request) {
	if err := allowed(r, core.ScopeBalance); err != nil {
		s.writeError(w, r, err)
		return
	}
	m, err := s.read.Member(r.Context(), mux.Vars(r)["program"], memberVar(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m.Status != "active" {
		writeJSON(w, http.StatusOK, map[string]any{"member": memberVar(r), "spendable": 0,
			"status": m.Status})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"member": memberVar(r),
		"spendable": max(m.Balance.Available, 0), "status": m.Status})
}

type partnerAuthorizeBody struct {
	Member     string      `json:"member"`
	Points     core.Points `json:"points"`
	TTLSeconds int         `json:"ttl_seconds"`
	Reason     string      `json:"reason"`
}

func (s *Server) partnerAuthorize(w http.ResponseWriter, r *http.Request) {
	var in partnerAuthorizeBody
	s.write(w, r, core.KindAuthorize, &in, func() (string, any, *time.Time, error) {
		p := partnerAuth(r).Partner
		if err := allowed(r, core.ScopeAuthorize); err != nil {
			return "", nil, nil, err
		}
		if !p.CanBurn {
			return "", nil, nil, core.Errorf(core.Forbidden, "points",
				"partner %q does not accept points", p.Code)
		}
		if err := core.CheckRef("member", "the member's customer reference",
			in.Member); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckPoints("points", in.Points); err != nil {
			return "", nil, nil, err
		}
		if p.MaxBurnPoints > 0 && in.Points > p.MaxBurnPoints {
			return "", nil, nil, core.Errorf(core.Invalid, "points",
				"exceeds the partner's limit of %d per payment", p.MaxBurnPoints)
		}
		if in.TTLSeconds < 0 || in.TTLSeconds > 90*24*3600 {
			return "", nil, nil, core.Errorf(core.Invalid, "ttl_seconds",
				"must be between 0 and 7776000")
		}
		ttl := in.TTLSeconds
		if ttl == 0 {
			ttl = p.HoldTTLSeconds
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		reason := in.Reason
		if reason == "" {
			reason = "partner payment"
		}
		return in.Member, core.Authorize{Points: in.Points, TTLSeconds: ttl, Reason: reason},
			nil, nil
	})
}

func (s *Server) partnerTransaction(w http.ResponseWriter, r *http.Request) {
	x, err := s.exchange()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tx, err := x.PartnerTransaction(r.Context(), caller(r).Source, mux.Vars(r)["txn"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tx)
}

// partnerTxnMember finds the member of the partner's own transaction txn.
func (s *Server) partnerTxnMember(r *http.Request, scope string) (string, error) {
	if err := allowed(r, scope); err != nil {
		return "", err
	}
	x, err := s.exchange()
	if err != nil {
		return "", err
	}
	tx, err := x.PartnerTransaction(r.Context(), caller(r).Source, mux.Vars(r)["txn"])
	if err != nil {
		return "", err
	}
	return tx.Member, nil
}

func (s *Server) partnerCapture(w http.ResponseWriter, r *http.Request) {
	var in captureBody
	s.write(w, r, core.KindCapture, &in, func() (string, any, *time.Time, error) {
		if in.Points < 0 || in.Points > core.MaxPoints {
			return "", nil, nil, core.Errorf(core.Invalid, "points",
				"must be between 0 (the whole hold) and %d", core.MaxPoints)
		}
		member, err := s.partnerTxnMember(r, core.ScopeCapture)
		if err != nil {
			return "", nil, nil, err
		}
		return member, core.Capture{HoldTxnID: mux.Vars(r)["txn"], Points: in.Points}, nil, nil
	})
}

func (s *Server) partnerVoid(w http.ResponseWriter, r *http.Request) {
	var in struct{}
	s.write(w, r, core.KindRelease, &in, func() (string, any, *time.Time, error) {
		member, err := s.partnerTxnMember(r, core.ScopeVoid)
		if err != nil {
			return "", nil, nil, err
		}
		return member, core.Release{HoldTxnID: mux.Vars(r)["txn"]}, nil, nil
	})
}

type partnerRefundBody struct {
	Points core.Points `json:"points"`
	Reason string      `json:"reason"`
}

func (s *Server) partnerRefund(w http.ResponseWriter, r *http.Request) {
	var in partnerRefundBody
	s.write(w, r, core.KindPartnerRefund, &in, func() (string, any, *time.Time, error) {
		if in.Points < 0 || in.Points > core.MaxPoints {
			return "", nil, nil, core.Errorf(core.Invalid, "points",
				"must be between 0 (all that is left) and %d", core.MaxPoints)
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		member, err := s.partnerTxnMember(r, core.ScopeRefund)
		if err != nil {
			return "", nil, nil, err
		}
		return member, core.PartnerRefund{HoldTxnID: mux.Vars(r)["txn"], Points: in.Points,
			Reason: in.Reason}, nil, nil
	})
}

type purchaseBody struct {
	Amount     string     `json:"amount"`
	Currency   string     `json:"currency"`
	OccurredAt *time.Time `json:"occurred_at"`
	Reason     string     `json:"reason"`
}

// checkPurchase checks what partnerEarn and partnerClawback share.
func (s *Server) checkPurchase(r *http.Request, in *purchaseBody) error {
	p := partnerAuth(r).Partner
	if err := allowed(r, core.ScopeEarn); err != nil {
		return err
	}
	if !p.CanEarn {
		return core.Errorf(core.Forbidden, "amount", "partner %q does not give points", p.Code)
	}
	in.Amount = strings.TrimSpace(in.Amount)
	a, err := core.ParseAmount("amount", in.Amount)
	if err != nil {
		return err
	}
	if a.Sign() <= 0 {
		return core.Errorf(core.Invalid, "amount", "must be positive")
	}
	if p.MaxEarnAmount != "" {
		limit, err := core.ParseAmount("max_earn_amount", p.MaxEarnAmount)
		if err == nil && a.Cmp(limit) > 0 {
			return core.Errorf(core.Invalid, "amount", "exceeds the partner's limit of %s",
				p.MaxEarnAmount)
		}
	}
	if in.OccurredAt != nil && in.OccurredAt.After(s.now().Add(5*time.Minute)) {
		return core.Errorf(core.Invalid, "occurred_at", "is in the future")
	}
	if in.OccurredAt != nil {
		return core.CheckSince1970("occurred_at", *in.OccurredAt)
	}
	return nil
}

func (s *Server) partnerEarn(w http.ResponseWriter, r *http.Request) {
	var in purchaseBody
	s.write(w, r, core.KindAccrue, &in, func() (string, any, *time.Time, error) {
		if err := s.checkPurchase(r, &in); err != nil {
			return "", nil, nil, err
		}
		// With no currency, the ledger reads the partner's own: the body
		// goes as the partner sent it, so that a retry is the same request.
		buy := core.Accrue{EventType: core.EventPartnerPurchase, Amount: in.Amount,
			Currency: in.Currency, Partner: partnerAuth(r).Partner.Code}
		return memberVar(r), buy, in.OccurredAt, nil
	})
}

func (s *Server) partnerClawback(w http.ResponseWriter, r *http.Request) {
	var in purchaseBody
	s.write(w, r, core.KindPartnerClawback, &in, func() (string, any, *time.Time, error) {
		if err := s.checkPurchase(r, &in); err != nil {
			return "", nil, nil, err
		}
		if err := core.CheckReason(in.Reason, false); err != nil {
			return "", nil, nil, err
		}
		// As for a purchase: no currency is the partner's own, refused
		// by the ledger when it is not the program's. Read as the
		// program's, a refund of 12,990 pesos took every point a dollar
		// program had given for the partner's purchases.
		return memberVar(r), core.PartnerClawback{Amount: in.Amount, Currency: in.Currency,
			Reason: in.Reason}, in.OccurredAt, nil
	})
}

func (s *Server) partnerSettlement(w http.ResponseWriter, r *http.Request) {
	if err := allowed(r, core.ScopeSettle); err != nil {
		s.writeError(w, r, err)
		return
	}
	p := partnerAuth(r).Partner
	s.settlement(w, r, p.Program, p.Code)
}
