// Package postgres stores the expense app's data in the shared PostgreSQL database. Every request that
// touches a tenant runs in one transaction that first switches to that tenant's role and schema (SET
// LOCAL, undone at commit), so nothing tenant-specific outlives the transaction on a pooled connection,
// and the app is safe behind PgBouncer in transaction mode.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/internal/pgerr"
)

// DB is the app's connections: one pool per database shard (the home database, and each shard of its
// ExpenseApp), each split into pool shards that each serve a fixed share of the tenants. With pool
// shards, a PostgreSQL backend only ever sees its share of the tenants' tables, so its catalog caches
// hold a fraction of the fleet's relations instead of all of them: with a thousand tenants, that is what
// keeps one tenant of many as fast as one alone.
type DB struct {
	// databases holds the pools of each database shard, by name ("" is the home database).
	databases map[string][]*pgxpool.Pool
	// tenantConns bounds the connections one tenant holds at once; slots holds each tenant's tokens.
	tenantConns int
	mu          sync.Mutex
	slots       map[string]chan struct{}

	// url and opts open the pools of Citus workers (RunCitus); citus routes to them while it runs.
	url     string
	opts    Options
	citusMu sync.RWMutex
	citus   *citusRouter
}

// Options tune the app's pools.
type Options struct {
	// MaxConns is the number of connections to each database (default 20).
	MaxConns int32
	// PoolShards splits each database's connections into pools with an affinity for tenants (default 1:
	// one pool). Behind PgBouncer it brings nothing by itself, since PgBouncer hands out server
	// connections without regard to the tenant, unless PoolDatabases gives each pool shard a pool of
	// PgBouncer's own.
	PoolShards int
	// PoolDatabases makes pool shard i connect to the database PoolDatabase(name, i): an alias that
	// PgBouncer's [databases] section maps to the real database, with a server pool of its own, so
	// that each server connection keeps serving the same share of the tenants (docs/reference.md).
	PoolDatabases bool
	// MaxTenantConns bounds the connections one tenant may hold at once, so that one tenant's burst
	// (or a slow client) cannot take every connection its neighbours need (default: half of a pool
	// shard's).
	MaxTenantConns int
	// Shards are the connection strings of the databases besides the home one, by shard name, as the
	// registry's shard column names them.
	Shards map[string]string
}

// tenantWait is how long a request waits for one of its tenant's connection slots before a 503.
const tenantWait = 5 * time.Second

// Open connects to the home database and every shard (lazily). Statements are sent unnamed
// (QueryExecModeExec): PgBouncer in transaction mode may hand the next transaction another server
// connection, where a named prepared statement would not exist.
func Open(url string, opts Options) (*DB, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 20
	}
	opts.PoolShards = max(1, min(opts.PoolShards, int(opts.MaxConns)))
	db := &DB{tenantConns: opts.MaxTenantConns, slots: map[string]chan struct{}{}, databases: map[string][]*pgxpool.Pool{},
		url: url, opts: opts}
	if db.tenantConns <= 0 {
		db.tenantConns = max(1, int(opts.MaxConns)/opts.PoolShards/2)
	}
	urls := map[string]string{"": url}
	for name, u := range opts.Shards {
		if name == "" {
			return nil, errors.New("a database shard needs a name")
		}
		urls[name] = u
	}
	for name, u := range urls {
		pools, err := openPools(u, opts)
		if err != nil {
			db.Close()
			if name != "" {
				return nil, fmt.Errorf("shard %s: %w", name, err)
			}
			return nil, err
		}
		db.databases[name] = pools
	}
	return db, nil
}

// openPools opens one database's pool shards.
func openPools(url string, opts Options) ([]*pgxpool.Pool, error) {
	var pools []*pgxpool.Pool
	for i := range opts.PoolShards {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			closeAll(pools)
			return nil, errors.New("the database URL is not a valid postgres:// URL or key=value string")
		}
		// Spread the connections over the pool shards; the first ones take the remainder.
		cfg.MaxConns = opts.MaxConns / int32(opts.PoolShards)
		if int32(i) < opts.MaxConns%int32(opts.PoolShards) {
			cfg.MaxConns++
		}
		if opts.PoolDatabases {
			cfg.ConnConfig.Database = PoolDatabase(cfg.ConnConfig.Database, i)
		}
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "tenantry-app"
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			closeAll(pools)
			return nil, fmt.Errorf("opening the database: %w", err)
		}
		pools = append(pools, pool)
	}
	return pools, nil
}

// PoolDatabase is the name pool shard i connects to with Options.PoolDatabases: database "_pool" i, a
// PgBouncer alias of database.
func PoolDatabase(database string, i int) string {
	return fmt.Sprintf("%s_pool%d", database, i)
}

