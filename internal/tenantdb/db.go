// Package tenantdb holds every SQL statement the operator runs against the shared database: the
// registry (schema tenantry), tenant schemas and roles, migrations and the first admin user. The
// reconcilers decide what to do; this package says how, with identifiers quoted and values bound.
package tenantdb

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"tenantry.dev/tenantry/internal/pgerr"
)

// DB is the operator's handle on one shared database. It holds two kinds of connection, and keeps them
// apart (privilege separation):
//   - pool logs in with the admin connection string. It runs only role, schema, grant and registry
//     statements: nothing it runs executes code a tenant role could have planted.
//   - tenant logs in as the app's own login, which can do no more than the app can, and switches to one
//     tenant's role for each piece of work inside that tenant's schema (migrations, the admin user). A
//     trigger, function or view a tenant role planted runs there with no more than the app's rights.
type DB struct {
	pool *pgxpool.Pool
	// tenant is nil until Options.TenantURI is given. Its size bounds concurrent migrations.
	tenant   *pgxpool.Pool
	database string

	statements atomic.Int64

	mu         sync.Mutex
	appRoleMu  sync.Mutex // serialises EnsureAppRole
	registryOK bool
	citusKnown bool            // whether citus below has been looked up
	citus      bool            // the database is a Citus coordinator
	appRoles   map[string]bool // app roles known to exist
}

// Options tune a DB.
type Options struct {
	// MaxConns bounds the connections for registry, DDL and admin work (default 8).
	MaxConns int32
	// MaxConcurrentMigrations bounds the tenant schemas migrated at once (default 8).
	MaxConcurrentMigrations int32
	// TenantURI is the app login's connection string, on which work inside tenant schemas runs. Without
	// it, Migrate and EnsureAdmin fail.
	TenantURI string
}

// Open returns a DB for an admin connection string. It connects lazily.
func Open(uri string, opts Options) (*DB, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.MaxConcurrentMigrations <= 0 {
		opts.MaxConcurrentMigrations = 8
	}
	db := &DB{}
	var err error
	if db.pool, err = db.newPool(uri, opts.MaxConns, pgx.QueryExecModeCacheStatement); err != nil {
		return nil, err
	}
	cfg := db.pool.Config().ConnConfig
	db.database = cfg.Database
	if db.database == "" {
		db.database = cfg.User // as libpq: the database defaults to the user's name
	}
	if opts.TenantURI != "" {
		// Unnamed statements: a migration's statements are sent once per schema, in one pipelined batch.
		if db.tenant, err = db.newPool(opts.TenantURI, opts.MaxConcurrentMigrations, pgx.QueryExecModeExec); err != nil {
			db.pool.Close()
			return nil, err
		}
	}
	return db, nil
}

// Database is the name of the database, part of every tenant's identity.
func (db *DB) Database() string { return db.database }

// ErrNoTenantLogin says that work inside a tenant schema needs the app's login (Options.TenantURI).
var ErrNoTenantLogin = errors.New("no login for work inside tenant schemas: the app's login is not known yet")

// tenantPool is the pool for work inside tenant schemas.
func (db *DB) tenantPool() (*pgxpool.Pool, error) {
	if db.tenant == nil {
		return nil, ErrNoTenantLogin
	}
	return db.tenant, nil
}

func (db *DB) newPool(uri string, maxConns int32, mode pgx.QueryExecMode) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		// pgx's message may quote the string, password and all: say only what is wrong.
		return nil, errors.New("the database connection string is not a valid postgres:// URL or key=value string")
	}
	cfg.MaxConns = maxConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.Tracer = (*statementCounter)(&db.statements)
	cfg.ConnConfig.DefaultQueryExecMode = mode
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "tenantry-operator"
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

// statementCounter counts every statement sent, whatever the pool.
type statementCounter atomic.Int64

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	(*atomic.Int64)(c).Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Statements of a batch count one each, as they would sent alone.
func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (c *statementCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	(*atomic.Int64)(c).Add(1)
}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
