package reporting

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/core"
)

// The ledger's member.erase rewrites the member's reference in PostgreSQL
// and in events it has not relayed yet; the copies already in ledger_events
// are rewritten here, with a ClickHouse mutation (ALTER TABLE ... UPDATE,
// which ClickHouse 18.16 runs in the background, part by part). Only
// member_ref changes: points, kinds and dates stay, so every report total
// is the same before and after.
//
// An operator runs EraseMember after the erasure is committed and the
// reporting sink has caught up with the bus (an event relayed before the
// erasure but stored after this call still carries the old reference;
// running it again then fixes those rows too, and changes nothing else).

const eraseMemberSQL = `ALTER TABLE ledger_events UPDATE member_ref = ?
	WHERE program = ? AND member = ? AND member_ref != ?`

const pendingMutationsSQL = `SELECT count() FROM system.mutations
	WHERE database = currentDatabase() AND table = 'ledger_events' AND is_done = 0`

// EraseMember replaces the reference of the member with id memberID in the
// stored events of program by its pseudonym, and waits until ClickHouse has
// rewritten every part or ctx ends.
func EraseMember(ctx context.Context, conn driver.Conn, program, memberID string) error {
	pseudo := core.Pseudonym(memberID)
	if err := conn.Exec(ctx, eraseMemberSQL, pseudo, program, memberID, pseudo); err != nil {
		return fmt.Errorf("erase member in ledger_events: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, pendingMutationsSQL).Scan(&pending); err != nil {
			return fmt.Errorf("read mutations: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the erasure mutation: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
