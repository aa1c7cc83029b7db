package backoffice

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// DeadLetterBus is the part of the bus the dead letters page reads and
// mends; natsbus.Bus has it. A Publisher without it leaves the page
// answering 503.
type DeadLetterBus interface {
	DeadLetters(ctx context.Context, n int) ([]natsbus.DeadLetter, error)
	DeadLetterAt(ctx context.Context, seq uint64) (natsbus.DeadLetter, error)
	Redrive(ctx context.Context, seq uint64) (dl natsbus.DeadLetter, again bool, err error)
	Discard(ctx context.Context, seq uint64) (natsbus.DeadLetter, error)
}

// deadPageLimit is the most dead letters the page lists.
const deadPageLimit = 200

// deadRow is one dead letter as the page shows it.
type deadRow struct {
	Seq               uint64
	At                time.Time
	Partition         int
	Deliveries        uint64
	Source, Txn, Kind string
	Program, Member   string
	Reason            string
	Command           bool // it decoded: it can be re-driven
	Refused           bool // the ledger refused it; its refusal is its answer
}

func (s *Server) registerDeadLetters(a *mux.Router) {
	a.Handle("/deadletters", s.auth(s.deadLettersPage, changers...)).Methods(http.MethodGet)
	a.Handle("/deadletters/{seq:[0-9]+}/redrive", s.auth(s.redriveDead, changers...)).
		Methods(http.MethodPost)
	a.Handle("/deadletters/{seq:[0-9]+}/discard", s.auth(s.discardDead, changers...)).
		Methods(http.MethodPost)
}

// deadBus is the bus's dead letters, or nil (and the page answered 503).
func (s *Server) deadBus(w http.ResponseWriter, r *http.Request, sess *session) DeadLetterBus {
	if d, ok := s.pub.(DeadLetterBus); ok && d != nil {
		return d
	}
	s.fail(w, r, sess, http.StatusServiceUnavailable,
		"This gateway has no bus to read dead letters from.", nil)
	return nil
}

func (s *Server) deadLettersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	d := s.deadBus(w, r, sess)
	if d == nil {
		return
	}
	list, err := d.DeadLetters(r.Context(), deadPageLimit+1)
	if err != nil {
		s.fail(w, r, sess, http.StatusServiceUnavailable,
			"The bus could not be read (is NATS up?): "+err.Error(), nil)
		return
	}
	data := struct {
		Letters []deadRow
		More    bool
		Limit   int
	}{More: len(list) > deadPageLimit, Limit: deadPageLimit}
	if data.More {
		list = list[:deadPageLimit]
	}
	for _, dl := range list {
		data.Letters = append(data.Letters, deadRow{Seq: dl.Seq, At: dl.Time,
			Partition: dl.Partition, Deliveries: dl.Deliveries, Source: dl.Source,
			Txn: dl.TxnID, Kind: dl.Command.Kind, Program: dl.Command.Program,
			Member: dl.Command.Member, Reason: dl.Reason, Refused: dl.Refused,
			Command: dl.Command.Kind != "" && dl.Command.Source != "" && dl.Command.TxnID != ""})
	}
	s.render(w, r, http.StatusOK, "deadletters.html", view{Title: "Dead letters", User: sess,
		Data: data})
}

// redriveDead puts a dead letter's command back on the bus.
// A refused letter is not re-driven from the page (which offers no
// button for one): the ledger would answer it with its stored refusal and
// the letter would leave the list with nothing applied.
func (s *Server) redriveDead(w http.ResponseWriter, r *http.Request, sess *session) {
	s.mendDead(w, r, sess, "deadletter.redriven", "redriven",
		func(d DeadLetterBus, ctx context.Context, seq uint64) (natsbus.DeadLetter, error) {
			dl, err := d.DeadLetterAt(ctx, seq)
			if err != nil {
				return dl, err
			}
			if dl.Refused {
				return dl, errRefusedLetter
			}
			dl, _, err = d.Redrive(ctx, seq)
			return dl, err
		})
}

// errRefusedLetter is the refusal to re-drive a refused dead letter.
var errRefusedLetter = errors.New("refused letter")

// discardDead removes a dead letter without sending its command again.
func (s *Server) discardDead(w http.ResponseWriter, r *http.Request, sess *session) {
	s.mendDead(w, r, sess, "deadletter.discarded", "dropped",
		func(d DeadLetterBus, ctx context.Context, seq uint64) (natsbus.DeadLetter, error) {
			return d.Discard(ctx, seq)
		})
}

func (s *Server) mendDead(w http.ResponseWriter, r *http.Request, sess *session, action,
	done string, mend func(DeadLetterBus, context.Context, uint64) (natsbus.DeadLetter, error)) {
	d := s.deadBus(w, r, sess)
	if d == nil {
		return
	}
	ctx := r.Context()
	seq, err := strconv.ParseUint(mux.Vars(r)["seq"], 10, 64)
	if err != nil || seq == 0 {
		s.fail(w, r, sess, http.StatusNotFound, "There is no such dead letter.", nil)
		return
	}
	dl, err := mend(d, ctx, seq)
	switch {
	case errors.Is(err, natsbus.ErrNoDeadLetter):
		s.fail(w, r, sess, http.StatusConflict, "This dead letter is gone: it was "+
			"re-driven or discarded already.", nil)
		return
	case err != nil && dl.Seq == 0:
		s.fail(w, r, sess, http.StatusServiceUnavailable,
			"The bus could not be reached: "+err.Error(), nil)
		return
	case errors.Is(err, errRefusedLetter):
		s.fail(w, r, sess, http.StatusConflict, "The ledger refused this command and keeps "+
			"its refusal under its transaction id: re-driving it would only give the refusal "+
			"again. Once the cause is mended, its caller sends it again under a new "+
			"transaction id; discard the letter.", nil)
		return
	case errors.Is(err, natsbus.ErrNotACommand):
		s.fail(w, r, sess, http.StatusUnprocessableEntity, "This dead letter cannot be "+
			"re-driven: "+err.Error(), nil)
		return
	case err != nil:
		// Re-driven but not removed, say: the letter is still listed, and
		// doing it again is safe.
		s.fail(w, r, sess, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	target := dl.Source + "/" + dl.TxnID
	if dl.Source == "" && dl.TxnID == "" {
		target = "dead-letter/" + strconv.FormatUint(seq, 10)
	}
	s.audit(context.WithoutCancel(ctx), sess.Name, action, target,
		map[string]any{"seq": seq, "reason": dl.Reason, "partition": dl.Partition,
			"deliveries": dl.Deliveries, "kind": dl.Command.Kind,
			"program": dl.Command.Program, "member": dl.Command.Member},
		map[string]any{"done": done})
	notice := done
	if done == "redriven" && dl.Refused {
		// The ledger answers it with the refusal it stored: nothing applies.
		notice = "refusal"
	}
	redirect(w, r, "/admin/deadletters", nil, notice)
}
