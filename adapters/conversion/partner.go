// Package conversion is the adapter that turns members' points into other
// companies' loyalty currencies (airline miles, a retailer's points).
//
// The ledger does the first half in one transaction: it holds the points
// and writes the conversion, pending, into the conversions table, which is
// the outbox of the outbound calls. This package does the rest: a worker
// takes due conversions from that outbox, delivers each to the other
// program with our transaction id (the conversion id, the same on every
// retry), captures the hold on a confirmed credit and releases it on a
// definite refusal. An unclear outcome is never guessed: the conversion
// stays pending and is delivered again, and a reconciliation job asks the
// other program for the status of what is pending and what was settled.
//
// Two flavours speak the partner protocol of
// contracts/conversion-partner-protocol.md: JSON over HTTPS (HTTPPartner)
// and daily files (FilePartner). Both pass the same contract test suite.
package conversion

import (
	"context"
	"time"
)

// Outcome is what an answer of the other program says about a credit.
type Outcome int

// The outcomes.
const (
	// Unclear: no answer, or one that decides nothing (a timeout after the
	// request left, a 5xx, a reset connection, a file not yet answered).
	// The conversion stays pending and is delivered again.
	Unclear Outcome = iota
	// Confirmed: the other program credited the member; Reference is set.
	Confirmed
	// Refused: the other program will never credit this transaction; Code
	// says why.
	Refused
	// Unknown: asked for its status, the other program says it never
	// received the transaction. It is delivered again with the same id.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Confirmed:
		return "confirmed"
	case Refused:
		return "refused"
	case Unknown:
		return "unknown"
	}
	return "unclear"
}

// Request is one credit asked of another program.
type Request struct {
	// TxnID is our transaction id: the conversion id, the same on every
	// delivery, so that the other program credits it at most once.
	TxnID string
	// Program is our program's code; External the other program's code.
	Program  string
	External string
	// MemberID is the member's id at the other program.
	MemberID string
	// Amount is what to credit, in the other program's units.
	Amount int64
	// Points is what the member gives up here.
	Points      int64
	RequestedAt time.Time
}

// Answer is what the other program said about a request.
type Answer struct {
	Outcome   Outcome
	Reference string // their reference of a confirmed credit
	Code      string // their code of a refusal
	// Detail explains an unclear answer, for the logs and the status.
	Detail string
	// Contradicts tells an unclear answer that is the other program's own
	// answers disagreeing (a file flavour's confirmation and refusal of
	// the same credit): it settles no pending conversion, and makes a
	// settled one a dispute.
	Contradicts bool
}

// Partner is one other program, reached in one flavour of the protocol.
type Partner interface {
	// Deliver asks the other program to credit req. It is safe to call
	// again with the same request, any number of times: the other program
	// answers a transaction id it already knows with its first answer.
	Deliver(ctx context.Context, req Request) Answer
	// Status asks what became of req.TxnID, without delivering it.
	Status(ctx context.Context, req Request) Answer
}
