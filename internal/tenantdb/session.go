package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TenantSession is the operator's only way into a tenant's schema: every statement that reads, writes,
// truncates or calls anything inside it (migrations, the admin user, usage, emptying and filling a
// move's copy) runs here, on a login that can do no more than the app's, switched to the tenant's role
// for the transaction. Whatever the tenant role planted (a view in place of a table, a trigger, a rule,
// a function shadowing a built-in) runs with no more than that. The admin session (DB) has no method
// that touches a tenant schema's contents: it creates, grants, drops and registers.
type TenantSession struct {
	pool   *pgxpool.Pool
	clones chan struct{} // the places of clones reading from this database (DB.clones)
	id     Identity
	citus  bool // the database is a Citus coordinator: migrations send one statement at a time
	// secret is the registry's migration secret, the key of LockID.
	secret string
}

// ErrNoTenantLogin says that work inside a tenant schema needs the app's and the operator's tenant
// logins (Options.AppRole and Options.Worker).
var ErrNoTenantLogin = errors.New("no login for work inside tenant schemas: the app's login role is not known")

// Session returns the tenant session of one tenant's schema and role on this database. The first one
// opens the tenant sessions' pool (tenantLogin), and makes sure of the registry (EnsureRegistry).
func (db *DB) Session(ctx context.Context, id Identity) (*TenantSession, error) {
	if err := db.EnsureRegistry(ctx); err != nil {
		return nil, err
	}
	pool, err := db.tenantLogin(ctx)
	if err != nil {
		return nil, err
	}
	citus, err := db.Citus(ctx)
	if err != nil {
		return nil, err
	}
	db.mu.Lock()
	secret := db.migrationSecret
	db.mu.Unlock()
	return &TenantSession{pool: pool, clones: db.clones, id: id, citus: citus, secret: secret}, nil
}

// tenantLogin returns the pool of the tenant sessions, opening it the first time: it makes sure the app
// role and the operator's tenant login (Options.Worker: LOGIN NOINHERIT, a member of the app role, on
// Citus of AppsGroup) exist, gives the login a new random password, and connects as it where the admin
// connection string points.
func (db *DB) tenantLogin(ctx context.Context) (*pgxpool.Pool, error) {
	db.tenantMu.Lock()
	defer db.tenantMu.Unlock()
	if db.tenant != nil {
		return db.tenant, nil
	}
	app, worker := db.opts.AppRole, db.opts.Worker
	if app.Name == "" || worker.Name == "" {
		return nil, ErrNoTenantLogin
	}
	if err := db.EnsureAppRoleOnce(ctx, app); err != nil {
		return nil, err
	}
	if err := db.ensureRole(ctx, worker, "LOGIN NOINHERIT"); err != nil {
		return nil, err
	}
	password := randomPassword()
	q := pgx.Identifier{worker.Name}.Sanitize()
	clause, err := passwordClause(password)
	if err != nil {
		return nil, err
	}
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" LOGIN NOINHERIT "+clause); err != nil {
		return nil, fmt.Errorf("setting the password of the operator's tenant login %q: %w", worker.Name, err)
	}
	// Settings the login may have given itself (ALTER ROLE CURRENT_USER SET, which any role may run,
	// also from code of a tenant's that ran RESET ROLE) would apply at each of its connections' start.
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" RESET ALL"); err != nil {
		return nil, fmt.Errorf("resetting the settings of the operator's tenant login %q: %w", worker.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "GRANT "+pgx.Identifier{app.Name}.Sanitize()+" TO "+q); err != nil {
		return nil, fmt.Errorf("letting the operator's tenant login %q act as the app's tenants: %w", worker.Name, err)
	}
	if citus, err := db.Citus(ctx); err != nil {
		return nil, err
	} else if citus {
		if err := db.joinAppsGroup(ctx, worker.Name); err != nil {
			return nil, err
		}
	}
	cfg := db.pool.Config() // a copy, on the admin connection string: the same server and database
	cfg.ConnConfig.User, cfg.ConnConfig.Password = worker.Name, password
	// Two at least: a clone holds one for its source's snapshot while it fills its target with another.
	maxConns := max(2, db.opts.MaxConcurrentMigrations)
	settings := poolSettings{maxConns: maxConns, mode: pgx.QueryExecModeExec, opts: db.opts}
	pool, err := db.newPoolFrom(cfg, settings)
	if err != nil {
		return nil, err
	}
	db.tenant, db.clones = pool, make(chan struct{}, maxConns-1)
	return pool, nil
}

