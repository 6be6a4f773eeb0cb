package tenantdb

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"tenantry.dev/tenantry/internal/pgerr"
)

// VersionTable is goose's version table, inside each tenant schema.
const VersionTable = "goose_db_version"

// MigrationError is a migration that failed. The schema stays at the last migration that succeeded.
type MigrationError struct {
	Schema  string
	Version int64  // the migration that failed
	Source  string // its file
	Err     error
}

func (e *MigrationError) Error() string {
	return fmt.Sprintf("migration %s of schema %q failed: %v", e.Source, e.Schema, e.Err)
}

func (e *MigrationError) Unwrap() error { return e.Err }

// Migrate applies the pending migrations of fsys to the tenant's schema with goose and returns the
// schema's version afterwards. Each migration runs in its own transaction on the tenant session, with
// search_path set to the schema, under a session advisory lock keyed by the schema and the occasion
// (LockID): two operators (or two reconciles) never migrate one schema at once for one occasion, while
// different schemas migrate in parallel. The occasion names this one piece of work, the same for every
// operator that may do it (a Tenant's UID for its onboarding, a move's start for its copy), so that a
// key seen in pg_locks once is never used again.
func (s *TenantSession) Migrate(ctx context.Context, fsys fs.FS, occasion string) (int64, error) {
	return s.MigrateTo(ctx, fsys, occasion, 0)
}

// MigrateTo is Migrate up to version to, and no further (0: every migration): a restore makes the
// schema its backup was taken at before it fills it.
func (s *TenantSession) MigrateTo(ctx context.Context, fsys fs.FS, occasion string, to int64) (int64, error) {
	schema := s.id.Schema
	sqlDB := sql.OpenDB(&tenantConnector{pool: s.pool, schema: schema, role: s.id.Role, split: s.citus})
	defer sqlDB.Close()
	// One connection: goose takes the lock and runs every migration on the same session.
	sqlDB.SetMaxOpenConns(1)

	// A new schema, or a move's copy, which no other session works on: the lock is for two operators
	// at once, and its patience short.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID(s.secret, schema, occasion)), lock.WithLockTimeout(1, 15))
	if err != nil {
		return 0, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys,
		goose.WithSessionLocker(locker), goose.WithTableName(VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return 0, fmt.Errorf("loading migrations: %w", err)
	}
	var results []*goose.MigrationResult
	var upErr error
	if to > 0 {
		results, upErr = p.UpTo(ctx, to)
	} else {
		results, upErr = p.Up(ctx)
	}
	if upErr == nil && len(results) > 0 {
		return results[len(results)-1].Source.Version, nil // the newest just applied: no need to ask
	}
	if upErr != nil {
		var pe *goose.PartialError
		if errors.As(upErr, &pe) && pe.Failed != nil && pe.Failed.Source != nil {
			upErr = &MigrationError{Schema: schema, Version: pe.Failed.Source.Version,
				Source: pe.Failed.Source.Path, Err: pe.Err}
		} else {
			upErr = fmt.Errorf("migrating schema %q: %w", schema, upErr)
		}
	}
	version, err := p.GetDBVersion(ctx)
	if err != nil {
		if upErr != nil {
			return 0, upErr
		}
		return 0, fmt.Errorf("reading the version of schema %q: %w", schema, err)
	}
	return version, upErr
}

// LockID is the advisory lock key under which a schema is migrated on one occasion: a MAC of the
// schema's name and the occasion under the registry's migration secret (which only the operator's admin
// login may read). Any login of the database may take any advisory lock; without the secret, none can
// tell which key a schema will use next. (pg_locks shows a key while it is held; the MAC gives away
// nothing of the secret or of other keys, and the occasion is not repeated.)
func LockID(secret, schema, occasion string) int64 {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("tenantry/migrate/" + schema + "\x00" + occasion))
	return int64(binary.BigEndian.Uint64(mac.Sum(nil)))
}

// tenantConnector hands database/sql connections from the migration pool, each switched to one
// tenant's role and schema, and switched back when database/sql lets go of it.
type tenantConnector struct {
	pool         *pgxpool.Pool
	schema, role string
	split        bool // send each statement of a migration block alone (Citus: splitStatements)
}

func (c *tenantConnector) Connect(ctx context.Context) (driver.Conn, error) {
	for attempt := 0; ; attempt++ {
		conn, err := stdlib.GetPoolConnector(c.pool).Connect(ctx)
		if err != nil {
			return nil, err
		}
		tc := tenantConn{Conn: conn.(*stdlib.Conn), split: c.split}
		_, err = tc.Conn.Conn().Exec(ctx, "SET search_path TO "+searchPath(c.schema)+
			"; SET ROLE "+pgx.Identifier{c.role}.Sanitize())
		if err == nil {
			return tc, nil
		}
		if pgerr.SetRoleDenied(err) {
			// A stale membership cache (withTenantConn): this backend goes, another is tried once.
			_ = tc.Conn.Conn().Close(ctx)
		}
		_ = tc.Close() // back to the pool; the switch's error is the one to report
		if !pgerr.SetRoleDenied(err) || attempt > 0 {
			return nil, fmt.Errorf("switching to tenant %q: %w", c.schema, err)
		}
	}
}

// tenantConn is a pooled connection acting as a tenant. Closing it returns it to the pool as the
// operator's tenant login again, its session state discarded (DISCARD ALL), or, if that fails, closes
// it for good: the next user of
// the pool never starts out as a tenant it did not choose.
type tenantConn struct {
	*stdlib.Conn
	split bool
}

// ExecContext sends a statement; with split, each statement of a block alone.
func (c tenantConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	parts := []string{query}
	if c.split && len(args) == 0 {
		parts = splitStatements(query)
	}
	var res driver.Result = driver.RowsAffected(0)
	for _, part := range parts {
		r, err := c.Conn.ExecContext(ctx, part, args)
		if err != nil {
			return nil, err
		}
		res = r
	}
	return res, nil
}

func (c tenantConn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Conn.Conn().Exec(ctx, discardAll); err != nil {
		_ = c.Conn.Conn().Close(ctx) // a closed connection is destroyed, not pooled
	}
	return c.Conn.Close()
}

func (c *tenantConnector) Driver() driver.Driver { return stdlib.GetDefaultDriver() }
