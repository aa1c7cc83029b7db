package app

import (
	"context"
	"errors"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

// backofficeClickHouse opens a connection to the reporting database for one
// back-office report page, which closes it (backoffice.Options
// CloseClickHouse). The REST reports keep a connection of their own
// (mountReports); the back office is used by few people, so a connection
// per page costs little and needs no shared state.
func (a *App) backofficeClickHouse(ctx context.Context) (driver.Conn, error) {
	if a.cfg.ClickHouseAddr == "" {
		return nil, errors.New("no ClickHouse address configured")
	}
	return clickhouse.Open(ctx, a.cfg.ClickHouseAddr, a.cfg.ClickHouseDB)
}
