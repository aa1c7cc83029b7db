package soap

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hooklift/gowsdl/soap"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/soap/gen"
)

// operation is one operation of the WSDL: a fresh request value to decode
// into, and what it does with it.
type operation struct {
	name    string
	request func() any
	run     func(s *Server, c *call, req any) (any, error)
}

// op builds an operation from a typed function.
func op[T any](name string, run func(s *Server, c *call, req *T) (any, error)) *operation {
	return &operation{name: name, request: func() any { return new(T) },
		run: func(s *Server, c *call, req any) (any, error) { return run(s, c, req.(*T)) }}
}

// operations are the service's operations by element name.
var operations = map[string]*operation{
	"EnrollMember":     op("EnrollMember", (*Server).enroll),
	"GetMember":        op("GetMember", (*Server).getMember),
	"Accrue":           op("Accrue", (*Server).accrue),
	"GetBalance":       op("GetBalance", (*Server).getBalance),
	"GetMovements":     op("GetMovements", (*Server).getMovements),
	"Redeem":           op("Redeem", (*Server).redeem),
	"CancelRedemption": op("CancelRedemption", (*Server).cancelRedemption),
	"TransferPoints":   op("TransferPoints", (*Server).transfer),
}

// txnOf returns the TxnId of a write request, for the fault's detail.
func txnOf(req any) string {
	v := reflect.ValueOf(req)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return ""
	}
	f := v.Elem().FieldByName("TxnId")
	if !f.IsValid() || f.Kind() != reflect.String {
		return ""
	}
	return f.String()
}

func opt(p *string) string {
	if p == nil {
		return ""
	}
	return strings.TrimSpace(*p)
}

func optTime(p *soap.XSDDateTime) *time.Time {
	if p == nil {
		return nil
	}
	t := p.ToGoTime()
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func xsdTime(t time.Time) soap.XSDDateTime { return soap.CreateXsdDateTime(t.UTC(), true) }

func xsdTimePtr(t *time.Time) *soap.XSDDateTime {
	if t == nil {
		return nil
	}
	x := xsdTime(*t)
	return &x
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// optPoints is p for an optional element, nil (left out) when zero.
func optPoints(p core.Points) *int64 {
	if p == 0 {
		return nil
	}
	n := int64(p)
	return &n
}

// target checks the program and member every operation names.
func target(program, ref string) error {
	if strings.TrimSpace(program) == "" {
		return invalid("Program", "is required: the program's code")
	}
	if err := core.CheckCode("Program", program); err != nil {
		return err
	}
	return core.CheckRef("CustomerRef", "", ref)
}

// write builds the command of a write request, sends it and returns the
// ledger's result; a refusal comes back as its domain error.
func (s *Server) write(c *call, kind, txn, program, member string, payload any,
	occurred *time.Time) (bus.Result, error) {
	if txn == "" {
		return bus.Result{}, invalid("TxnId", "is required on every write: the caller's "+
			"transaction id, "+core.RefRule)
	}
	if err := core.CheckRef("TxnId", "", txn); err != nil {
		return bus.Result{}, err
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return bus.Result{}, fmt.Errorf("encode payload: %w", err)
	}
	now := s.now().UTC()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind,
		Source: c.caller.Name, TxnID: txn, Program: program, Member: member, Payload: body,
		ReceivedAt: now}
	// As in REST, a time the caller left out is not part of what it asked.
	if occurred != nil {
		cmd.OccurredAt = *occurred
	}
	cmd.Seal()
	if occurred == nil {
		cmd.OccurredAt = now
	}
	res, err := s.submit(c.ctx, cmd)
	if err == errPending {
		return bus.Result{}, errors.Join(errPending, core.Errorf(core.Unavailable, "TxnId",
			"the request is stored and will be applied, but its result did not come back "+
				"in time; send it again with the same TxnId to get the result"))
	}
	if err != nil {
		return bus.Result{}, err
	}
	if res.Status == bus.StatusRejected && res.Error != nil {
		return bus.Result{}, &core.Error{Kind: core.ErrorKind(res.Error.Kind),
			Field: res.Error.Field, Message: res.Error.Message}
	}
	return res, nil
}

// outcome turns a ledger result into the answer every points write shares.
func outcome(res bus.Result) (*gen.Outcome, error) {
	var o core.Outcome
	if err := json.Unmarshal(res.Data, &o); err != nil {
		return nil, fmt.Errorf("decode outcome: %w", err)
	}
	out := &gen.Outcome{TxnId: res.TxnID, CommandId: res.CommandID, Replayed: res.Replayed,
		CustomerRef: o.Member, Points: int64(o.Points), Balance: figures(o.Balance),
		PostingId: o.PostingIDs, WrittenOff: optPoints(o.Written),
		WrittenOffRecovered: optPoints(o.Recovered)}
	return out, nil
}

func figures(b core.Balance) *gen.Figures {
	return &gen.Figures{Available: int64(b.Available), Pending: int64(b.Pending),
		Held: int64(b.Held)}
}

func memberInfo(m *core.Member) *gen.MemberInfo {
	return &gen.MemberInfo{Id: m.ID, Program: m.Program, CustomerRef: m.CustomerRef,
		Status: m.Status, Channel: optString(m.Channel), EnrolledAt: xsdTime(m.EnrolledAt),
		MergedInto: optString(m.MergedInto), Balance: figures(m.Balance)}
}

func (s *Server) enroll(c *call, in *gen.EnrollMember) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	channel := opt(in.Channel)
	if len(channel) > 64 {
		return nil, invalid("Channel", "is at most 64 characters")
	}
	res, err := s.write(c, core.KindEnroll, in.TxnId, in.Program, in.CustomerRef,
		core.Enroll{Channel: channel, EnrolledAt: optTime(in.EnrolledAt)}, nil)
	if err != nil {
		return nil, err
	}
	var m core.Member
	if err := json.Unmarshal(res.Data, &m); err != nil {
		return nil, fmt.Errorf("decode member: %w", err)
	}
	return &gen.EnrollMemberResponse{TxnId: res.TxnID, CommandId: res.CommandID,
		Replayed: res.Replayed, Member: memberInfo(&m)}, nil
}