// GrantWorker lets the operator's tenant login act as a tenant whose app's login may not yet: a move's
// target, until its cut-over.
func (db *DB) GrantWorker(ctx context.Context, tenantRole string) error {
	if _, err := db.tenantLogin(ctx); err != nil { // the login exists from here on
		return err
	}
	return db.GrantTenant(ctx, tenantRole, db.opts.Worker.Name)
}

// RevokeWorker takes GrantWorker back.
func (db *DB) RevokeWorker(ctx context.Context, tenantRole string) error {
	if _, err := db.pool.Exec(ctx, "REVOKE "+pgx.Identifier{tenantRole}.Sanitize()+" FROM "+
		pgx.Identifier{db.opts.Worker.Name}.Sanitize()); err != nil {
		return fmt.Errorf("revoking tenant role %q from the operator's tenant login: %w", tenantRole, err)
	}
	return nil
}

// searchPath is a tenant session's search_path: the tenant's schema, then the session's temporary
// schema, named last so that no temporary table stands in for one of the schema's.
func searchPath(schema string) string { return pgx.Identifier{schema}.Sanitize() + ", pg_temp" }

// discardAll is sent after every piece of tenant work, outside its transaction: whatever the tenant's
// code left on the session (a setting such as statement_timeout = 0, a temporary table, a session
// lock, a LISTEN) goes before the connection serves anyone else.
const discardAll = "DISCARD ALL"

// inTx runs fn in one transaction acting as the tenant (SET LOCAL role and search_path), then
// discards the session's state. A connection that cannot be cleaned is closed.
func (s *TenantSession) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.inTxOn(ctx, searchPath(s.id.Schema), true, fn)
}

// inTxOn is inTx with another search_path: "pg_catalog" reads the catalog with nothing of the tenant's
// on the path, so that no function or operator the tenant made can stand in for a built-in one.
//
// discard false leaves out the DISCARD ALL after a transaction that succeeded, for the catalog reads
// alone (inCatalogTx): they run no code of the tenant's (the registry's functions, with a pinned
// search_path, and deparsing), so they leave nothing on the session but what their transaction's end
// resets (SET LOCAL). DISCARD ALL would also drop the plans PL/pgSQL keeps, and a drift pass would plan
// the catalog queries again for every schema.
func (s *TenantSession) inTxOn(ctx context.Context, path string, discard bool, fn func(pgx.Tx) error) error {
	return s.inTxWith(ctx, pgx.TxOptions{}, path, discard, fn)
}

// inTxWith is inTxOn with a transaction of the given isolation and access mode.
func (s *TenantSession) inTxWith(ctx context.Context, opts pgx.TxOptions, path string, discard bool, fn func(pgx.Tx) error) error {
	return withTenantConn(ctx, s.pool, func(conn *pgxpool.Conn) error {
		err := pgx.BeginTxFunc(ctx, conn, opts, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config('search_path', $2, true)",
				s.id.Role, path); err != nil {
				return err
			}
			return fn(tx)
		})
		if !discard && err == nil {
			return nil
		}
		if _, derr := conn.Exec(context.WithoutCancel(ctx), discardAll); derr != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // released closed: the pool drops it
		}
		return err
	})
}

// EnsureAdmin makes sure the tenant schema has an active admin user with this email and password hash:
// a new user, or the existing user of that email made admin again, reactivated and given the hash. The
// operator calls it while it establishes the login of the admin Secret, never after. It reports whether
// it wrote anything.
func (s *TenantSession) EnsureAdmin(ctx context.Context, email, passwordHash string) (bool, error) {
	users := pgx.Identifier{s.id.Schema, "users"}.Sanitize()
	var written int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO `+users+` AS u (email, name, role, password_hash)
VALUES ($1, 'Administrator', 'admin', $2)
ON CONFLICT ((lower(email))) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin', active = true`,
			email, passwordHash)
		written = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("creating admin user in schema %q: %w", s.id.Schema, err)
	}
	return written > 0, nil
}

// Usage is what a tenant uses of the app, as its schema holds it.
type Usage struct {
	Users, ActiveUsers, Expenses int64
	// SchemaBytes is the disk space of the schema's relations: tables, indexes, TOAST.
	SchemaBytes int64
}

