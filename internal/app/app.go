package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/puntos-loyalty/puntos/adapters/chsink"
	"github.com/puntos-loyalty/puntos/adapters/conversion"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/gateway/files"
	"github.com/puntos-loyalty/puntos/gateway/rest"
	"github.com/puntos-loyalty/puntos/gateway/soap"
	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

// Roles says which parts a process runs.
type Roles struct {
	Gateway, Core, Adapters bool
}

// App is a running Puntos process.
type App struct {
	cfg     *Config
	log     *slog.Logger
	roles   Roles
	nats    *server.Server
	Bus     *natsbus.Bus
	Pool    *pgxpool.Pool
	Ledger  *postgres.Ledger
	ch      driver.Conn
	http    *http.Server
	ln      net.Listener
	metrics *metrics
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// coreCtx stops the consumers; it is separate so that shutdown can stop
	// intake before draining.
	coreCancel context.CancelFunc
	leases     *leases
	// relayFail and leaseFail keep repeating failures of the outbox relay
	// and of taking partition leases to a few lines.
	relayFail, leaseFail quietLog
	// readyFail keeps what the readiness probes find wrong to a few lines.
	readyFail  quietLog
	group      *groupCommit // merges the partitions' batches; nil when off
	sinkCancel context.CancelFunc
	sinkWG     sync.WaitGroup
	// files is the bulk-load service, once mountFiles made it (core only).
	files *files.Service
	// dirLock holds the data directory of a process with the embedded NATS;
	// runLock its database lock (see runLockKey), watched by watchRunLock,
	// which sets runLockLost when another process took it.
	dirLock     *os.File
	lockMu      sync.Mutex
	runLock     *pgx.Conn
	lockClosed  bool // Close ran: the lock is not to be taken again
	runLockLost atomic.Bool
}

// runLockKey is the advisory lock a process with the embedded NATS holds
// on its database, alone: two such processes have buses apart, so writes
// one took would wait unapplied.
const runLockKey = 7263003

// runLockEvery is how often a process checks that it still holds its lock
// (a PostgreSQL restart or failover ends the connection that held it).
var runLockEvery = 5 * time.Second

// lockDataDir takes the data directory of a process with the embedded
// NATS: two NATS servers on one JetStream store lose the commands they
// accepted.
func (a *App) lockDataDir() error {
	dir := a.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir (data-dir, PUNTOS_DATA_DIR): %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "puntos.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("data dir (data-dir, PUNTOS_DATA_DIR): %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return fmt.Errorf("data dir (data-dir, PUNTOS_DATA_DIR) %s is in use by another "+
			"puntos process: its embedded NATS keeps the commands there, and two servers "+
			"on one store lose them; stop the other, or give this one its own data dir", dir)
	}
	a.dirLock = f
	return nil
}