func (s *Server) getMember(c *call, in *gen.GetMember) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	m, err := s.read.Member(c.ctx, in.Program, in.CustomerRef)
	if err != nil {
		return nil, err
	}
	return &gen.GetMemberResponse{Member: memberInfo(m)}, nil
}

func (s *Server) accrue(c *call, in *gen.Accrue) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	typ := strings.TrimSpace(in.EventType)
	if typ == "" || len(typ) > 64 {
		return nil, invalid("EventType", "is required: the event type, such as bill_paid")
	}
	amount, err := core.ParseAmount("Amount", in.Amount)
	if err != nil {
		return nil, err
	}
	if amount.Sign() < 0 {
		return nil, invalid("Amount", "must not be negative")
	}
	occurred := optTime(in.OccurredAt)
	if occurred != nil && occurred.After(s.now().Add(5*time.Minute)) {
		return nil, invalid("OccurredAt", "is in the future")
	}
	if occurred != nil && occurred.Before(core.Earliest) {
		return nil, invalid("OccurredAt", "is before 1970-01-01T00:00:00Z, the earliest date "+
			"Puntos records")
	}
	res, err := s.write(c, core.KindAccrue, in.TxnId, in.Program, in.CustomerRef,
		core.Accrue{EventType: typ, Amount: strings.TrimSpace(in.Amount),
			Currency: opt(in.Currency), Partner: opt(in.Partner)}, occurred)
	if err != nil {
		return nil, err
	}
	o, err := outcome(res)
	if err != nil {
		return nil, err
	}
	return &gen.AccrueResponse{Result: o}, nil
}

func (s *Server) getBalance(c *call, in *gen.GetBalance) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	b, err := s.read.Balance(c.ctx, in.Program, in.CustomerRef)
	if err != nil {
		return nil, err
	}
	out := &gen.GetBalanceResponse{CustomerRef: b.Member, Program: b.Program,
		Status: b.Status, Balance: figures(b.Balance), AsOf: xsdTime(b.AsOf)}
	for _, l := range b.Lots {
		out.Lot = append(out.Lot, &gen.LotInfo{Id: l.ID, EarnedAt: xsdTime(l.EarnedAt),
			SpendableFrom: xsdTime(l.SpendableFrom), ExpiresAt: xsdTimePtr(l.ExpiresAt),
			Pending: l.Pending, Original: int64(l.Original), Remaining: int64(l.Remaining),
			Held: int64(l.Held)})
	}
	for _, e := range b.NextExpiries {
		out.NextExpiry = append(out.NextExpiry, &gen.ExpiryInfo{ExpiresAt: xsdTime(e.ExpiresAt),
			Points: int64(e.Points)})
	}
	return out, nil
}

