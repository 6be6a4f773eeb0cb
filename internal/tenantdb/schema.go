package tenantdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgreSQL error codes this package tells apart.
const (
	codeDuplicateObject  = "42710"
	codeUniqueViolation  = "23505"
	codeDependentObjects = "2BP01"
)

// EnsureSchema creates a tenant's NOLOGIN role and the schema it owns, and makes the operator's own
// role a member so it can act as the tenant (migrations run as the tenant role, so the tenant owns
// every table). It sends one query when both exist already, and fails when the schema exists but is
// owned by someone else: that schema is not the tenant's to take.
func (db *DB) EnsureSchema(ctx context.Context, schema, role string) error {
	var roleExists, member bool
	var owner *string
	err := db.pool.QueryRow(ctx, `
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $2),
       (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
         OR EXISTS (SELECT FROM pg_roles WHERE rolname = $2 AND pg_has_role(current_user, oid, 'MEMBER'))`,
		schema, role).Scan(&roleExists, &owner, &member)
	if err != nil {
		return fmt.Errorf("looking up schema %q: %w", schema, err)
	}
	quotedRole := pgx.Identifier{role}.Sanitize()
	if owner != nil {
		if *owner != quotedRole && *owner != role {
			return fmt.Errorf("schema %q exists and is owned by %s, not by the tenant role %q", schema, *owner, role)
		}
		if member {
			return nil
		}
	}
	if !roleExists {
		_, err := db.pool.Exec(ctx, "CREATE ROLE "+quotedRole+" NOLOGIN")
		if err != nil && !isCode(err, codeDuplicateObject, codeUniqueViolation) {
			return fmt.Errorf("creating role %q: %w", role, err)
		}
	}
	if !member {
		if _, err := db.pool.Exec(ctx, "GRANT "+quotedRole+" TO CURRENT_USER"); err != nil {
			return fmt.Errorf("granting role %q to the operator's role: %w", role, err)
		}
	}
	if owner == nil {
		_, err := db.pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()+
			" AUTHORIZATION "+quotedRole)
		if err != nil && !isCode(err, codeDuplicateObject, codeUniqueViolation) {
			return fmt.Errorf("creating schema %q: %w", schema, err)
		}
	}
	return nil
}

// DropSchema drops a tenant's schema with all its data, then its role. A role that still owns objects in
// another database of the cluster is left in place: the schema, which is what holds data, is gone.
func (db *DB) DropSchema(ctx context.Context, schema, role string) error {
	if _, err := db.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("dropping schema %q: %w", schema, err)
	}
	_, err := db.pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
	if err != nil && !isCode(err, codeDependentObjects) {
		return fmt.Errorf("dropping role %q: %w", role, err)
	}
	return nil
}

func isCode(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}
