package bus

import (
	"context"
	"log/slog"
)

// SetAsideTeller is a publisher that can tell whether it set a command
// aside for good: dead-lettered, that very request, with no copy of it
// still to be applied (natsbus.Bus.SetAside).
type SetAsideTeller interface {
	SetAside(ctx context.Context, cmd Command) (bool, error)
}

// SetAsideForGood asks pub whether it set cmd aside for good, so that a
// retry of cmd that the bus dropped as a duplicate will get no result. The
// caller bounds the lookup with ctx. When pub cannot tell (it is no
// SetAsideTeller, ctx is done, or the lookup fails, which is logged), the
// answer is false: the caller waits for a result as for any command.
func SetAsideForGood(ctx context.Context, pub any, cmd Command, log *slog.Logger) bool {
	t, ok := pub.(SetAsideTeller)
	if !ok || ctx.Err() != nil {
		return false
	}
	aside, err := t.SetAside(ctx, cmd)
	if err != nil {
		log.Warn("Could not ask the bus about a retried command", "txn_id", cmd.TxnID,
			"error", err)
		return false
	}
	return aside
}
