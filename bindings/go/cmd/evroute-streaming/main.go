// Command evroute-streaming is a drop-in replacement for Mastodon's streaming
// server (streaming/index.js) on evroute: same environment, same endpoints,
// same frames, no database query per message.
//
//	evroute-streaming [--env-file .env.production]           # serve
//	evroute-streaming install-triggers [--env-file FILE]     # opt-in NOTIFY triggers
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	evroute "github.com/evroute/evroute/bindings/go"
	"github.com/evroute/evroute/bindings/go/streaming"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/joho/godotenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func usage(fs *flag.FlagSet) func() {
	return func() {
		out := fs.Output()
		fmt.Fprint(out, `Usage: evroute-streaming [--env-file FILE] [serve | install-triggers | loadgen -h]

A drop-in replacement for Mastodon's streaming server. It reads Mastodon's
environment: SOCKET or BIND/PORT; TRUSTED_PROXY_IP; DATABASE_URL or DB_USER, DB_PASS, DB_NAME,
DB_HOST, DB_PORT, DB_SSLMODE, DB_POOL; REDIS_URL or REDIS_HOST, REDIS_PORT,
REDIS_DB, REDIS_USERNAME, REDIS_PASSWORD; REDIS_NAMESPACE.

Commands:
  serve             serve the streaming API (the default)
  install-triggers  add Postgres triggers on blocks, mutes, domain blocks, users and
                    custom_filters that NOTIFY the server, which then reloads the
                    account's viewer state within a second (a schema addition)
  loadgen           drive any Mastodon-compatible streaming server with N SSE or
                    WebSocket clients and events published to Redis; report
                    deliveries/s, latency, frames lost, server CPU and RSS

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(out, "\nevroute settings (environment):\n")
		for _, s := range evrouteSettings {
			fmt.Fprintf(out, "  %-26s %s (default %s)\n", s.name, s.help, s.def)
		}
	}
}

func main() {
	fs := flag.NewFlagSet("evroute-streaming", flag.ContinueOnError)
	envFile := fs.String("env-file", "", "load this dotenv file first (e.g. Mastodon's .env.production); the environment wins")
	fs.Usage = usage(fs)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) { // asked for: stdout, success
			fs.SetOutput(os.Stdout)
			fs.Usage()
			os.Exit(0)
		}
		fs.SetOutput(os.Stderr)
		fmt.Fprintf(os.Stderr, "evroute-streaming: %v\n", err)
		fs.Usage()
		os.Exit(2)
	}
	fs.SetOutput(os.Stderr)
	cmd := "serve"
	if fs.NArg() > 0 {
		cmd = fs.Arg(0)
	}
	if *envFile != "" {
		if err := godotenv.Load(*envFile); err != nil {
			fmt.Fprintf(os.Stderr, "evroute-streaming: --env-file: %v\n", err)
			os.Exit(1)
		}
	}
	var err error
	switch cmd {
	case "serve":
		err = serve()
	case "install-triggers":
		err = runInstallTriggers()
	case "loadgen":
		err = runLoadgen(fs.Args()[1:])
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "evroute-streaming: %v\n", err)
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	lv := slog.LevelInfo
	switch level {
	case "silly", "debug", "verbose":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error", "silent":
		lv = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}

func openPool(ctx context.Context, cfg *config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database configuration: %w", err)
	}
	pc.MaxConns = int32(cfg.dbPool)
	// As Mastodon: an empty application_name keeps PgBouncer cheap.
	pc.ConnConfig.RuntimeParams["application_name"] = ""
	return pgxpool.NewWithConfig(ctx, pc)
}

func runInstallTriggers() error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := installTriggers(ctx, pool); err != nil {
		return fmt.Errorf("install-triggers: %w", err)
	}
	fmt.Println("evroute-streaming: triggers installed (channel " + notifyChannel + ")")
	return nil
}

func listener(cfg *config) (net.Listener, string, error) {
	if cfg.socket != "" {
		_ = os.Remove(cfg.socket)
		l, err := net.Listen("unix", cfg.socket)
		if err != nil {
			return nil, "", err
		}
		if err := os.Chmod(cfg.socket, 0o666); err != nil {
			l.Close()
			return nil, "", err
		}
		return l, cfg.socket, nil
	}
	addr := net.JoinHostPort(cfg.bind, strconv.Itoa(cfg.port))
	l, err := net.Listen("tcp", addr)
	return l, addr, err
}

// serveDebug serves Go's profiles on their own listener, off the
// streaming API's port (they disclose the process's internals).
func serveDebug(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Warn("EVROUTE_DEBUG_ADDR: profiles served on " + addr)
	if err := srv.ListenAndServe(); err != nil {
		log.Error("EVROUTE_DEBUG_ADDR", "err", err)
	}
}

func serve() error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg.logLevel)
	if cfg.debugAddr != "" {
		// Every 4 kB allocated sampled (Go's default: 512 kB), so that the
		// heap profile resolves costs per connection.
		runtime.MemProfileRate = 4096
		go serveDebug(cfg.debugAddr, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	pgxPool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pgxPool.Close()
	pool := &pgPool{Pool: pgxPool}

	ecfg := evroute.Config{QueueCapacity: cfg.queueCapacity, Overflow: cfg.overflow, RedisNamespace: cfg.redisNamespace}
	if cfg.historyEvents > 0 {
		ecfg.History = &evroute.HistoryConfig{MaxEvents: cfg.historyEvents, MaxAgeSecs: cfg.historyAge}
	}
	eng, err := evroute.NewEngine(ecfg)
	if err != nil {
		return err
	}
	defer eng.Close()
	// A short poll: a new channel is subscribed within it (see Synced below).
	// Channels stay subscribed as long as the history keeps events, so a
	// client that reconnects within that time can resume without a gap.
	ropt := evroute.RedisOptions{Subscribe: cfg.subscribeMode, PollInterval: 20 * time.Millisecond}
	if cfg.historyEvents > 0 {
		ropt.Linger = time.Duration(cfg.historyAge) * time.Second
	}
	node, err := eng.AttachRedis(cfg.redisURL, ropt)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer node.Close()
	bus := &systemBus{node: node, log: log}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerHostMetrics(reg, node, pool)

	store := &pgStore{pool: pool}
	h, err := streaming.New(streaming.Options{
		Engine: eng, Tokens: store, Viewers: store, System: bus,
		Ready: func() bool {
			ok, _ := node.WaitSubscribed(0)
			return ok
		},
		Synced:     (&syncWaiter{waitNode: func() { _, _ = node.WaitSynced(time.Second) }}).wait,
		Registerer: reg, Gatherer: reg, Logger: log, TrustedProxies: cfg.trustedProxies,
		RefreshInterval: cfg.refresh, BatchBytes: cfg.batchBytes, EventIDs: cfg.historyEvents > 0,
	})
	if err != nil {
		return err
	}
	go bus.run(ctx, h)
	go listen(ctx, pool, h, log)

	l, addr, err := listener(cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("Streaming API now listening on " + addr)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: closing every stream")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = srv.Shutdown(sctx) }() // stops accepting at once
	if err := h.Shutdown(sctx); err != nil {
		log.Warn("some streams did not end in time", "err", err)
	}
	return nil
}