// tryRunLock takes the database lock on a connection of its own, kept for
// the life of the process. It reports whether it got it.
func (a *App) tryRunLock(ctx context.Context) (bool, error) {
	conn, err := pgx.Connect(ctx, a.cfg.DatabaseURL)
	if err != nil {
		return false, fmt.Errorf("database lock: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, runLockKey).Scan(&got); err != nil {
		_ = conn.Close(ctx)
		return false, fmt.Errorf("database lock: %w", err)
	}
	if !got {
		_ = conn.Close(ctx)
		return false, nil
	}
	a.lockMu.Lock()
	defer a.lockMu.Unlock()
	if a.lockClosed { // the process stopped meanwhile
		_ = conn.Close(context.Background())
		return false, nil
	}
	a.runLock = conn
	return true, nil
}

// lockDatabase takes the database lock at start, or says who holds it.
func (a *App) lockDatabase(ctx context.Context) error {
	got, err := a.tryRunLock(ctx)
	if err != nil || got {
		return err
	}
	return errors.New("another puntos process with an embedded NATS (puntos run without " +
		"NATS_URL) uses this database: two such processes do not share work, each having " +
		"its own bus, and writes to the second would wait unapplied; stop the other, or " +
		"run the processes with one NATS server (NATS_URL)")
}

// watchRunLock checks the database lock every runLockEvery until ctx ends.
// A lock whose connection ended is taken again; when another process took
// it meanwhile, this one says so in its log and /readyz answers not ready.
func (a *App) watchRunLock(ctx context.Context) {
	for sleep(ctx, runLockEvery) {
		a.lockMu.Lock()
		conn := a.runLock
		a.lockMu.Unlock()
		if conn != nil && !conn.IsClosed() {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
			_ = conn.Close(context.Background())
		}
		if ctx.Err() != nil {
			return
		}
		got, err := a.tryRunLock(ctx)
		switch {
		case got:
			a.runLockLost.Store(false)
			a.log.Warn("The database lock's connection ended; lock taken again")
		case err == nil && !a.runLockLost.Swap(true):
			a.log.Error("The database lock was lost and another process took it: this " +
				"process no longer owns its work; stop one of them (/readyz says not ready)")
		}
	}
}

// Start brings up the parts named by roles and returns once they serve.
func Start(ctx context.Context, cfg *Config, log *slog.Logger, roles Roles) (*App, error) {
	a := &App{cfg: cfg, log: log, roles: roles, metrics: newMetrics()}
	a.metrics.info.WithLabelValues(cmp.Or(cfg.Version, "dev")).Set(1)
	setGCPercent(cfg.GCPercent)
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	// The ledger.
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	a.Pool = pool
	if roles.Core {
		if err := postgres.Migrate(ctx, pool, log); err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
	} else if err := postgres.CheckSchema(ctx, pool); err != nil {
		return nil, err
	}
	a.Ledger = postgres.New(pool, log)
	// The key of the credentials of external programs: the gateway seals
	// them before they go on the bus, the core stores them, the conversion
	// adapter sends them.
	if err := a.useSecretsKey(ctx); err != nil {
		return nil, err
	}

	// The bus: embedded when no URL is given.
	url := cfg.NATSURL
	if url == "" {
		if !(roles.Gateway && roles.Core) {
			return nil, errors.New("NATS_URL is required when the gateway and core run apart")
		}
		if err := a.lockDataDir(); err != nil {
			return nil, err
		}
		if err := a.lockDatabase(ctx); err != nil {
			return nil, err
		}
	}
	// The HTTP address is taken before anything starts working: a port in
	// use stops the start here, with nothing begun to stop again.
	if err := a.listen(); err != nil {
		return nil, err
	}
	if url == "" {
		srv, u, err := natsbus.StartEmbedded(cfg.DataDir+"/nats", cfg.NATSPort,
			cfg.NATSSync == "always")
		if err != nil {
			return nil, fmt.Errorf("embedded nats (nats-port, PUNTOS_NATS_PORT: %d): %w",
				cfg.NATSPort, err)
		}
		a.nats, url = srv, u
		log.Info("Started embedded NATS", "url", u, "sync", cfg.NATSSync)
	}
	b, err := natsbus.Connect(ctx, natsbus.Config{URL: url, Partitions: cfg.Partitions,
		Replicas: cfg.NATSReplicas, Name: "puntos", MaxDeliver: cfg.MaxDeliver,
		EventMaxAge: cfg.EventsMaxAge, OnDeadLetter: a.metrics.dead.Inc}, log)
	if err != nil {
		return nil, fmt.Errorf("connect bus: %w", err)
	}
	a.Bus = b
	if roles.Core {
		// Dead letters waiting, beside puntos_dead_letters_total: exported by
		// the processes that run core (puntos run, puntos core), not by
		// gateways and adapters, which would repeat the same count.
		a.metrics.reg.MustRegister(newDeadWaitingCollector(b.DeadLettersWaiting, log))
	}
	// Backlogs between the parts, each read by the processes that run it.
	backlog := newBacklogCollector(log)
	if roles.Core {
		backlog.commands, backlog.outbox = b.CommandMessagesWaiting, a.Ledger.OutboxWaiting
	}
	if roles.Adapters && cfg.ClickHouseAddr != "" {
		backlog.reporting = func(ctx context.Context) (uint64, error) {
			return b.EventsWaiting(ctx, chsink.DefaultDurable)
		}
	}
	if !backlog.empty() {
		a.metrics.reg.MustRegister(backlog)
	}

	// Reporting store (checked by /readyz; the sink comes with the adapters).
	if cfg.ClickHouseAddr != "" {
		// The sink owns the reporting schema, the database included: a
		// database named by hand and not made yet is made here too.
		conn, created, err := clickhouse.OpenCreating(ctx, cfg.ClickHouseAddr, cfg.ClickHouseDB)
		if err != nil {
			log.Warn("ClickHouse is not reachable; /readyz will say so", "error", err)
		} else {
			a.ch = conn
		}
		if created {
			log.Info("Created the ClickHouse database", "database", cfg.ClickHouseDB)
		}
	}

	// Background work.
	bg, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if cfg.NATSURL == "" {
		go a.watchRunLock(bg)
	}
	if roles.Core {
		cctx, ccancel := context.WithCancel(bg)
		a.coreCancel = ccancel
		a.startCore(cctx, bg)
	}
	if roles.Adapters {
		// Pending conversions: exported by the processes that deliver them.
		a.metrics.reg.MustRegister(newConversionsPendingCollector(a.Ledger.ConversionsPending,
			a.Ledger.DisputedConversions,
			log))
		actx, acancel := context.WithCancel(bg)
		a.sinkCancel = acancel
		if cfg.ClickHouseAddr != "" {
			a.sinkWG.Add(1)
			go func() {
				defer a.sinkWG.Done()
				a.runSink(actx)
			}()
		}
		a.sinkWG.Add(1)
		go func() {
			defer a.sinkWG.Done()
			err := conversion.Run(actx, a.Ledger, log.With("component", "conversion"),
				conversion.Options{FileDir: filepath.Join(cfg.DataDir, "conversions")})
			if err != nil && actx.Err() == nil {
				log.Error("Conversion worker stopped", "error", err)
			}
		}()
	}

	// HTTP: health and metrics always, the API on the gateway.
	if err := a.startHTTP(); err != nil {
		return nil, err
	}
	ok = true
	return a, nil
}

// runSink copies ledger events into ClickHouse until ctx ends, reconnecting
// when ClickHouse goes away. It has a connection of its own: /readyz may
// replace a.ch at any time.
func (a *App) runSink(ctx context.Context) {
	log := a.log.With("component", "chsink")
	for ctx.Err() == nil {
		conn, created, err := clickhouse.OpenCreating(ctx, a.cfg.ClickHouseAddr,
			a.cfg.ClickHouseDB)
		if err != nil {
			log.Warn("ClickHouse is not reachable; the sink waits", "error", err)
			sleep(ctx, 5*time.Second)
			continue
		}
		if created {
			log.Info("Created the ClickHouse database", "database", a.cfg.ClickHouseDB)
		}
		err = chsink.Run(ctx, a.Bus, conn, log)
		_ = conn.Close()
		if err != nil && ctx.Err() == nil {
			log.Error("Reporting sink stopped; restarting", "error", err)
			sleep(ctx, 5*time.Second)
		}
	}
}

// Addr is the address the HTTP server listens on.
func (a *App) Addr() string { return a.ln.Addr().String() }

// listen takes the HTTP address, once.
func (a *App) listen() error {
	if a.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s (http-addr, PUNTOS_HTTP_ADDR): %w", a.cfg.HTTPAddr, err)
	}
	a.ln = ln
	return nil
}