func (s *Server) getMovements(c *call, in *gen.GetMovements) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	limit := 50
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > 500 {
			return nil, invalid("Limit", "must be a whole number from 1 to 500")
		}
		limit = int(*in.Limit)
	}
	page, err := s.read.Statement(c.ctx, in.Program, in.CustomerRef, opt(in.Cursor), limit)
	if err != nil {
		return nil, err
	}
	return movements(page), nil
}

func movements(page *postgres.StatementPage) *gen.GetMovementsResponse {
	out := &gen.GetMovementsResponse{CustomerRef: page.Member, NextCursor: optString(page.Next)}
	for _, p := range page.Postings {
		m := &gen.MovementInfo{Id: p.ID, Kind: p.Kind, Points: int64(p.Points),
			HeldDelta: int64(p.HeldDelta), PendingDelta: int64(p.PendingDelta),
			Source: p.Source, TxnId: optString(p.TxnID), Reason: optString(p.Reason),
			Partner: optString(p.Partner), OccurredAt: xsdTime(p.OccurredAt),
			RecordedAt: xsdTime(p.RecordedAt)}
		if p.ReversesID != 0 {
			id := p.ReversesID
			m.ReversesId = &id
		}
		for _, l := range p.Lots {
			m.LotMove = append(m.LotMove, &gen.LotMoveInfo{LotId: l.LotID,
				Points: int64(l.Points), Held: int64(l.Held)})
		}
		m.WrittenOff, m.WrittenOffRecovered = optPoints(p.WrittenOff), optPoints(p.Recovered)
		out.Movement = append(out.Movement, m)
	}
	return out
}

func (s *Server) redeem(c *call, in *gen.Redeem) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("Points", core.Points(in.Points)); err != nil {
		return nil, err
	}
	if err := checkReason(opt(in.Reason)); err != nil {
		return nil, err
	}
	res, err := s.write(c, core.KindRedeem, in.TxnId, in.Program, in.CustomerRef,
		core.Redeem{Points: core.Points(in.Points), Reason: opt(in.Reason)}, nil)
	if err != nil {
		return nil, err
	}
	o, err := outcome(res)
	if err != nil {
		return nil, err
	}
	return &gen.RedeemResponse{Result: o}, nil
}

// cancelRedemption reverses the redemption the same caller made under
// RedemptionTxnId; a TxnId that made anything other than a redemption is
// not found.
func (s *Server) cancelRedemption(c *call, in *gen.CancelRedemption) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	if err := core.CheckRef("RedemptionTxnId", "the TxnId of the redemption to cancel",
		in.RedemptionTxnId); err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(in.Reason)
	if reason == "" {
		return nil, invalid("Reason", "is required")
	}
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	res, err := s.write(c, core.KindReverse, in.TxnId, in.Program, in.CustomerRef,
		core.Reverse{OriginalTxnID: in.RedemptionTxnId, Reason: reason,
			OnlyKind: core.PostRedemption}, nil)
	if err != nil {
		return nil, err
	}
	o, err := outcome(res)
	if err != nil {
		return nil, err
	}
	return &gen.CancelRedemptionResponse{Result: o}, nil
}

func (s *Server) transfer(c *call, in *gen.TransferPoints) (any, error) {
	if err := target(in.Program, in.CustomerRef); err != nil {
		return nil, err
	}
	if err := core.CheckRef("ToCustomerRef", "the receiving member's reference",
		in.ToCustomerRef); err != nil {
		return nil, err
	}
	if err := core.CheckPoints("Points", core.Points(in.Points)); err != nil {
		return nil, err
	}
	if err := checkReason(opt(in.Reason)); err != nil {
		return nil, err
	}
	res, err := s.write(c, core.KindTransfer, in.TxnId, in.Program, in.CustomerRef,
		core.Transfer{To: in.ToCustomerRef, Points: core.Points(in.Points),
			Reason: opt(in.Reason)}, nil)
	if err != nil {
		return nil, err
	}
	o, err := outcome(res)
	if err != nil {
		return nil, err
	}
	return &gen.TransferPointsResponse{Result: o}, nil
}

// checkReason refuses a reason longer than the ledger keeps, naming the
// element Reason.
func checkReason(reason string) error {
	if err := core.CheckReason(reason, false); err != nil {
		ce, _ := core.AsError(err)
		return invalid("Reason", "%s", ce.Message) // the element's name, the check's words
	}
	return nil
}
