package postgres

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// lastNoncePurge is when ClaimNonce last removed stale nonces (Unix
// seconds), so that one claim a minute does it.
var lastNoncePurge atomic.Int64

// ClaimNonce records a SOAP digest token's nonce, used by user, until
// forget and reports whether it was new: false when any gateway claimed it
// before, for whichever user. The
// claim is committed without waiting for the disk (a crash of PostgreSQL may
// forget the last claims, as a restart of the in-memory cache did before),
// in one round trip.
func (l *Ledger) ClaimNonce(ctx context.Context, user string, nonce []byte,
	forget time.Time) (bool, error) {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL synchronous_commit TO off`)
	b.Queue(`INSERT INTO soap_nonces (nonce, username, forget_at) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, nonce, user, forget)
	b.Queue(`COMMIT`)
	res := l.pool.SendBatch(ctx, b)
	var fresh bool
	var err error
	for i := range 4 {
		tag, e := res.Exec()
		if e != nil && err == nil {
			err = e
		}
		if i == 2 {
			fresh = tag.RowsAffected() == 1
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("claim nonce: %w", err)
	}
	now := time.Now()
	if last := lastNoncePurge.Load(); now.Unix()-last >= 60 &&
		lastNoncePurge.CompareAndSwap(last, now.Unix()) {
		// Apart from the request: a slow delete must not hold a call.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := l.pool.Exec(ctx, `DELETE FROM soap_nonces WHERE forget_at < $1`,
				now); err != nil {
				l.log.Warn("Stale SOAP nonces not removed", "error", err)
			}
		}()
	}
	return fresh, nil
}
