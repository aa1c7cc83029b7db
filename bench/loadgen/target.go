package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
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

// adminURL is the PostgreSQL URL the fresh database is created through.
func adminURL() string {
	if u := os.Getenv("PUNTOS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
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

	dbURL, drop, err := freshDatabase(ctx)
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

// freshDatabase creates an empty database and returns its URL and a
// function that drops it.
func freshDatabase(ctx context.Context) (string, func(), error) {
	admin := adminURL()
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL is not reachable (run `make services`): %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("puntos_bench_%d_%06d", time.Now().Unix()%1e8, rand.IntN(1e6))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		c, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	u, err := url.Parse(admin)
	if err != nil {
		drop()
		return "", nil, fmt.Errorf("PUNTOS_TEST_DATABASE_URL must be a URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
