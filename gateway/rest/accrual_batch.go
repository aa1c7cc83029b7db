package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The batch accrual route takes many accrual events in one request. Its
// rules, also in contracts/openapi.yaml:
//
//   - All or nothing at the gateway: every event is checked before any is
//     published. One bad event refuses the whole request with 400, its
//     field named as events[i].field, and nothing reaches the bus.
//   - Each event carries its own txn_id (the Idempotency-Key header is not
//     used), so each is its own command: the ledger applies, refuses or
//     replays each one on its own, and the answer has one item per event.
//   - Sending the same batch again is safe: each event is de-duplicated on
//     the bus and in the ledger by (source, txn_id), and answered with its
//     first result, flagged as replayed.

// BatchPublisher puts many commands on the bus at once and waits for their
// results together. *natsbus.Bus satisfies it; a Publisher without it
// answers the batch route with 503.
type BatchPublisher interface {
	PublishCommands(ctx context.Context, cmds []bus.Command) (duplicate []bool, errs []error)
	SubscribeResults(source string, txns []string) (<-chan bus.Result, func(), error)
}

// Bounds of one batch request.
const (
	maxBatchEvents = 500
	maxBatchBody   = 1 << 20
)

// batchEvent is one event of a batch: the single accrual's body (eventBody,
// field for field, so that a type error names the field alone) plus the
// member and the event's own transaction id.
type batchEvent struct {
	Member     string     `json:"member"`
	TxnID      string     `json:"txn_id"`
	Type       string     `json:"type"`
	Amount     *string    `json:"amount"`
	Currency   string     `json:"currency"`
	OccurredAt *time.Time `json:"occurred_at"`
	Partner    string     `json:"partner"`
}

// body is the event as the single accrual route reads it.
func (ev batchEvent) body() eventBody {
	return eventBody{Type: ev.Type, Amount: ev.Amount, Currency: ev.Currency,
		OccurredAt: ev.OccurredAt, Partner: ev.Partner}
}

// batchItem is the answer for one event. Status is what the single
// accrual route would have answered: 201 committed, 202 stored on the bus
// but not applied yet, or the status of the error.
type batchItem struct {
	Index     int         `json:"index"`
	TxnID     string      `json:"txn_id"`
	Member    string      `json:"member"`
	Status    int         `json:"status"`
	Result    *bus.Result `json:"result,omitempty"`
	StatusURL string      `json:"status_url,omitempty"`
	Error     *Problem    `json:"error,omitempty"`
}

// batchAnswer is the answer to a batch: counts by outcome, then the items
// in the order of the request.
type batchAnswer struct {
	Committed int         `json:"committed"`
	Pending   int         `json:"pending"`
	Refused   int         `json:"refused"`
	Failed    int         `json:"failed"`
	Items     []batchItem `json:"items"`
}

func (s *Server) registerAccrualBatches(v1 *mux.Router) {
	v1.HandleFunc("/programs/{program}/events/batches", s.accrueBatch).
		Methods(http.MethodPost)
}

