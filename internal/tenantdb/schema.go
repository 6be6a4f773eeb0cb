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
	codeUndefinedTable   = "42P01"
	codeUndefinedSchema  = "3F000"
	codeUndefinedColumn  = "42703"
	codeDuplicateTable   = "42P07"
	codeDuplicateSchema  = "42P06"
)

// OwnerMark is what the operator writes as the comment of every role it creates (COMMENT ON ROLE, which
// PostgreSQL keeps server-wide, like the role itself): the identity the role belongs to. A role whose
// mark names another identity, or a role of a derived name that has no mark, is someone else's, and the
// operator never takes it.
func OwnerMark(kind, database, namespace, name string) string {
	return fmt.Sprintf("tenantry %s %s/%s/%s", kind, database, namespace, name)
}

// OwnershipError says a schema or role exists that belongs to someone else. Its message names nobody.
type OwnershipError struct {
	What string // "role" or "schema"
	Name string
}

func (e *OwnershipError) Error() string {
	return fmt.Sprintf("%s %q exists and belongs to someone else; the operator does not take it", e.What, e.Name)
}

// Role describes a role the operator wants: its name and the owner mark it must carry. Legacy is set
// for a name an earlier release derived without a mark: such a role is taken, and marked, only because
// the registry already records it for this very tenant.
type Role struct {
	Name   string
	Mark   string
	Legacy bool
}

// marked says whether the role exists and carries its mark: it is the operator's to change or drop.
func (db *DB) marked(ctx context.Context, r Role) (bool, error) {
	var ours bool
	err := db.pool.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_roles WHERE rolname = $1 AND shobj_description(oid, 'pg_authid') = $2`,
		r.Name, r.Mark).Scan(&ours)
	if err != nil {
		return false, fmt.Errorf("looking up role %q: %w", r.Name, err)
	}
	return ours, nil
}

// ensureRole creates a role with attrs and marks it, or checks that the existing one carries the mark.
func (db *DB) ensureRole(ctx context.Context, r Role, attrs string) error {
	var exists bool
	var mark *string
	err := db.pool.QueryRow(ctx, `
SELECT count(*) > 0, max(shobj_description(oid, 'pg_authid')) FROM pg_roles WHERE rolname = $1`, r.Name).Scan(&exists, &mark)
	if err != nil {
		return fmt.Errorf("looking up role %q: %w", r.Name, err)
	}
	q := pgx.Identifier{r.Name}.Sanitize()
	switch {
	case exists && mark != nil && *mark == r.Mark:
		return nil
	case exists && (mark != nil || !r.Legacy):
		return &OwnershipError{What: "role", Name: r.Name}
	case !exists:
		// Created and marked in one transaction: a role is never seen, by anyone, without its mark.
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "CREATE ROLE "+q+" "+attrs); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "COMMENT ON ROLE "+q+" IS "+quoteLiteral(r.Mark))
			return err
		})
		if isCode(err, codeDuplicateObject, codeUniqueViolation) {
			return db.ensureRole(ctx, r, attrs) // created at this moment by another reconcile: check it
		}
		if err != nil {
			return fmt.Errorf("creating role %q: %w", r.Name, err)
		}
		return nil
	}
	// A legacy role, the tenant's by its registry row: mark it.
	if _, err := db.pool.Exec(ctx, "COMMENT ON ROLE "+q+" IS "+quoteLiteral(r.Mark)); err != nil {
		return fmt.Errorf("marking role %q as Tenantry's: %w", r.Name, err)
	}
	return nil
}

// EnsureSchema creates a tenant's NOLOGIN role and the schema it owns, and makes the operator's own
// role a member (which CREATE SCHEMA ... AUTHORIZATION and, later, DROP SCHEMA need). It sends one query
// when both exist already and are the tenant's. A role or schema that belongs to someone else is an
// *OwnershipError, and nothing is changed.
func (db *DB) EnsureSchema(ctx context.Context, schema string, role Role) error {
	var owner *string
	var ready bool
	err := db.pool.QueryRow(ctx, `
SELECT (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1),
       EXISTS (SELECT FROM pg_roles WHERE rolname = $2 AND shobj_description(oid, 'pg_authid') = $3
               AND (pg_has_role(current_user, oid, 'MEMBER')
                    OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)))`,
		schema, role.Name, role.Mark).Scan(&owner, &ready)
	if err != nil {
		return fmt.Errorf("looking up schema %q: %w", schema, err)
	}
	quotedRole := pgx.Identifier{role.Name}.Sanitize()
	if owner != nil && *owner != quotedRole && *owner != role.Name {
		return &OwnershipError{What: "schema", Name: schema}
	}
	if owner != nil && ready {
		return nil // the schema, owned by the tenant's marked role, which the operator may act as
	}
	citus, err := db.Citus(ctx)
	if err != nil {
		return err
	}
	if err := db.ensureRole(ctx, role, "NOLOGIN"); err != nil {
		return err
	}
	if citus {
		if err := db.citusLogin(ctx, role.Name); err != nil {
			return err
		}
	}
	if _, err := db.pool.Exec(ctx, "GRANT "+quotedRole+" TO CURRENT_USER"); err != nil {
		return fmt.Errorf("granting role %q to the operator's role: %w", role.Name, err)
	}
	if owner == nil {
		return db.createSchema(ctx, schema, role.Name, citus)
	}
	return nil
}

// RevokeMembers takes every login's membership in a tenant role away, but the operator's own: no app
// may act as the tenant any more. Deleting a tenant does this whatever its deletionPolicy, so a
// retained schema is reachable by nobody until its owner returns.
func (db *DB) RevokeMembers(ctx context.Context, role string) error {
	rows, _ := db.pool.Query(ctx, `
SELECT m.rolname FROM pg_auth_members a
JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
WHERE r.rolname = $1 AND m.rolname <> current_user`, role)
	members, err := pgx.CollectRows(rows, pgx.RowTo[string]) // a failed query's error comes back here
	if err != nil {
		return fmt.Errorf("listing the members of role %q: %w", role, err)
	}
	for _, m := range members {
		if _, err := db.pool.Exec(ctx, "REVOKE "+pgx.Identifier{role}.Sanitize()+" FROM "+pgx.Identifier{m}.Sanitize()); err != nil {
			return fmt.Errorf("revoking role %q from %q: %w", role, m, err)
		}
	}
	return nil
}

// DropSchema drops a tenant's schema with all its data (and the schemas in-place restores kept of
// it), then its role. A role that still owns objects in
// another database of the cluster is left in place: the schema, which is what holds data, is gone.
func (db *DB) DropSchema(ctx context.Context, schema, role string) error {
	if _, err := db.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("dropping schema %q: %w", schema, err)
	}
	// The schemas in-place restores kept (the tenant's data as it was before each) go with it.
	if err := db.dropKeptSchemas(ctx, role); err != nil {
		return err
	}
	if citus, err := db.Citus(ctx); err != nil {
		return err
	} else if citus {
		if _, err := db.pool.Exec(ctx, `DELETE FROM pg_catalog.pg_dist_authinfo WHERE rolename = $1`, role); err != nil {
			return fmt.Errorf("forgetting the login of role %q: %w", role, err)
		}
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

// quoteLiteral quotes a string as an SQL literal, for the statements that take no bound parameters
// (COMMENT, ALTER ROLE ... PASSWORD).
func quoteLiteral(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
