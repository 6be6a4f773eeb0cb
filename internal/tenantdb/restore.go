package tenantdb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// An in-place restore fills a staging schema beside the tenant's (owned by the tenant's role, made by
// the release's migrations, filled on the tenant's session), then swaps it in (SwapSchema): one admin
// transaction waits for the tenant's writes in flight, takes writing away from the tenant on the
// schema it replaces, and renames both. The schema replaced is kept under a name of its own, read-only,
// until it is dropped (DropKeptSchema). Either name begins with KeptPrefix, and a tenant's deletion with
// deletionPolicy Delete drops every such schema of its role (DropSchema). The schema replaced becomes
// the operator's (the tenant's role loses all access to it), marked with the role's name.

// KeptPrefix begins the names of the schemas an in-place restore makes beside a tenant's.
const KeptPrefix = "tenantry_restore_"

// RestoreSchemas are the names of an in-place restore's staging schema and of the tenant's schema once
// replaced, derived from the tenant's schema and the restore's identity (its UID).
func RestoreSchemas(schema, restoreUID string) (staging, previous string) {
	sum := sha256.Sum256([]byte(schema + "\x00" + restoreUID))
	h := hex.EncodeToString(sum[:12])
	return KeptPrefix + "new_" + h, KeptPrefix + "old_" + h
}

// PrepareStaging makes an empty staging schema owned by the tenant's role, dropping what an earlier
// attempt left under that name (only a schema of that role: anything else is an OwnershipError).
func (db *DB) PrepareStaging(ctx context.Context, staging, role string) error {
	if !strings.HasPrefix(staging, KeptPrefix) {
		return fmt.Errorf("%q is not a restore's staging schema", staging)
	}
	if err := db.DropKeptSchema(ctx, staging, role); err != nil {
		return err
	}
	citus, err := db.Citus(ctx)
	if err != nil {
		return err
	}
	return db.createSchema(ctx, staging, role, citus)
}

// keptMark is the comment on a schema a restore replaced: it names the tenant's role, whose data it
// holds, once the schema is no longer the role's.
func keptMark(role string) string { return "tenantry: kept by a restore of " + role }

// KeptSchemaExists looks a schema a restore made up: whether it is there, the role's (a staging
// schema) or kept for it (owned by the operator, marked keptMark). One that is neither is an
// OwnershipError.
func (db *DB) KeptSchemaExists(ctx context.Context, schema, role string) (bool, error) {
	if !strings.HasPrefix(schema, KeptPrefix) {
		return false, fmt.Errorf("%q is not a schema a restore made", schema)
	}
	var ofRole, ofMark bool
	err := db.pool.QueryRow(ctx, `SELECT n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = $2),
       n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND obj_description(n.oid, 'pg_namespace') = $3
FROM pg_namespace n WHERE n.nspname = $1`, schema, role, keptMark(role)).Scan(&ofRole, &ofMark)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking up schema %q: %w", schema, err)
	case !ofRole && !ofMark:
		return true, &OwnershipError{What: "schema", Name: schema}
	}
	return true, nil
}

// DropKeptSchema drops a schema a restore made (staging, or the tenant's schema it replaced), if it is
// there and is the tenant role's or kept for it.
func (db *DB) DropKeptSchema(ctx context.Context, schema, role string) error {
	exists, err := db.KeptSchemaExists(ctx, schema, role)
	if err != nil || !exists {
		return err
	}
	if _, err := db.pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("dropping schema %q: %w", schema, err)
	}
	return nil
}

// dropKeptSchemas drops every schema a restore made for role: the tenant's data, gone with it.
func (db *DB) dropKeptSchemas(ctx context.Context, role string) error {
	rows, _ := db.pool.Query(ctx, `SELECT nspname::text FROM pg_namespace n
WHERE starts_with(nspname::text, $1)
  AND (nspowner = (SELECT oid FROM pg_roles WHERE rolname = $2) OR obj_description(n.oid, 'pg_namespace') = $3)`, KeptPrefix, role, keptMark(role))
	kept, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing the schemas restores kept for role %q: %w", role, err)
	}
	for _, s := range kept {
		if err := db.DropKeptSchema(ctx, s, role); err != nil {
			return err
		}
	}
	return nil
}

// SwapSchema puts the filled staging schema in the place of the tenant's schema, in one transaction:
// it waits (lockTimeout at most) for the tenant's writes in flight (EXCLUSIVE locks on its tables:
// reads go on), takes writing away from the tenant role on them, renames the tenant's schema to
// previous and staging to the tenant's. A write that waited looks its table up again once it has its
// lock, and goes to the restored schema. It returns how long the tenant's writes were held.
func (db *DB) SwapSchema(ctx context.Context, schema, staging, previous, role string, lockTimeout time.Duration) (time.Duration, error) {
	var held time.Duration
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
			return err
		}
		// As a move's fence: the shortest deadlock_timeout makes this the one rolled back in a deadlock.
		if _, err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = 10"); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT nspname::text || ' ' || nspowner::regrole::text FROM pg_namespace WHERE nspname IN ($1, $2)`, schema, staging)
		owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		q := pgx.Identifier{role}.Sanitize()
		for _, s := range []string{schema, staging} {
			if !slices.Contains(owners, s+" "+role) && !slices.Contains(owners, s+" "+q) {
				return &OwnershipError{What: "schema", Name: s}
			}
		}
		rows, _ = tx.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1`, schema)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		began := time.Now()
		if len(tables) > 0 {
			if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(tables, ", ")+" IN EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("waiting for the tenant's writes in flight: %w", err)
			}
		}
		// The schema replaced becomes the operator's, marked for the tenant's role: the role (and so the
		// app's login) no longer has USAGE on it, and reaches nothing in it, though it owns its tables.
		for _, stmt := range []string{
			"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA " + pgx.Identifier{schema}.Sanitize() + " FROM " + q,
			"ALTER SCHEMA " + pgx.Identifier{schema}.Sanitize() + " RENAME TO " + pgx.Identifier{previous}.Sanitize(),
			"ALTER SCHEMA " + pgx.Identifier{previous}.Sanitize() + " OWNER TO CURRENT_USER",
			"COMMENT ON SCHEMA " + pgx.Identifier{previous}.Sanitize() + " IS " + quoteLiteral(keptMark(role)),
			"ALTER SCHEMA " + pgx.Identifier{staging}.Sanitize() + " RENAME TO " + pgx.Identifier{schema}.Sanitize(),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		held = time.Since(began)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("swapping the restored schema in for %s: %w", schema, err)
	}
	return held, nil
}

// CarryForward runs, on the tenant's session acting as the tenant, the app's statements that bring
// what must not go back in time from the tenant's schema (from) into the restored one (to): the app's
// own (migrations.CarryForward), given the two schema names quoted.
func (s *TenantSession) CarryForward(ctx context.Context, from string, stmts func(from, to string) []string) error {
	err := s.inTxOn(ctx, "pg_catalog", true, func(tx pgx.Tx) error {
		for _, stmt := range stmts(pgx.Identifier{from}.Sanitize(), pgx.Identifier{s.id.Schema}.Sanitize()) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("carrying the credentials of %s forward into %s: %w", from, s.id.Schema, err)
	}
	return nil
}