func (a *App) startHTTP() error {
	r := mux.NewRouter()
	r.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", a.readyz).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	if a.roles.Gateway {
		backoffice.New(a.Pool, a.Bus, a.Ledger, a.log,
			backoffice.Options{Wait: a.cfg.ResultWait, ClickHouse: a.backofficeClickHouse,
				CloseClickHouse: true, Files: a.bulkFiles,
				ApprovalThreshold: core.Points(a.cfg.AdjustApproval),
				SecureCookies:     a.cfg.SecureCookies}).Register(r)
		keys, err := a.cfg.Keys()
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			host, _, _ := net.SplitHostPort(a.cfg.HTTPAddr)
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return errors.New("api-keys: set PUNTOS_API_KEYS when the gateway listens " +
					"beyond the loopback address")
			}
			keys[DevKey] = "dev"
			a.log.Warn("No API keys configured: the development key is accepted",
				"source", "dev")
		}
		api := rest.New(a.Bus, a.Ledger, a.log, rest.Options{Wait: a.cfg.ResultWait, Keys: keys,
			StatusLookup: func(how string) { a.metrics.lookups.WithLabelValues(how).Inc() }})
		a.mountFiles(api)
		a.mountReports(api)
		api.Register(r)
		soap.New(a.Bus, a.Ledger, a.log, soap.Options{Wait: a.cfg.ResultWait,
			Users: a.cfg.SOAPUsers}).Register(r)
	}
	r.Use(a.metrics.middleware)
	if err := a.listen(); err != nil {
		return err
	}
	ln := a.ln
	a.http = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
		MaxHeaderBytes: 64 << 10}
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("HTTP server stopped", "error", err)
		}
	}()
	return nil
}