// Usage measures the tenant's schema in one statement: its users (all and active), its expenses, and
// the size of every relation in it. The counts are exact (a tenant is billed by them); on the app's
// tables they take an index-only scan at most.
func (s *TenantSession) Usage(ctx context.Context) (Usage, error) {
	q := func(table string) string { return pgx.Identifier{s.id.Schema, table}.Sanitize() }
	var u Usage
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
SELECT (SELECT count(*) FROM `+q("users")+`),
       (SELECT count(*) FROM `+q("users")+` WHERE active),
       (SELECT count(*) FROM `+q("expenses")+`),
       (SELECT coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint FROM pg_catalog.pg_class c
         WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1) AND c.relkind IN ('r', 'm', 'p'))`,
			s.id.Schema).Scan(&u.Users, &u.ActiveUsers, &u.Expenses, &u.SchemaBytes)
	})
	if err != nil {
		return Usage{}, fmt.Errorf("measuring the usage of schema %q: %w", s.id.Schema, err)
	}
	return u, nil
}

// EmptyCopy empties a freshly migrated copy of the tenant's schema (a move's target), so that the
// subscription's copy brings everything: data, version table and all. TRUNCATE fires TRUNCATE
// triggers as the caller: here, the tenant role.
func (s *TenantSession) EmptyCopy(ctx context.Context) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_tables WHERE schemaname = $1`, s.id.Schema)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(tables) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, "TRUNCATE "+strings.Join(tables, ", ")+" CASCADE")
		return err
	})
	if err != nil {
		return fmt.Errorf("emptying the target's copy of %s: %w", s.id.Schema, err)
	}
	return nil
}

// SchemaVersion is what a tenant's schema itself says of its migrations (goose's version table), as
// opposed to what its registry row records.
type SchemaVersion struct {
	// Exists says the schema exists at all.
	Exists bool
	// Version is the newest migration applied (0: none, or no version table).
	Version int64
	// VersionTable says the schema has its version table; Tables counts its other tables.
	VersionTable bool
	Tables       int
}

// Version reads the schema's own version: its version table's newest applied migration, and whether it
// holds anything without one (a schema changed by hand, whose migrations nobody can tell).
func (s *TenantSession) Version(ctx context.Context) (SchemaVersion, error) {
	var v SchemaVersion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// The version table as any relation: a tenant may have put a view in its place, which is read as
		// the tenant, like the rest of its schema.
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1),
       (SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename <> $2),
       EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = $2)`, s.id.Schema, VersionTable).Scan(&v.Exists, &v.Tables, &v.VersionTable); err != nil {
			return err
		}
		if !v.VersionTable {
			return nil
		}
		return tx.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+pgx.Identifier{s.id.Schema, VersionTable}.Sanitize()+
			" WHERE is_applied").Scan(&v.Version)
	})
	if err != nil {
		return SchemaVersion{}, fmt.Errorf("reading the version of schema %s: %w", s.id.Schema, err)
	}
	return v, nil
}

// GrantCopy lets a move's replication login (MoveLogin) read the tenant's tables for the subscription's
// first copy: USAGE on the schema and SELECT on each table, granted by the tenant role, which owns them.
// The login is dropped, with its grants, when the move ends (Unpublish).
func (s *TenantSession) GrantCopy(ctx context.Context, login string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		schema, to := pgx.Identifier{s.id.Schema}.Sanitize(), " TO "+pgx.Identifier{login}.Sanitize()
		if _, err := tx.Exec(ctx, "GRANT USAGE ON SCHEMA "+schema+to); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA "+schema+to)
		return err
	})
	if err != nil {
		return fmt.Errorf("letting the move's login read %s: %w", s.id.Schema, err)
	}
	return nil
}

// Sequence is a sequence's last value.
type Sequence struct {
	Name  string
	Value int64
	// Table owns the sequence (an identity or serial column's), where one does (Snapshot reads it).
	Table string
}

// Sequences reads the last value of every sequence of the schema that has one.
func (s *TenantSession) Sequences(ctx context.Context) ([]Sequence, error) {
	var seqs []Sequence
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT sequencename, last_value FROM pg_catalog.pg_sequences
WHERE schemaname = $1 AND last_value IS NOT NULL`, s.id.Schema)
		var err error
		seqs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Sequence, error) {
			var seq Sequence
			err := row.Scan(&seq.Name, &seq.Value)
			return seq, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the sequences of %s: %w", s.id.Schema, err)
	}
	return seqs, nil
}

// SetSequences sets sequences of the schema to the values given, all in one transaction.
func (s *TenantSession) SetSequences(ctx context.Context, seqs []Sequence) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		for _, seq := range seqs {
			if _, err := tx.Exec(ctx, "SELECT pg_catalog.setval($1::regclass, $2, true)", pgx.Identifier{s.id.Schema, seq.Name}.Sanitize(), seq.Value); err != nil {
				return fmt.Errorf("setting sequence %s.%s: %w", s.id.Schema, seq.Name, err)
			}
		}
		return nil
	})
}