// accrueBatch checks every event, publishes them together and answers with
// one item per event: 200 when every event has its final answer (committed
// or refused by the ledger), 202 when some are still on their way.
func (s *Server) accrueBatch(w http.ResponseWriter, r *http.Request) {
	events, err := decodeBatch(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cmds := make([]bus.Command, len(events))
	seen := make(map[string]int, len(events))
	for i, ev := range events {
		if first, dup := seen[ev.TxnID]; dup {
			s.writeError(w, r, core.Errorf(core.Invalid, fmt.Sprintf("events[%d].txn_id", i),
				"repeats the txn_id of events[%d]: each event needs its own", first))
			return
		}
		seen[ev.TxnID] = i
		if cmds[i], err = s.batchCommand(r, i, ev); err != nil {
			s.writeError(w, r, err)
			return
		}
	}

	// An unknown program would refuse every event one by one; say it once.
	if _, err := s.read.Program(r.Context(), mux.Vars(r)["program"]); err != nil {
		s.writeError(w, r, err)
		return
	}
	bp, ok := s.pub.(BatchPublisher)
	if !ok {
		s.writeError(w, r, core.Errorf(core.Unavailable, "",
			"this gateway's bus cannot publish batches; send the events one by one"))
		return
	}
	answer, err := s.publishBatch(r.Context(), bp, cmds)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if answer.Pending > 0 || answer.Failed > 0 {
		status = http.StatusAccepted
	}
	writeJSON(w, status, answer)
}

// decodeBatch reads {"events": [...]} strictly and checks each event. The
// first fault refuses the whole batch, naming events[i] and the field.
//
// A well-formed batch is read in one pass (decodeBatchOnce). One that pass
// refuses is read again event by event with the single route's decoder
// (decodeBatchEach), whose refusal names the event and the field.
func decodeBatch(r *http.Request) ([]batchEvent, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBatchBody+1))
	if err != nil {
		return nil, core.Errorf(core.Invalid, "body", "cannot be read")
	}
	if len(body) > maxBatchBody {
		return nil, core.Errorf(core.Invalid, "body", "is larger than %d bytes", maxBatchBody)
	}
	if !utf8.Valid(body) {
		return nil, core.Errorf(core.Invalid, "body", "is not valid UTF-8")
	}
	if out, ok := decodeBatchOnce(body); ok {
		return out, nil
	}
	return decodeBatchEach(body)
}