// reportsState is ClickHouse's line in /readyz: "ok", or why the reports
// are unavailable.
func (a *App) reportsState(err error) string {
	if err != nil {
		a.readyFail.fail(a.log, "Readiness check failed", "service", "clickhouse",
			"error", err)
		return "reports unavailable: ClickHouse not reachable (the log says why)"
	}
	return "ok"
}

// readyz answers 200 when PostgreSQL and NATS answer. ClickHouse serves
// only the reports, and its sinks wait for it to come back: its state is
// in the body, but a load balancer that trusts the status keeps sending
// accruals and balance reads while it is down.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	ready := true
	// The probe needs no key: its body names no host, user or database;
	// the log has the errors.
	note := func(name string, err error) {
		if err != nil {
			a.readyFail.fail(a.log, "Readiness check failed", "service", name, "error", err)
			checks[name] = "not reachable (the log says why)"
			ready = false
		} else {
			checks[name] = "ok"
		}
	}
	note("postgres", a.Pool.Ping(ctx))
	if a.runLockLost.Load() {
		checks["postgres"] = "the database lock was lost to another process: this one no " +
			"longer owns its work"
		ready = false
	}
	note("nats", a.Bus.Ping(ctx))
	switch {
	case a.cfg.ClickHouseAddr == "":
		checks["clickhouse"] = "disabled"
	case a.ch == nil:
		conn, err := clickhouse.Open(ctx, a.cfg.ClickHouseAddr, a.cfg.ClickHouseDB)
		if err == nil {
			a.ch = conn
		}
		checks["clickhouse"] = a.reportsState(err)
	default:
		checks["clickhouse"] = a.reportsState(clickhouse.Ping(ctx, a.ch))
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"ready\":%t,\"checks\":{\"postgres\":%q,\"nats\":%q,\"clickhouse\":%q}}\n",
		ready, checks["postgres"], checks["nats"], checks["clickhouse"])
}

// Shutdown stops the process in order: no new requests, in-flight requests
// answered, consumers finish their batch (what they had not acknowledged is
// redelivered later, never lost), events relayed, connections closed.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if a.http != nil {
		errs = append(errs, a.http.Shutdown(ctx))
	}
	if a.coreCancel != nil {
		a.coreCancel()
	}
	done := make(chan struct{})
	go func() {
		// The core drains its outbox first; the adapters stop after it.
		a.wg.Wait()
		if a.sinkCancel != nil {
			a.sinkCancel()
		}
		a.sinkWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, errors.New("consumers did not stop in time"))
	}
	if a.leases != nil {
		a.leases.close()
	}
	a.Close()
	return errors.Join(errs...)
}

