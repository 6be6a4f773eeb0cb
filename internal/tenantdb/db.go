// Package tenantdb holds every SQL statement the operator runs against the shared database: the
// registry (schema tenantry), tenant schemas and roles, migrations and the first admin user. The
// reconcilers decide what to do; this package says how, with identifiers quoted and values bound.
package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"tenantry.dev/tenantry/internal/pgerr"
)

// DB is the operator's admin session on one shared database: it logs in with the admin connection
// string and runs only role, schema, grant, registry and publication/subscription statements. It never
// reads, writes, truncates or calls anything inside a tenant schema: that is the tenant session's work
// (TenantSession, from Session), on the operator's own tenant login, which can do no more than the
// app's login can, switched to the tenant's role. A trigger, function or view a tenant role planted
// runs there with no more than the app's rights, and never here. Both kinds of session run every
// statement under a statement_timeout and a lock_timeout; the admin session's search_path is pg_catalog
// alone, so no function or operator a tenant made can stand in for a built-in one.
type DB struct {
	pool *pgxpool.Pool
	opts Options
	// tenant is the tenant sessions' pool, on the operator's tenant login (Options.Worker), opened by
	// the first Session. Its size bounds concurrent migrations.
	tenant   *pgxpool.Pool
	tenantMu sync.Mutex // serialises opening it
	// clones are the places of the clones that read their source from this database: a clone holds
	// one of the tenant pool's connections for its snapshot while it fills its target with others, so
	// one place fewer than the pool has connections (Clone).
	clones   chan struct{}
	database string
	server   string // host:port/database

	statements atomic.Int64

	mu         sync.Mutex
	appRoleMu  sync.Mutex // serialises EnsureAppRole
	registryOK bool
	// migrationSecret is the registry's migration_secret, read with the registry's version.
	migrationSecret string
	citusKnown      bool            // whether citus below has been looked up
	citus           bool            // the database is a Citus coordinator
	appRoles        map[string]bool // app roles known to exist

	// shapes are the releases' shapes (ReleaseShape), by release; shapeTurn (a one-place semaphore,
	// which a caller stops waiting for when its context ends) serialises making them.
	shapeTurn chan struct{}
	shapes    map[string]Shape
}

// Options tune a DB.
type Options struct {
	// MaxConns bounds the connections for registry, DDL and admin work (default 8).
	MaxConns int32
	// MaxConcurrentMigrations bounds the tenant schemas migrated at once (default 8).
	MaxConcurrentMigrations int32
	// AppRole is the app's login role on this database, and Worker the operator's own login for tenant
	// sessions: a member of AppRole, and so of every tenant role the app may act as, and of nothing
	// else but the tenants moving here before their cut-over (GrantWorker). The operator creates it and
	// gives it a fresh random password, which only its process knows, when the first Session opens; the
	// tenant sessions then log in as it, where the admin connection string points. Without them, Session
	// fails with ErrNoTenantLogin.
	AppRole, Worker Role
	// Scratch names the role, and the schema it owns, in which ReleaseShape applies a release's
	// migrations to read the shape they make; they exist only while it does.
	Scratch Role
	// StatementTimeout and LockTimeout bound every statement of both kinds of session (defaults:
	// DefaultStatementTimeout, DefaultLockTimeout): no login can hold the operator's work for longer.
	StatementTimeout, LockTimeout time.Duration
	// AdminTracer, when set, is told every statement the admin session sends (tests check them).
	AdminTracer func(sql string, args []any)
}

// Defaults of Options.StatementTimeout and Options.LockTimeout.
const (
	DefaultStatementTimeout = time.Minute
	DefaultLockTimeout      = 10 * time.Second
)

// DatabaseName is the database a connection string names (as libpq: the user's name when it names none).
func DatabaseName(uri string) (string, error) {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return "", errors.New("the database connection string is not a valid postgres:// URL or key=value string")
	}
	return databaseOf(cfg), nil
}

// databaseOf is the database a parsed connection string names.
func databaseOf(cfg *pgx.ConnConfig) string {
	if cfg.Database == "" {
		return cfg.User // as libpq: the database defaults to the user's name
	}
	return cfg.Database
}

