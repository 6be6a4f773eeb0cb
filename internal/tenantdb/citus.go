package tenantdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"tenantry.dev/tenantry/internal/registry"
)

// On a Citus coordinator, each tenant schema is a distributed schema (citus.enable_schema_based_sharding
// on while it is created): it lives whole on one worker, and the coordinator routes every query to it.
// The coordinator reaches the worker as the current role, so a tenant role must be able to log in
// there: it is created LOGIN, with a random password that nobody is told, which the coordinator finds
// in pg_dist_authinfo (superuser-only). The apps' logins are members of AppsGroup, the coordinator's
// pg_hba.conf admits that group (and the operator's login) and nobody else: tenant roles log in to
// workers, as the coordinator, and nowhere else. (A group of tenant roles to refuse would not do:
// pg_hba.conf's +group matches indirect members, and every app login is a member of its tenants' roles.)
// Everything else (the registry, the app's login) stays local to the coordinator. See docs/citus.md.

// AppsGroup is the role every app login is a member of on Citus, for the coordinator's pg_hba.conf.
const AppsGroup = "tenantry_apps"

// Citus reports whether the database is a Citus coordinator (the citus extension is installed in it).
// It asks once per DB.
func (db *DB) Citus(ctx context.Context) (bool, error) {
	db.mu.Lock()
	known, citus := db.citusKnown, db.citus
	db.mu.Unlock()
	if known {
		return citus, nil
	}
	if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`).Scan(&citus); err != nil {
		return false, fmt.Errorf("looking for Citus: %w", err)
	}
	db.mu.Lock()
	db.citusKnown, db.citus = true, citus
	db.mu.Unlock()
	return citus, nil
}

// citusLogin gives a tenant role on Citus a fresh random password and records it in pg_dist_authinfo
// for the coordinator's connections to every node, in one transaction, so the coordinator never holds a
// password the workers do not.
func (db *DB) citusLogin(ctx context.Context, role string) error {
	buf := make([]byte, 24)
	_, _ = rand.Read(buf)
	return db.citusLoginWith(ctx, role, hex.EncodeToString(buf))
}

// citusLoginWith is citusLogin with the password given.
func (db *DB) citusLoginWith(ctx context.Context, role, pass string) error {
	q := pgx.Identifier{role}.Sanitize()
	clause, err := passwordClause(pass)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER ROLE "+q+" LOGIN "+clause); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM pg_catalog.pg_dist_authinfo WHERE rolename = $1 AND nodeid = 0`, role); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO pg_catalog.pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, $1, $2)`,
			role, "password="+pass)
		return err
	})
	if err != nil {
		return fmt.Errorf("giving tenant role %q its login for Citus's workers: %w", role, err)
	}
	return nil
}

// joinAppsGroup makes an app login a member of AppsGroup (created if missing), on Citus, and keeps
// its sessions from caching connections to the workers.
func (db *DB) joinAppsGroup(ctx context.Context, login string) error {
	group := pgx.Identifier{AppsGroup}.Sanitize()
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, AppsGroup).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := db.pool.Exec(ctx, "CREATE ROLE "+group+" NOLOGIN"); err != nil && !isCode(err, codeDuplicateObject, codeUniqueViolation) {
			return fmt.Errorf("creating role %s: %w", AppsGroup, err)
		}
	}
	q := pgx.Identifier{login}.Sanitize()
	if _, err := db.pool.Exec(ctx, "GRANT "+group+" TO "+q); err != nil {
		return fmt.Errorf("making %q a member of %s: %w", login, AppsGroup, err)
	}
	// The coordinator's connections to a worker are per role, and each session keeps one per worker
	// and role it used: with a role per tenant, an app's sessions would hold tenants × sessions idle
	// connections and starve the workers' connection slots. The app's sessions keep none.
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" SET citus.max_cached_conns_per_worker TO 0"); err != nil {
		return fmt.Errorf("setting %q to keep no connections to the workers: %w", login, err)
	}
	return nil
}

// createSchema creates a tenant's schema owned by its role; on Citus, as a distributed schema.
func (db *DB) createSchema(ctx context.Context, schema, role string, citus bool) error {
	stmt := "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize() + " AUTHORIZATION " + pgx.Identifier{role}.Sanitize()
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if citus {
			if _, err := tx.Exec(ctx, "SET LOCAL citus.enable_schema_based_sharding TO on"); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, stmt)
		return err
	})
	if err != nil && !isCode(err, codeDuplicateObject, codeUniqueViolation) {
		return fmt.Errorf("creating schema %q: %w", schema, err)
	}
	return nil
}

// ErrNotDistributed says a schema has no placement on a Citus worker (yet): it holds no table.
var ErrNotDistributed = errors.New("the schema has no placement on a worker")

// SchemaNode returns the Citus worker ("host:port") that holds a distributed schema.
func (db *DB) SchemaNode(ctx context.Context, schema string) (string, error) {
	var node string
	err := db.pool.QueryRow(ctx, `SELECT n.nodename || ':' || n.nodeport `+registry.CitusSchemaPlacements+`
WHERE ns.nspname = $1
LIMIT 1`, schema).Scan(&node)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotDistributed
	}
	if err != nil {
		return "", fmt.Errorf("finding the worker of schema %q: %w", schema, err)
	}
	return node, nil
}

// SchemaNodes returns the Citus worker ("host:port") of every distributed schema, by schema name.
func (db *DB) SchemaNodes(ctx context.Context) (map[string]string, error) {
	rows, _ := db.pool.Query(ctx, `SELECT DISTINCT ON (ns.nspname) ns.nspname::text, n.nodename || ':' || n.nodeport `+
		registry.CitusSchemaPlacements+`
ORDER BY ns.nspname`)
	nodes := map[string]string{}
	var schema, node string
	if _, err := pgx.ForEachRow(rows, []any{&schema, &node}, func() error {
		nodes[schema] = node
		return nil
	}); err != nil {
		return nil, fmt.Errorf("finding the workers of the tenant schemas: %w", err)
	}
	return nodes, nil
}
