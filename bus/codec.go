package bus

import (
	"encoding/json"
	"errors"

	"github.com/puntos-loyalty/puntos/internal/plainjson"
)

// Every command crosses the bus as JSON twice (written by a gateway, read by
// core) and every result once more (read by the gateway that waits for it).
// encoding/json spends most of that time on reflection and on a second pass
// that validates the whole message; these functions write and read the
// shape Puntos itself writes by hand, and leave any other shape to
// encoding/json. TestCommandCodec and TestDecodeResult hold them to it.

// AppendCommand appends c as JSON: the bytes json.Marshal writes.
func AppendCommand(b []byte, c *Command) ([]byte, error) {
	start := len(b)
	b = append(b, `{"id":`...)
	b = plainjson.AppendString(b, c.ID)
	b = append(b, `,"kind":`...)
	b = plainjson.AppendString(b, c.Kind)
	b = append(b, `,"source":`...)
	b = plainjson.AppendString(b, c.Source)
	b = append(b, `,"txn_id":`...)
	b = plainjson.AppendString(b, c.TxnID)
	b = append(b, `,"program":`...)
	b = plainjson.AppendString(b, c.Program)
	b = append(b, `,"member":`...)
	b = plainjson.AppendString(b, c.Member)
	if c.Actor != "" {
		b = append(b, `,"actor":`...)
		b = plainjson.AppendString(b, c.Actor)
	}
	if c.Channel != "" {
		b = append(b, `,"channel":`...)
		b = plainjson.AppendString(b, c.Channel)
	}
	b = append(b, `,"payload":`...)
	b, ok := plainjson.AppendRaw(b, c.Payload)
	if !ok {
		return b[:start], marshalError(c, nil)
	}
	b = append(b, `,"hash":`...)
	b = plainjson.AppendString(b, c.Hash)
	var err error
	b = append(b, `,"occurred_at":`...)
	if b, err = plainjson.AppendTime(b, c.OccurredAt); err != nil {
		return b[:start], marshalError(c, err)
	}
	b = append(b, `,"received_at":`...)
	if b, err = plainjson.AppendTime(b, c.ReceivedAt); err != nil {
		return b[:start], marshalError(c, err)
	}
	if a := c.Audit; a != nil {
		b = append(b, `,"audit":{"action":`...)
		b = plainjson.AppendString(b, a.Action)
		b = append(b, `,"target":`...)
		b = plainjson.AppendString(b, a.Target)
		if a.Actor != "" {
			b = append(b, `,"actor":`...)
			b = plainjson.AppendString(b, a.Actor)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// marshalError is the error json.Marshal returns for c, which AppendCommand
// refused: encoding/json says what is wrong, in its words (a time's refusal
// wrapped in a *json.MarshalerError). err is the fallback, should it take c.
func marshalError(c *Command, err error) error {
	if _, jerr := json.Marshal(c); jerr != nil {
		return jerr
	}
	if err == nil {
		err = errors.New("json: command not encoded")
	}
	return err
}

// DecodeCommand reads data into c as json.Unmarshal would, c being zero.
// The payload shares data's memory.
func DecodeCommand(data []byte, c *Command) error {
	if readCommand(data, c) {
		return nil
	}
	*c = Command{}
	return json.Unmarshal(data, c)
}

func readCommand(data []byte, c *Command) bool {
	r := plainjson.NewReader(data)
	r.Lit(`{"id":`)
	c.ID = r.String()
	r.Lit(`,"kind":`)
	c.Kind = r.String()
	r.Lit(`,"source":`)
	c.Source = r.String()
	r.Lit(`,"txn_id":`)
	c.TxnID = r.String()
	r.Lit(`,"program":`)
	c.Program = r.String()
	r.Lit(`,"member":`)
	c.Member = r.String()
	if r.Next(`,"actor":`) {
		c.Actor = r.String()
	}
	if r.Next(`,"channel":`) {
		c.Channel = r.String()
	}
	r.Lit(`,"payload":`)
	c.Payload = r.Raw()
	r.Lit(`,"hash":`)
	c.Hash = r.String()
	r.Lit(`,"occurred_at":`)
	c.OccurredAt = r.Time()
	r.Lit(`,"received_at":`)
	c.ReceivedAt = r.Time()
	if r.Next(`,"audit":{"action":`) {
		a := &Audit{Action: r.String()}
		r.Lit(`,"target":`)
		a.Target = r.String()
		if r.Next(`,"actor":`) {
			a.Actor = r.String()
		}
		r.Lit("}")
		c.Audit = a
	}
	r.Lit("}")
	return r.End()
}

// DecodeResult reads data into r as json.Unmarshal would, r being zero. The
// data shares data's memory.
func DecodeResult(data []byte, res *Result) error {
	if readResult(data, res) {
		return nil
	}
	*res = Result{}
	return json.Unmarshal(data, res)
}

func readResult(data []byte, res *Result) bool {
	r := plainjson.NewReader(data)
	r.Lit(`{"command_id":`)
	res.CommandID = r.String()
	r.Lit(`,"source":`)
	res.Source = r.String()
	r.Lit(`,"txn_id":`)
	res.TxnID = r.String()
	r.Lit(`,"kind":`)
	res.Kind = r.String()
	r.Lit(`,"status":`)
	res.Status = r.String()
	if r.Next(`,"replayed":true`) {
		res.Replayed = true
	}
	if r.Next(`,"error":{"kind":`) {
		e := &Error{Kind: r.String()}
		if r.Next(`,"field":`) {
			e.Field = r.String()
		}
		r.Lit(`,"message":`)
		e.Message = r.String()
		r.Lit("}")
		res.Error = e
	}
	if r.Next(`,"data":`) {
		res.Data = r.Raw()
	}
	r.Lit("}")
	return r.End()
}
