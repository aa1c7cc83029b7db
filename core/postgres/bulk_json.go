package postgres

import (
	"encoding/json"
	"strconv"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/plainjson"
)

// The set-based bulk path stores a result and an event for every line. These
// appenders write the same bytes encoding/json writes for bus.Result (with a
// core.Outcome as its data) and bus.Event, without reflection and without
// encoding/json's second pass over the data of a result. TestBulkJSON holds
// them to encoding/json's output field by field.

// appendResult appends r as JSON. Its data, when set, must be compact JSON,
// as appendOutcome writes it.
func appendResult(b []byte, r *bus.Result) []byte {
	b = appendResultHead(b, r)
	if len(r.Data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, r.Data...)
	}
	return append(b, '}')
}

// appendResultHead appends r as JSON without its data and without the
// closing brace, so that the data can be written after it in place.
func appendResultHead(b []byte, r *bus.Result) []byte {
	b = append(b, `{"command_id":`...)
	b = plainjson.AppendString(b, r.CommandID)
	b = append(b, `,"source":`...)
	b = plainjson.AppendString(b, r.Source)
	b = append(b, `,"txn_id":`...)
	b = plainjson.AppendString(b, r.TxnID)
	b = append(b, `,"kind":`...)
	b = plainjson.AppendString(b, r.Kind)
	b = append(b, `,"status":`...)
	b = plainjson.AppendString(b, r.Status)
	if r.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	if e := r.Error; e != nil {
		b = append(b, `,"error":{"kind":`...)
		b = plainjson.AppendString(b, e.Kind)
		if e.Field != "" {
			b = append(b, `,"field":`...)
			b = plainjson.AppendString(b, e.Field)
		}
		b = append(b, `,"message":`...)
		b = plainjson.AppendString(b, e.Message)
		b = append(b, '}')
	}
	return b
}

// appendOutcome appends o as JSON.
func appendOutcome(b []byte, o *core.Outcome) []byte {
	b = append(b, `{"member":`...)
	b = plainjson.AppendString(b, o.Member)
	if len(o.PostingIDs) > 0 {
		b = append(b, `,"posting_ids":[`...)
		for i, id := range o.PostingIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, id, 10)
		}
		b = append(b, ']')
	}
	b = append(b, `,"points":`...)
	b = strconv.AppendInt(b, int64(o.Points), 10)
	b = append(b, `,"balance":{"available":`...)
	b = strconv.AppendInt(b, int64(o.Balance.Available), 10)
	b = append(b, `,"pending":`...)
	b = strconv.AppendInt(b, int64(o.Balance.Pending), 10)
	b = append(b, `,"held":`...)
	b = strconv.AppendInt(b, int64(o.Balance.Held), 10)
	b = append(b, '}')
	if o.HoldID != "" {
		b = append(b, `,"hold_id":`...)
		b = plainjson.AppendString(b, o.HoldID)
	}
	if o.Written != 0 {
		b = append(b, `,"written_off":`...)
		b = strconv.AppendInt(b, int64(o.Written), 10)
	}
	if o.Recovered != 0 {
		b = append(b, `,"written_off_recovered":`...)
		b = strconv.AppendInt(b, int64(o.Recovered), 10)
	}
	if o.Status != "" {
		b = append(b, `,"status":`...)
		b = plainjson.AppendString(b, o.Status)
	}
	if len(o.Lots) > 0 {
		b = append(b, `,"lots":[`...)
		for i, mv := range o.Lots {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"lot_id":`...)
			b = strconv.AppendInt(b, mv.LotID, 10)
			b = append(b, `,"points":`...)
			b = strconv.AppendInt(b, int64(mv.Points), 10)
			if mv.Held != 0 {
				b = append(b, `,"held":`...)
				b = strconv.AppendInt(b, int64(mv.Held), 10)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendEvent appends e as JSON. An event with a detail is left to
// encoding/json, which compacts the detail.
func appendEvent(b []byte, e *bus.Event) ([]byte, error) {
	if len(e.Detail) > 0 {
		body, err := json.Marshal(e)
		return append(b, body...), err
	}
	b = append(b, `{"event_id":`...)
	b = plainjson.AppendString(b, e.ID)
	b = append(b, `,"kind":`...)
	b = plainjson.AppendString(b, e.Kind)
	b = append(b, `,"program":`...)
	b = plainjson.AppendString(b, e.Program)
	b = append(b, `,"member":`...)
	b = plainjson.AppendString(b, e.Member)
	if e.MemberRef != "" {
		b = append(b, `,"member_ref":`...)
		b = plainjson.AppendString(b, e.MemberRef)
	}
	b = append(b, `,"points":`...)
	b = strconv.AppendInt(b, e.Points, 10)
	b = append(b, `,"occurred_at":`...)
	b, err := plainjson.AppendTime(b, e.OccurredAt)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"recorded_at":`...)
	if b, err = plainjson.AppendTime(b, e.RecordedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"source":`...)
	b = plainjson.AppendString(b, e.Source)
	b = append(b, `,"txn_id":`...)
	b = plainjson.AppendString(b, e.TxnID)
	for _, f := range [...]struct{ name, v string }{{`,"rule_version":`, e.RuleVersion},
		{`,"partner":`, e.Partner}, {`,"channel":`, e.Channel}} {
		if f.v != "" {
			b = append(b, f.name...)
			b = plainjson.AppendString(b, f.v)
		}
	}
	if e.PostingID != 0 {
		b = append(b, `,"posting_id":`...)
		b = strconv.AppendInt(b, e.PostingID, 10)
	}
	if e.Tier != "" {
		b = append(b, `,"tier":`...)
		b = plainjson.AppendString(b, e.Tier)
	}
	return append(b, '}'), nil
}
