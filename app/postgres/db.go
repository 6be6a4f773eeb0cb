// Package postgres stores the expense app's data in the shared PostgreSQL database. Every request that
// touches a tenant runs in one transaction that first switches to that tenant's role and schema (SET
// LOCAL, undone at commit), so nothing tenant-specific outlives the transaction on a pooled connection,
// and the app is safe behind PgBouncer in transaction mode.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantry.dev/tenantry/app"
)

// DB is the app's connection pool.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects to the database (lazily). Statements are sent unnamed (QueryExecModeExec): PgBouncer in
// transaction mode may hand the next transaction another server connection, where a named prepared
// statement would not exist.
func Open(url string, maxConns int32) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("the database URL is not a valid postgres:// URL or key=value string")
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "tenantry-app"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	return &DB{pool: pool}, nil
}

// Close closes every connection.
func (db *DB) Close() { db.pool.Close() }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Tx is a transaction acting as one tenant.
type Tx struct {
	pgx.Tx
	Tenant *app.Tenant
}

// InTenant runs fn in a transaction as the tenant: role and search_path are set LOCAL first, so every
// statement of fn can reach the tenant's schema and nothing else, and the connection goes back to the
// pool as it came. fn's error rolls the transaction back.
func (db *DB) InTenant(ctx context.Context, t *app.Tenant, fn func(tx *Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// set_config(..., true) is SET LOCAL with the names as bound values rather than spliced SQL.
		if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true), set_config('search_path', $2, true)",
			t.Role, pgx.Identifier{t.Schema}.Sanitize()); err != nil {
			return fmt.Errorf("acting as tenant %s: %w", t.Schema, err)
		}
		return fn(&Tx{Tx: tx, Tenant: t})
	})
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
	sp, err := tx.Tx.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(); err != nil {
		_ = sp.Rollback(ctx)
		return err
	}
	return sp.Commit(ctx)
}

// Pool is the underlying pool, for reading the registry and for tests.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }
