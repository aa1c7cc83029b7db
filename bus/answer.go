package bus

import "context"

// ResultStore reads what the ledger stored under a command's transaction
// id, judged against the command: its result flagged as a replay for the
// same request, a conflict for a different one, an error while there is no
// final answer (postgres.Ledger.ResultOf).
type ResultStore interface {
	ResultOf(ctx context.Context, cmd Command) (*Result, error)
}

// Answer tells what a result heard on cmd's result subject means for cmd.
// Every request sent under one transaction id listens on the same subject,
// so the result may be another request's: a retry's first copy, or a
// different request that reused the id. Only a result of cmd itself is
// taken as it is; for another, the ledger's stored answer is judged
// against cmd's hash, so that a request never takes a different request's
// outcome for its own. ok is false while cmd has no answer yet.
func Answer(ctx context.Context, store ResultStore, cmd Command, res Result) (Result, bool) {
	if res.Source != cmd.Source || res.TxnID != cmd.TxnID {
		return Result{}, false
	}
	if res.CommandID == cmd.ID {
		return res, true
	}
	own, err := store.ResultOf(ctx, cmd)
	if err != nil {
		return Result{}, false
	}
	return *own, true
}