// decodeBatchOnce reads a batch in one pass, with the same strictness as
// decodeBatchEach. It takes only the plain form, an object whose one key is
// "events" spelled so: another key (a second "events" too, whose array the
// decoder would fill into the first one's events), unknown fields, trailing
// data, a count out of range, an event that is not an object (null
// included) or a NUL escape anywhere make it give up (ok false), for
// decodeBatchEach to read and say why.
func decodeBatchOnce(body []byte) (out []batchEvent, ok bool) {
	if hasNULEscape(body) {
		return nil, false
	}
	if _, repeated := repeatedKey(body); repeated {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var list []*batchEvent
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	if tok, err := dec.Token(); err != nil || tok != "events" {
		return nil, false
	}
	if dec.Decode(&list) != nil || len(list) == 0 || len(list) > maxBatchEvents {
		return nil, false
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	out = make([]batchEvent, len(list))
	for i, ev := range list {
		if ev == nil {
			return nil, false
		}
		out[i] = *ev
	}
	return out, true
}

// decodeBatchEach reads a batch event by event, each with the single
// route's decoder, and says what is wrong with the first faulty one.
func decodeBatchEach(body []byte) ([]batchEvent, error) {
	if field, ok := repeatedKey(body); ok {
		return nil, repeatedError(field)
	}
	var in struct {
		Events []json.RawMessage `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, core.Errorf(core.Invalid, "body", "is not valid JSON at byte %d",
				se.Offset)
		case errors.As(err, &te) && te.Field == "events":
			return nil, core.Errorf(core.Invalid, "events", "must be a JSON array of events")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			if f == "" {
				f = "body"
			}
			return nil, core.Errorf(core.Invalid, f, "is not a known field: the body is "+
				"{\"events\": [...]}")
		}
		return nil, core.Errorf(core.Invalid, "body", "must be a JSON object "+
			"{\"events\": [...]}")
	}
	if dec.More() {
		return nil, core.Errorf(core.Invalid, "body", "has data after the JSON object")
	}
	if len(in.Events) == 0 || len(in.Events) > maxBatchEvents {
		return nil, core.Errorf(core.Invalid, "events", "must hold 1 to %d events, not %d",
			maxBatchEvents, len(in.Events))
	}

	out := make([]batchEvent, len(in.Events))
	for i, raw := range in.Events {
		if err := decodeEvent(raw, &out[i]); err != nil {
			return nil, inEvent(i, err)
		}
	}
	return out, nil
}

// decodeEvent reads one event with the single routes' strict decoder, so
// that its errors read the same.
func decodeEvent(raw json.RawMessage, ev *batchEvent) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return core.Errorf(core.Invalid, "", "must be a JSON object")
	}
	return decodeBody(&http.Request{Body: io.NopCloser(bytes.NewReader(raw))}, ev)
}

// inEvent puts "events[i]" in front of the field a check of event i named.
func inEvent(i int, err error) error {
	de, ok := core.AsError(err)
	if !ok {
		return err
	}
	field := fmt.Sprintf("events[%d]", i)
	if de.Field != "" && de.Field != "body" {
		field += "." + de.Field
	}
	return &core.Error{Kind: de.Kind, Field: field, Message: de.Message}
}

// batchCommand checks event i as the single accrual route checks its body
// and builds its command, sealed as newCommand seals one.
func (s *Server) batchCommand(r *http.Request, i int, ev batchEvent) (bus.Command, error) {
	if err := core.CheckRef("member", "the member's customer reference",
		ev.Member); err != nil {
		return bus.Command{}, inEvent(i, err)
	}
	if err := core.CheckRef("txn_id", "the caller's transaction id of this event",
		ev.TxnID); err != nil {
		return bus.Command{}, inEvent(i, err)
	}
	accrual, err := checkAccrual(ev.body(), s.now())
	if err == nil {
		err = checkOccurred(ev.OccurredAt)
	}
	if err != nil {
		return bus.Command{}, inEvent(i, err)
	}
	payload, err := json.Marshal(accrual)
	if err != nil {
		return bus.Command{}, err
	}

	now := s.now().UTC()
	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: core.KindAccrue,
		Source: caller(r).Source, TxnID: ev.TxnID, Program: mux.Vars(r)["program"],
		Member: ev.Member, Actor: r.Header.Get("X-Actor"), Channel: r.Header.Get("X-Channel"),
		Payload: payload, ReceivedAt: now}
	// As for one event: a time the caller left out is not part of the digest.
	if ev.OccurredAt != nil {
		cmd.OccurredAt = ev.OccurredAt.UTC()
	}
	cmd.Seal()
	if ev.OccurredAt == nil {
		cmd.OccurredAt = now
	}
	return cmd, nil
}

// checkAccrual checks one accrual event, for the single route and for each
// event of a batch, so that the two cannot drift apart.
func checkAccrual(in eventBody, now time.Time) (core.Accrue, error) {
	if strings.TrimSpace(in.Type) == "" {
		return core.Accrue{}, core.Errorf(core.Invalid, "type",
			"is required: the event type, such as bill_paid")
	}
	if len(in.Type) > 64 {
		return core.Accrue{}, core.Errorf(core.Invalid, "type", "must be at most 64 bytes")
	}
	if in.Amount == nil {
		return core.Accrue{}, core.Errorf(core.Invalid, "amount",
			"is required: a decimal string such as \"12990.50\"")
	}
	amount, err := core.ParseAmount("amount", *in.Amount)
	if err != nil {
		return core.Accrue{}, err
	}
	if amount.Sign() < 0 {
		return core.Accrue{}, core.Errorf(core.Invalid, "amount", "must not be negative")
	}
	if in.OccurredAt != nil && in.OccurredAt.After(now.Add(5*time.Minute)) {
		return core.Accrue{}, core.Errorf(core.Invalid, "occurred_at", "is in the future")
	}
	if in.OccurredAt != nil {
		if err := core.CheckSince1970("occurred_at", *in.OccurredAt); err != nil {
			return core.Accrue{}, err
		}
	}
	return core.Accrue{EventType: in.Type, Amount: strings.TrimSpace(*in.Amount),
		Currency: in.Currency, Partner: in.Partner}, nil
}

// publishBatch publishes cmds together and waits up to s.wait for their
// results. Only a bus that cannot take the subscriptions fails the whole
// batch (nothing is published then); every other outcome is per item.
func (s *Server) publishBatch(ctx context.Context, bp BatchPublisher,
	cmds []bus.Command) (*batchAnswer, error) {
	source := cmds[0].Source
	txns := make([]string, len(cmds))
	for i, c := range cmds {
		txns[i] = c.TxnID
	}
	results, unsubscribe, err := bp.SubscribeResults(source, txns)
	if err != nil {
		s.log.Error("Subscribe results failed", "events", len(cmds), "error", err)
		return nil, core.Errorf(core.Unavailable, "", "the bus is unavailable; retry the batch")
	}
	defer unsubscribe()

	a := &batchAnswer{Items: make([]batchItem, len(cmds))}
	waiting := make(map[string]int, len(cmds)) // txn_id → index, still without a result
	duplicate, errs := bp.PublishCommands(ctx, cmds)
	// The dead-letter lookups of the batch's retries share the result wait.
	lookups, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	var firstErr error
	failed := 0
	for i, c := range cmds {
		a.Items[i] = batchItem{Index: i, TxnID: c.TxnID, Member: c.Member}
		switch {
		case errs[i] != nil:
			failed++
			if firstErr == nil {
				firstErr = errs[i]
			}
			a.Items[i].fail(core.Errorf(core.Unavailable, "", "the bus did not confirm this "+
				"event; send it again with the same txn_id"))
		case duplicate[i]:
			// A retry the bus already holds: its result may be stored
			// already, or the bus may have set it aside for good.
			res, err := s.read.ResultOf(ctx, c)
			if core.KindOf(err) == core.NotFound && s.setAside(lookups, c) {
				if res, err = s.read.ResultOf(ctx, c); core.KindOf(err) == core.NotFound {
					a.Items[i].fail(errSetAside)
					continue
				}
			}
			if err == nil {
				a.Items[i].answer(*res)
				continue
			}
			waiting[c.TxnID] = i
		default:
			waiting[c.TxnID] = i
		}
	}

	if failed > 0 {
		s.log.Error("Publish failed", "events", len(cmds), "failed", failed,
			"error", firstErr)
	}

	s.awaitResults(ctx, results, cmds, waiting, a.Items)
	for i := range a.Items {
		switch it := &a.Items[i]; {
		case it.Status == 0:
			s.pending.add(cmds[i].Source, it.TxnID)
			it.Status = http.StatusAccepted
			it.StatusURL = statusURL(cmds[i])
			a.Pending++
		case it.Status == http.StatusCreated:
			a.Committed++
		case it.Status >= 500:
			a.Failed++
		default:
			a.Refused++
		}
	}
	return a, nil
}

// awaitResults fills the items of the commands in waiting as their results
// arrive, until all have come, s.wait has passed or ctx ends.
func (s *Server) awaitResults(ctx context.Context, results <-chan bus.Result,
	cmds []bus.Command, waiting map[string]int, items []batchItem) {
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	for len(waiting) > 0 {
		select {
		case res, ok := <-results:
			if !ok {
				return
			}
			i, found := waiting[res.TxnID]
			if !found {
				continue
			}
			own, ok := bus.Answer(ctx, s.read, cmds[i], res)
			if !ok {
				continue
			}
			items[i].answer(own)
			delete(waiting, res.TxnID)
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// answer records the ledger's result for the item: 201 with the result, or
// the refusal as a problem with its status.
func (it *batchItem) answer(res bus.Result) {
	if res.Status == bus.StatusRejected && res.Error != nil {
		it.fail(&core.Error{Kind: core.ErrorKind(res.Error.Kind), Field: res.Error.Field,
			Message: res.Error.Message})
		it.Result = &res
		return
	}
	it.Status = http.StatusCreated
	it.Result = &res
}

// fail records err as the item's problem and status.
func (it *batchItem) fail(err *core.Error) {
	p := Problem{Type: "urn:puntos:error:" + string(err.Kind), Title: titleOf[err.Kind],
		Status: statusOf[err.Kind], Detail: err.Error(), Field: err.Field,
		Kind: string(err.Kind), TxnID: it.TxnID}
	it.Status = p.Status
	it.Error = &p
}