func closeAll(pools []*pgxpool.Pool) {
	for _, p := range pools {
		p.Close()
	}
}

// Close closes every connection.
func (db *DB) Close() {
	db.citusMu.RLock()
	if db.citus != nil {
		db.citus.close()
	}
	db.citusMu.RUnlock()
	for _, pools := range db.databases {
		closeAll(pools)
	}
}

// Ping checks that the home database answers: the registry and routing of every tenant. (A shard that
// does not answer fails only its own tenants' requests.)
func (db *DB) Ping(ctx context.Context) error { return db.databases[""][0].Ping(ctx) }

// PingShards pings every database at once, by shard name ("" is home): nil where it answered.
func (db *DB) PingShards(ctx context.Context) map[string]error {
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, pools := range db.databases {
		wg.Go(func() {
			err := pools[0].Ping(ctx)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}

// AcquireCount is how many connections have been taken from the pools, all together.
func (db *DB) AcquireCount() int64 {
	var n int64
	for _, p := range db.allPools() {
		n += p.Stat().AcquireCount()
	}
	return n
}

func (db *DB) allPools() []*pgxpool.Pool {
	var all []*pgxpool.Pool
	for _, pools := range db.databases {
		all = append(all, pools...)
	}
	db.citusMu.RLock()
	if r := db.citus; r != nil {
		r.mu.RLock()
		for _, pools := range r.pools {
			all = append(all, pools...)
		}
		r.mu.RUnlock()
	}
	db.citusMu.RUnlock()
	return all
}

// poolFor is the pool that serves a tenant: of its database shard, the pool shard its schema hashes to.
func (db *DB) poolFor(t *app.Tenant) (*pgxpool.Pool, error) {
	pools, ok := db.databases[t.Shard]
	if !ok {
		return nil, &app.Error{Code: app.EUNAVAILABLE, Err: fmt.Errorf("no connection string for database shard %q", t.Shard),
			Message: "This tenant's database is not reachable from here at the moment. Nothing was lost; try again in a minute."}
	}
	return pickPool(pools, t.Schema), nil
}

// pickPool is the pool shard a schema hashes to.
func pickPool(pools []*pgxpool.Pool, schema string) *pgxpool.Pool {
	return pools[PoolShard(schema, len(pools))]
}

// PoolShard is the pool shard, of n, that serves a tenant's schema: always the same one.
func PoolShard(schema string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(schema))
	return int(h.Sum32() % uint32(n))
}

// workerFor is the pool of the Citus worker that holds a home tenant's schema, when the app routes to
// workers and knows it (RunCitus), with the worker's name.
func (db *DB) workerFor(t *app.Tenant) (*pgxpool.Pool, string, *citusRouter) {
	db.citusMu.RLock()
	r := db.citus
	db.citusMu.RUnlock()
	if r == nil || t.Shard != "" {
		return nil, "", nil
	}
	pool, node := r.pool(t.Schema)
	return pool, node, r
}

// Tx is a transaction acting as one tenant.
type Tx struct {
	pgx.Tx
	Tenant *app.Tenant
}

// InTenant runs fn in a transaction as the tenant: role and search_path are set LOCAL first, so every
// statement of fn can reach the tenant's schema and nothing else, and the connection goes back to the
// pool as it came. fn's error rolls the transaction back. On a Citus coordinator, with RunCitus, the
// transaction goes to the worker that holds the tenant's schema. fn may then run twice: when the
// worker turns out not to hold the schema any more (a rebalance moved it), the transaction fails
// before anything of it is written, and runs again on the coordinator. Whatever fn reads besides the
// database (a request's body) must read the same the second time.
//
// When the database cannot be reached, the error is an app.EUNAVAILABLE: the tenant exists, and the
// request can be tried again, which a 503 says and a 500 or 404 would not.
func (db *DB) InTenant(ctx context.Context, t *app.Tenant, fn func(tx *Tx) error) error {
	release, err := db.acquireSlot(ctx, t)
	if err != nil {
		return err
	}
	defer release()
	pool, err := db.poolFor(t)
	if err != nil {
		return err
	}
	worker, node, citus := db.workerFor(t)
	for attempt := 0; ; attempt++ {
		on := pool
		if worker != nil {
			on = worker
		}
		err := db.inTenantOnce(ctx, on, t, fn)
		if err == nil || attempt == 2 {
			return unavailable(err)
		}
		var stale *staleMembership
		switch {
		case errors.As(err, &stale): // once more, on another connection
		case worker != nil && citus.missed(t.Schema, node, err):
			// The worker was away, or no longer holds the schema: nothing ran; the coordinator routes.
			worker = nil
		default:
			return unavailable(err)
		}
	}
}

// staleMembership is a switch to a tenant's role refused by a backend whose role-membership cache is
// stale (pgerr.SetRoleDenied): its connection was closed, and the request may be tried on another.
type staleMembership struct{ err error }

func (e *staleMembership) Error() string { return e.err.Error() }
func (e *staleMembership) Unwrap() error { return e.err }

func (db *DB) inTenantOnce(ctx context.Context, pool *pgxpool.Pool, t *app.Tenant, fn func(tx *Tx) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// set_config(..., true) is SET LOCAL with the names as bound values rather than spliced SQL.
		if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true), set_config('search_path', $2, true)",
			t.Role, pgx.Identifier{t.Schema}.Sanitize()); err != nil {
			if pgerr.SetRoleDenied(err) {
				_ = conn.Conn().Close(context.WithoutCancel(ctx)) // released closed: the pool drops it
				return &staleMembership{err: err}
			}
			return fmt.Errorf("acting as tenant %s: %w", t.Schema, err)
		}
		return fn(&Tx{Tx: tx, Tenant: t})
	})
}

