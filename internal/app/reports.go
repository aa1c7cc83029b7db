package app

import (
	"context"
	"errors"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/gateway/rest"
	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

// mountReports serves the report routes on api. They read PostgreSQL
// through the App's pool and ClickHouse through a connection of their own,
// opened at the first report that needs it (again after a failure) and
// closed when the App closes.
func (a *App) mountReports(api *rest.Server) {
	var (
		mu     sync.Mutex
		conn   driver.Conn
		closed bool
	)
	open := func(ctx context.Context) (driver.Conn, error) {
		if a.cfg.ClickHouseAddr == "" {
			return nil, errors.New("no ClickHouse address configured")
		}
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return nil, errors.New("shutting down")
		}
		if conn != nil {
			return conn, nil
		}
		c, err := clickhouse.Open(ctx, a.cfg.ClickHouseAddr, a.cfg.ClickHouseDB)
		if err != nil {
			return nil, err
		}
		conn = c
		return conn, nil
	}
	api.MountReports(&rest.ReportStore{ClickHouse: open, Pool: a.Pool, Settler: a.Ledger})

	prev := a.cancel
	a.cancel = func() {
		mu.Lock()
		closed = true
		if conn != nil {
			_ = conn.Close()
		}
		mu.Unlock()
		if prev != nil {
			prev()
		}
	}
}