// Close releases everything at once, without draining.
func (a *App) Close() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.http != nil {
		_ = a.http.Close()
	} else if a.ln != nil {
		_ = a.ln.Close() // taken, not yet served
	}
	if a.Bus != nil {
		a.Bus.Close()
	}
	if a.nats != nil {
		a.nats.Shutdown()
		a.nats.WaitForShutdown()
	}
	a.lockMu.Lock()
	a.lockClosed = true
	if a.runLock != nil {
		_ = a.runLock.Close(context.Background())
	}
	a.lockMu.Unlock()
	if a.dirLock != nil {
		_ = a.dirLock.Close() // after NATS has closed its store
	}
	if a.ch != nil {
		_ = a.ch.Close()
	}
	if a.Pool != nil {
		a.Pool.Close()
	}
}

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	applied  *prometheus.CounterVec
	batches  prometheus.Histogram
	ledgerTx prometheus.Histogram
	dead     prometheus.Counter
	relayed  prometheus.Counter
	lookups  *prometheus.CounterVec
	leased   prometheus.Gauge
	info     *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "puntos_http_requests_total",
		Help: "HTTP requests by route and status."}, []string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "puntos_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route", "method"})
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "puntos_commands_total", Help: "Commands applied by core, by kind and status."},
		[]string{"kind", "status"})
	m.batches = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "puntos_batch_seconds", Help: "Time to apply one batch of commands.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	m.ledgerTx = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "puntos_ledger_transaction_seconds",
		Help: "Time of one ledger transaction applying commands (several partitions' " +
			"batches when merged).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	m.dead = prometheus.NewCounter(prometheus.CounterOpts{Name: "puntos_dead_letters_total",
		Help: "Commands this process stored on the dead-letter stream: refused by the " +
			"ledger, failed PUNTOS_MAX_DELIVER times, or not commands at all."})
	m.relayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "puntos_events_relayed_total",
		Help: "Ledger events relayed from the outbox to the bus."})
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "puntos_status_lookups_total",
		Help: "Status polls for commands the ledger had no result for, by how the bus was " +
			"asked: remembered (answered 202 by this gateway: two lookups), searched (its " +
			"backlog read), busy (pending: too many searches running)."}, []string{"how"})
	m.leased = prometheus.NewGauge(prometheus.GaugeOpts{Name: "puntos_partitions_leased",
		Help: "Command partitions this process holds and applies. Summed over the cores " +
			"it must equal PUNTOS_PARTITIONS: less means commands wait unapplied."})
	m.info = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "puntos_build_info",
		Help: "1, labelled with the version this process runs (make build stamps it)."},
		[]string{"version"})
	m.reg.MustRegister(m.requests, m.latency, m.applied, m.batches, m.ledgerTx, m.dead,
		m.relayed, m.lookups, m.leased, m.info, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (m *metrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		next.ServeHTTP(sw, r)
		route := "other"
		if cur := mux.CurrentRoute(r); cur != nil {
			if tpl, err := cur.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		m.requests.WithLabelValues(route, r.Method, fmt.Sprint(sw.code)).Inc()
		m.latency.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
	})
}

// setGCPercent sets the garbage collector's target unless GOGC is in the
// environment. The platform's live heap is small (tens of MiB) and turns over
// fast, so Go's default of 100 spends a tenth to a fifth of the process's CPU
// collecting under load (docs/benchmarks.md); a higher target trades memory
// for that CPU.
func setGCPercent(percent int) {
	if os.Getenv("GOGC") != "" || percent <= 0 { // Go reads an empty GOGC as unset
		return
	}
	debug.SetGCPercent(percent)
}
