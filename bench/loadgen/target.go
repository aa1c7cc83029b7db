package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// target is the platform under load: its base URL, API key, ledger (for
// the final check) and, when started here, the process parts to stop.
type target struct {
	base, key string
	// soapUser and soapPassword authenticate SOAP calls (HTTP Basic).
	soapUser, soapPassword string
	inProcess              bool
	natsSync               string
	config                 map[string]any
	pool                   *pgxpool.Pool
	ledger                 *postgres.Ledger
	bus                    *natsbus.Bus // in-process only: scenario bus publishes here
	close                  func()
}

// openTarget starts the platform in this process, or connects to the
// ledger of the running gateway named by -url.
func openTarget(ctx context.Context, o *options, log *slog.Logger) (*target, error) {
	if o.url != "" {
		pool, err := postgres.Open(ctx, o.databaseURL)
		if err != nil {
			return nil, err
		}
		return &target{base: o.url, key: o.key, soapUser: o.soapUser,
			soapPassword: o.soapPassword, pool: pool, ledger: postgres.New(pool, log),
			config: map[string]any{"target": "running gateway"}, close: pool.Close}, nil
	}

	dbURL, drop, err := testenv.NewDatabase(ctx, "puntos_bench")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "puntos-bench-")
	if err != nil {
		drop()
		return nil, fmt.Errorf("data directory: %w", err)
	}
	key := "bench-" + randomHex(16)
	soapPassword := "bench-" + randomHex(16)
	over := map[string]string{"PUNTOS_HTTP_ADDR": "127.0.0.1:0", "PUNTOS_DATABASE_URL": dbURL,
		"PUNTOS_NATS_PORT": "-1", "NATS_URL": "", "PUNTOS_DATA_DIR": dir,
		"PUNTOS_API_KEYS": "bench=" + key, "PUNTOS_LOG_LEVEL": "warn",
		"PUNTOS_SOAP_USERS": "bench-soap:" + soapPassword + ":Accrue"}
	getenv := func(k string) string {
		if v, ok := over[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	cfg, _, err := app.LoadConfig("bench", nil, getenv, io.Discard)
	if err != nil {
		drop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.ClickHouseAddr = "" // reporting is not measured here
	a, err := app.Start(ctx, cfg, log, app.Roles{Gateway: true, Core: true})
	if err != nil {
		drop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start platform: %w", err)
	}
	return &target{base: "http://" + a.Addr(), key: key, soapUser: "bench-soap",
		soapPassword: soapPassword, inProcess: true, natsSync: cfg.NATSSync,
		config: map[string]any{"target": "in-process", "nats_sync": cfg.NATSSync,
			"partitions": cfg.Partitions, "batch_size": cfg.BatchSize,
			"result_wait": cfg.ResultWait.String(), "clickhouse": "disabled"},
		pool: a.Pool, ledger: a.Ledger, bus: a.Bus,
		close: func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = a.Shutdown(sctx)
			drop()
			_ = os.RemoveAll(dir)
		}}, nil
}
