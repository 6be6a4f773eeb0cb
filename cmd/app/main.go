// Command app serves the expense app for every tenant of one shared database.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	apphttp "tenantry.dev/tenantry/app/http"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/internal/registry"
)

func main() {
	var (
		addr        = flag.String("http-addr", envOr("HTTP_ADDR", ":8080"), "Address to serve tenants on.")
		metricsAddr = flag.String("metrics-addr", envOr("METRICS_ADDR", ":9090"), "Address of /metrics; empty disables it.")
		dbURL       = flag.String("database-url", os.Getenv("DATABASE_URL"), "The app's connection string (may go through PgBouncer in transaction mode).")
		listenURL   = flag.String("listen-database-url", os.Getenv("LISTEN_DATABASE_URL"), "A direct connection string for LISTEN/NOTIFY; defaults to -database-url.")
		maxConns    = flag.Int("max-conns", 20, "Database connections in the pool.")
		tenantConns = flag.Int("max-tenant-conns", 0, "Connections one tenant may hold at once (0: half of a pool shard's), so that no tenant starves the others.")
		poolShards  = flag.Int("pool-shards", 4, "Split each database's pool into pool shards that each serve a fixed share of the tenants (1: one pool; behind PgBouncer, 1 unless -pool-shard-databases).")
		poolDBs     = flag.Bool("pool-shard-databases", os.Getenv("POOL_SHARD_DATABASES") == "true", "Behind PgBouncer: pool shard i connects to the database <name>_pool<i>, an alias PgBouncer maps to the real database with a server pool of its own.")
		shardURLs   = flag.String("shard-database-urls", os.Getenv("SHARD_DATABASE_URLS"), "The app's connection strings to the ExpenseApp's shards besides the home database, as a JSON object of shard name to connection string.")
		shardListen = flag.String("shard-listen-database-urls", os.Getenv("SHARD_LISTEN_DATABASE_URLS"), "Direct connection strings to the shards for LISTEN/NOTIFY, as -shard-database-urls; defaults to those.")
		citusRoute  = flag.String("citus-routing", envOr("CITUS_ROUTING", registry.CitusRouteWorkers), "On a Citus coordinator, where tenants' transactions go: \"workers\" (straight to the worker that holds the tenant's schema) or \"coordinator\" (e.g. behind PgBouncer, or when workers are not reachable from the app).")
		insecure    = flag.Bool("insecure-cookies", os.Getenv("INSECURE_COOKIES") == "true", "Send the session cookie over plain HTTP too (local development only).")
		devSuffix   = flag.String("dev-host-suffix", os.Getenv("DEV_HOST_SUFFIX"), "Also serve each tenant at <tenant name><suffix>, e.g. .localhost (local development only).")
		tenantStats = flag.Int("tenant-metrics", 0, "Count requests and server errors per tenant for up to this many tenants (the rest as \"other\"); 0 leaves them out.")
		maxHashes   = flag.Int("max-hashes", 0, "Password hashes and checks run at once (0: two per CPU); each holds 19 MiB while it runs.")
		maxExports  = flag.Int("max-exports", 4, "CSV exports built at once; each holds its rows in memory.")
		deviceKey   = flag.String("device-key", os.Getenv("DEVICE_KEY"), "The key that signs the device cookies of browsers that signed in (every replica needs the same; the operator puts one in the app's Secret). Empty makes one for this process alone.")
		channel     = flag.String("notify-channel", os.Getenv("NOTIFY_CHANNEL"), "The channel on which the operator announces changes of this app's tenants (from the app's Secret).")
		proxies     = flag.String("trusted-proxies", os.Getenv("TRUSTED_PROXIES"), "Comma-separated CIDRs of proxies (the ingress controller) whose X-Forwarded-For names the client.")
	)
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	opts := postgres.Options{MaxConns: int32(*maxConns), PoolShards: *poolShards, PoolDatabases: *poolDBs, MaxTenantConns: *tenantConns}
	var listen map[string]string
	if err := shardURLMap(*shardURLs, &opts.Shards); err != nil {
		log.Error("--shard-database-urls: " + err.Error())
		os.Exit(2)
	}
	if err := shardURLMap(*shardListen, &listen); err != nil {
		log.Error("--shard-listen-database-urls: " + err.Error())
		os.Exit(2)
	}
	if *citusRoute != registry.CitusRouteWorkers && *citusRoute != registry.CitusRouteCoordinator {
		log.Error("--citus-routing: must be \"workers\" or \"coordinator\"")
		os.Exit(2)
	}
	trusted, err := apphttp.ParseCIDRs(*proxies)
	if err != nil {
		log.Error("--trusted-proxies: not a list of CIDRs", "error", err)
		os.Exit(2)
	}
	cfg := apphttp.Config{Log: log, SchemaVersion: migrations.Latest, SecureCookies: !*insecure, DevHostSuffix: *devSuffix,
		TrustedProxies: trusted, TenantMetrics: *tenantStats, MaxHashes: *maxHashes, MaxExports: *maxExports,
		DeviceKey: []byte(*deviceKey)}
	if !strings.HasPrefix(*channel, registry.ChannelPrefix) {
		log.Error("--notify-channel: set it (NOTIFY_CHANNEL) to the channel of the app's Secret, \"" + registry.ChannelPrefix + "...\"")
		os.Exit(2)
	}
	if err := run(cfg, *addr, *metricsAddr, *dbURL, *listenURL, *channel, listen, opts, *citusRoute == registry.CitusRouteWorkers); err != nil {
		log.Error("app stopped", "error", err)
		os.Exit(1)
	}
}

func run(cfg apphttp.Config, addr, metricsAddr, dbURL, listenURL, channel string, shardListen map[string]string, opts postgres.Options,
	citusWorkers bool) error {
	log := cfg.Log
	if dbURL == "" {
		return errors.New("set -database-url or DATABASE_URL")
	}
	if listenURL == "" {
		listenURL = dbURL
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := postgres.Open(dbURL, opts)
	if err != nil {
		return err
	}
	defer db.Close()
	registry := postgres.NewRegistry()
	go func() { _ = registry.Run(ctx, channel, connector(listenURL), log) }()
	if citusWorkers {
		go func() { _ = db.RunCitus(ctx, log) }()
	}
	// Each shard's own registry says which schema version its tenants are at.
	for name, u := range opts.Shards {
		if l := shardListen[name]; l != "" {
			u = l
		}
		go func() { _ = registry.RunShard(ctx, name, channel, connector(u), log.With("shard", name)) }()
	}

	cfg.DB, cfg.Registry = db, registry
	srv := apphttp.New(cfg)
	servers := []*http.Server{{Addr: addr, Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}}
	if metricsAddr != "" {
		servers = append(servers, &http.Server{Addr: metricsAddr, Handler: srv.Metrics().Handler(), ReadHeaderTimeout: 10 * time.Second})
	}
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errs <- s.ListenAndServe() }()
	}
	log.Info("serving", "addr", addr, "metrics", metricsAddr, "schemaVersion", migrations.Latest)
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	return nil
}

// shardURLMap reads a flag's JSON object of shard name to connection string; empty is none.
func shardURLMap(raw string, to *map[string]string) error {
	if raw == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(raw), to); err != nil {
		return errors.New("not a JSON object of shard name to connection string")
	}
	return nil
}

// connector connects to a database for LISTEN/NOTIFY.
func connector(url string) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return nil, err
		}
		cfg.RuntimeParams["application_name"] = "tenantry-registry"
		return pgx.ConnectConfig(ctx, cfg)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