// Open returns a DB for an admin connection string. It connects lazily.
func Open(uri string, opts Options) (*DB, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.MaxConcurrentMigrations <= 0 {
		opts.MaxConcurrentMigrations = 8
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = DefaultStatementTimeout
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	db := &DB{opts: opts, shapeTurn: make(chan struct{}, 1)}
	var err error
	admin := poolSettings{maxConns: opts.MaxConns, mode: pgx.QueryExecModeCacheStatement, opts: opts, admin: true}
	if db.pool, err = db.newPool(uri, admin); err != nil {
		return nil, err
	}
	cfg := db.pool.Config().ConnConfig
	db.database = databaseOf(cfg)
	db.server = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, db.database)
	return db, nil
}

// Server names the database as its admin connection string reaches it: host, port and database. Two
// ExpenseApps on one database share it.
func (db *DB) Server() string { return db.server }

// Database is the name of the database, part of every tenant's identity.
func (db *DB) Database() string { return db.database }

// poolSettings say how to open one kind of session's pool.
type poolSettings struct {
	maxConns int32
	mode     pgx.QueryExecMode
	opts     Options
	admin    bool
}

func (db *DB) newPool(uri string, s poolSettings) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		// pgx's message may quote the string, password and all: say only what is wrong.
		return nil, errors.New("the database connection string is not a valid postgres:// URL or key=value string")
	}
	return db.newPoolFrom(cfg, s)
}

// newPoolFrom opens a pool of one kind of session on cfg.
func (db *DB) newPoolFrom(cfg *pgxpool.Config, s poolSettings) (*pgxpool.Pool, error) {
	cfg.MaxConns = s.maxConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.Tracer = &statementCounter{n: &db.statements}
	if s.admin && s.opts.AdminTracer != nil {
		cfg.ConnConfig.Tracer = &statementCounter{n: &db.statements, trace: s.opts.AdminTracer}
	}
	cfg.ConnConfig.DefaultQueryExecMode = s.mode
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	params := maps.Clone(cfg.ConnConfig.RuntimeParams)
	cfg.ConnConfig.RuntimeParams = params
	params["application_name"] = "tenantry-operator"
	// Set at connection start, so that they hold for every statement, whatever the connection string says.
	params["statement_timeout"] = fmt.Sprint(s.opts.StatementTimeout.Milliseconds())
	params["lock_timeout"] = fmt.Sprint(s.opts.LockTimeout.Milliseconds())
	// pg_catalog alone until a transaction sets its own: a search_path from the connection string or
	// the role's settings never decides what the first statement of a transaction calls.
	params["search_path"] = "pg_catalog"
	return pgxpool.NewWithConfig(context.Background(), cfg)
}

// Close closes every connection.
func (db *DB) Close() {
	db.pool.Close()
	if db.tenant != nil {
		db.tenant.Close()
	}
}

// withTenantConn runs fn on a connection of the tenant pool. A connection whose backend refuses the
// switch to a tenant's role out of a stale membership cache (pgerr.SetRoleDenied) is closed, and fn is
// run once more on another.
func withTenantConn(ctx context.Context, pool *pgxpool.Pool, fn func(*pgxpool.Conn) error) error {
	for attempt := 0; ; attempt++ {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		err = fn(conn)
		if pgerr.SetRoleDenied(err) {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // released closed: the pool drops it
		}
		conn.Release()
		if !pgerr.SetRoleDenied(err) || attempt > 0 {
			return err
		}
	}
}

// IsClosed reports whether an error says the DB was closed (its connection string changed and it was
// replaced): the work is to be done again on the new one.
func IsClosed(err error) bool { return errors.Is(err, puddle.ErrClosedPool) }

// Statements is the number of SQL statements this DB has sent since it was opened.
func (db *DB) Statements() int64 { return db.statements.Load() }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// statementCounter counts every statement sent, whatever the pool, and tells trace of each, if set.
type statementCounter struct {
	n     *atomic.Int64
	trace func(sql string, args []any)
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	if c.trace != nil {
		c.trace(d.SQL, d.Args)
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Statements of a batch count one each, as they would sent alone.
func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (c *statementCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.n.Add(1)
	if c.trace != nil {
		c.trace(d.SQL, d.Args)
	}
}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
