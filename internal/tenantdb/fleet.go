package tenantdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantry.dev/tenantry/internal/pgerr"
)

// FleetMember is a tenant's row as a fleet migration reads it.
type FleetMember struct {
	Namespace, Name string
	Identity
	Version int64
	// Shard is where the registry says the schema is: empty for the database it was read from.
	Shard string
}

// Fleet returns the schema version of every migrated tenant of a namespace, from the registry, in one
// query. Retained tenants, tenants not yet migrated at all (being onboarded) and tenants whose schema is
// on another shard (whose own registry has them) are left out.
func (db *DB) Fleet(ctx context.Context, namespace string) ([]FleetMember, error) {
	rows, err := db.pool.Query(ctx, `SELECT namespace, name, schema_name, role_name, schema_version
FROM tenantry.tenants WHERE namespace = $1 AND state <> 'retained' AND schema_version > 0 AND shard = ''`, namespace)
	if err != nil {
		return nil, fmt.Errorf("reading the fleet's schema versions: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (FleetMember, error) {
		var m FleetMember
		err := row.Scan(&m.Namespace, &m.Name, &m.Schema, &m.Role, &m.Version)
		return m, err
	})
}

// ApplyPlan migrates the tenant's schema from version from along the steps given, in one transaction
// sent in one round trip: a switch to the tenant role and schema, the lock of the tenant's own registry
// row (tenantry.lock_own_row: no login that may not act as the tenant can take it), a check that the
// schema is still at from, every statement and goose version row of the steps, and the registry's
// record of the new version. Either all of it commits or none: the app never
// sees a schema ahead of, or behind, its registry row. A schema found at another version than from is
// a *VersionMovedError (someone else migrated it): nothing is applied. A statement that fails is a
// *MigrationError; an error reaching the database is returned as it is (IsTransient tells).
func (s *TenantSession) ApplyPlan(ctx context.Context, from int64, steps []PlanStep) (int64, error) {
	if len(steps) == 0 {
		return from, nil
	}
	id, citus := s.id, s.citus
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return from, err
	}
	defer conn.Release()
	// The tenant pool sends unnamed statements (QueryExecModeExec): the whole batch goes out in one
	// round trip, with no round trip first to prepare statements this connection has not seen.
	b := &pgx.Batch{}
	var origins []int // the step each queued statement belongs to (-1: none), to say which one failed
	queue := func(step int, sql string, args ...any) {
		b.Queue(sql, args...)
		origins = append(origins, step)
	}
	queue(-1, "BEGIN")
	queue(-1, "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config('search_path', $2, true)", id.Role, searchPath(id.Schema))
	queue(-1, "SELECT tenantry.lock_own_row()")
	// Division by zero when the schema is not at from: the transaction aborts before any DDL.
	queue(-1, "SELECT 1 / (CASE WHEN max(version_id) = $1 THEN 1 ELSE 0 END) FROM "+VersionTable+" WHERE is_applied", from)
	for i, s := range steps {
		for _, stmt := range s.Statements {
			if !citus {
				queue(i, stmt)
				continue
			}
			for _, part := range splitStatements(stmt) {
				queue(i, part)
			}
		}
		queue(i, s.VersionSQL, s.VersionArgs...)
	}
	target := steps[len(steps)-1].Version
	queue(-1, "SELECT tenantry.record_schema_version($1)", target)
	queue(-1, "COMMIT")
	queue(-1, discardAll) // in the same round trip, after the transaction

	results := conn.SendBatch(ctx, b)
	var failed error
	for i := range b.Len() {
		if _, err := results.Exec(); err != nil {
			failed = classify(err, id.Schema, i, origins, steps)
			break
		}
	}
	closeErr := results.Close()
	if failed == nil && closeErr != nil {
		failed = closeErr
	}
	if failed != nil {
		// The server skipped the rest and left the transaction aborted: end it before the connection
		// goes back to the pool. A connection that cannot even do that is closed instead, and so is one
		// whose backend refused the tenant's role out of a stale membership cache.
		_, err := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		if err == nil {
			_, err = conn.Exec(context.WithoutCancel(ctx), discardAll)
		}
		if err != nil || pgerr.SetRoleDenied(failed) {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		return from, failed
	}
	return target, nil
}

// versionCheck is the place of the version check in ApplyPlan's batch.
const versionCheck = 3

// VersionMovedError says a schema was not at the version a plan started from.
type VersionMovedError struct{ Schema string }

func (e *VersionMovedError) Error() string {
	return fmt.Sprintf("schema %q is no longer at the version the migration started from", e.Schema)
}

func classify(err error, schema string, i int, origins []int, steps []PlanStep) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	if i == versionCheck && pgErr.Code == "22012" { // division_by_zero: the version check
		return &VersionMovedError{Schema: schema}
	}
	if i < len(origins) && origins[i] >= 0 && !IsTransient(err) {
		s := steps[origins[i]]
		return &MigrationError{Schema: schema, Version: s.Version, Source: s.Source, Err: err}
	}
	return err
}

// IsTransient reports whether an error is worth trying again and no fault of a migration: the database
// away or restarting (pgerr.Away), a serialization failure or deadlock, or a switch of role refused by
// a backend's stale membership cache (pgerr.SetRoleDenied; ApplyPlan then closes that connection).
func IsTransient(err error) bool {
	var pgErr *pgconn.PgError
	return pgerr.Away(err) || pgerr.SetRoleDenied(err) ||
		errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}
