package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Unstorable tells whether err is PostgreSQL refusing a value the command
// carries (SQLSTATE class 22, data exception: a NUL in text, a number out
// of range...). Such a command fails the same way every time it is tried.
func Unstorable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && len(pgErr.Code) == 5 && pgErr.Code[:2] == "22"
}

// Refuse stores, in a transaction of its own, the refusal of a command that
// cannot be applied as sent, as ApplyBatch stores a refusal as invalid: a
// replay gets the same answer and a corrected request may take the id over.
// When the id holds a result already, that result is left as it is and
// returned.
func (l *Ledger) Refuse(ctx context.Context, cmd bus.Command, why *core.Error) (bus.Result, error) {
	res := bus.Result{CommandID: cmd.ID, Source: cmd.Source, TxnID: cmd.TxnID, Kind: cmd.Kind,
		Status: bus.StatusRejected,
		Error:  &bus.Error{Kind: string(why.Kind), Field: why.Field, Message: why.Message}}
	body, err := json.Marshal(res)
	if err != nil {
		return bus.Result{}, err
	}
	tag, err := l.pool.Exec(ctx, `INSERT INTO commands (source, txn_id, command_id, kind, hash,
			status, result)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		cmd.Source, cmd.TxnID, cmd.ID, cmd.Kind, cmd.Hash, res.Status, body)
	if err != nil {
		return bus.Result{}, fmt.Errorf("store refusal: %w", err)
	}
	if tag.RowsAffected() == 0 {
		stored, err := l.ResultOf(ctx, cmd)
		if err != nil {
			return bus.Result{}, err
		}
		return *stored, nil
	}
	return res, nil
}