// acquireSlot takes one of the tenant's connection slots, waiting at most tenantWait.
func (db *DB) acquireSlot(ctx context.Context, t *app.Tenant) (func(), error) {
	db.mu.Lock()
	slot, ok := db.slots[t.Schema]
	if !ok {
		slot = make(chan struct{}, db.tenantConns)
		db.slots[t.Schema] = slot
	}
	db.mu.Unlock()
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	default:
	}
	wait := time.NewTimer(tenantWait)
	defer wait.Stop()
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wait.C:
		return nil, app.Errorf(app.EUNAVAILABLE, "%s is busier than its share of the service allows. Try again in a few seconds.", t.DisplayName)
	}
}

// unavailable turns an error that means "the database is away" (no connection, a connection lost, the
// server shutting down or starting up, too many connections) into an app.EUNAVAILABLE that keeps it
// for the logs. Any other error is returned as it is.
func unavailable(err error) error {
	if err == nil || app.ErrorCode(err) != app.EINTERNAL {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501":
			// The tenant's writes are fenced for a second while it moves to another shard (or, rarer,
			// it lost its rights a moment ago): nothing was written.
			return &app.Error{Code: app.EUNAVAILABLE, Err: err,
				Message: "This organisation is being moved. Nothing was saved; try again in a second."}
		case "42P01", "3F000":
			// The tenant's schema is gone from where the app looked: it moved to another shard a moment
			// ago, and the source's copy was renamed or dropped before the app heard of the move. The
			// tables a version of the app needs are there otherwise (the app serves no schema behind it).
			return &app.Error{Code: app.EUNAVAILABLE, Err: err,
				Message: "This organisation is being moved. Nothing was saved; try again in a second."}
		case "40P01", "40001":
			// A deadlock or serialization failure rolled the transaction back: nothing was written,
			// and the same request succeeds when sent again.
			return &app.Error{Code: app.EUNAVAILABLE, Err: err,
				Message: "Another change got in the way. Nothing was saved; try again."}
		}
	}
	if !pgerr.Away(err) {
		return err
	}
	return &app.Error{Code: app.EUNAVAILABLE, Err: err,
		Message: "The database is unreachable at the moment. Nothing was lost; try again in a few seconds."}
}

// notFound turns pgx.ErrNoRows into an app error with the message given.
func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return app.Errorf(app.ENOTFOUND, "%s not found.", what)
	}
	return err
}

// constraint maps PostgreSQL constraint violations to app errors with a message for people.
func constraint(err error, messages map[string]string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if msg, ok := messages[pgErr.ConstraintName]; ok {
		return app.Errorf(app.ECONFLICT, "%s", msg)
	}
	switch pgErr.Code {
	case "23505":
		return app.Errorf(app.ECONFLICT, "That already exists.")
	case "23503":
		return app.Errorf(app.EINVALID, "That refers to something that does not exist.")
	case "23514":
		return app.Errorf(app.EINVALID, "A value is out of range.")
	case "42P01", "42703":
		return app.Errorf(app.EUNAVAILABLE, "This tenant is being upgraded. Try again in a minute.")
	}
	return err
}

// Savepoint runs fn inside a savepoint: when fn fails, what it did is undone and the transaction stays
// usable, so a form can be shown again with the error, read from the same transaction.
func (tx *Tx) Savepoint(ctx context.Context, fn func() error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	return sp.Commit(ctx)
}

// Pool is the home database's first pool, for reading the registry and for tests.
func (db *DB) Pool() *pgxpool.Pool { return db.databases[""][0] }
