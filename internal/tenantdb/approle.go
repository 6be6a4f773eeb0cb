package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// EnsureAppRole creates or updates the app's login role: it owns nothing, inherits nothing (NOINHERIT:
// it holds a tenant's privileges only after SET ROLE to it) and may read the registry. A role of that
// name that belongs to someone else is an *OwnershipError. An empty password leaves the password as it
// is.
func (db *DB) EnsureAppRole(ctx context.Context, role Role, password string) error {
	if err := db.EnsureRegistry(ctx); err != nil {
		return err
	}
	// Concurrent GRANTs on the registry fail with "tuple concurrently updated": one at a time.
	db.appRoleMu.Lock()
	defer db.appRoleMu.Unlock()
	if err := db.ensureRole(ctx, role, "LOGIN NOINHERIT"); err != nil {
		return err
	}
	q := pgx.Identifier{role.Name}.Sanitize()
	if password != "" {
		// ALTER ROLE takes no bound parameters: the password goes in as its SCRAM verifier.
		clause, err := passwordClause(password)
		if err != nil {
			return err
		}
		if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" LOGIN NOINHERIT "+clause); err != nil {
			return fmt.Errorf("setting the password of app role %q: %w", role.Name, err)
		}
	}
	if _, err := db.pool.Exec(ctx, "GRANT USAGE ON SCHEMA tenantry TO "+q+
		"; GRANT SELECT ON tenantry.tenants, tenantry.tenant_hosts TO "+q); err != nil {
		return fmt.Errorf("letting app role %q read the registry: %w", role.Name, err)
	}
	// On Citus the coordinator admits the apps' logins by this group (docs/citus.md).
	if citus, err := db.Citus(ctx); err != nil {
		return err
	} else if citus {
		return db.joinAppsGroup(ctx, role.Name)
	}
	return nil
}

// EnsureAppRoleOnce is EnsureAppRole without a password, done once per DB and role.
func (db *DB) EnsureAppRoleOnce(ctx context.Context, role Role) error {
	db.mu.Lock()
	done := db.appRoles[role.Name]
	db.mu.Unlock()
	if done {
		return nil
	}
	if err := db.EnsureAppRole(ctx, role, ""); err != nil {
		return err
	}
	db.mu.Lock()
	if db.appRoles == nil {
		db.appRoles = map[string]bool{}
	}
	db.appRoles[role.Name] = true
	db.mu.Unlock()
	return nil
}

// GrantTenants lets the app role act as every live tenant of the namespace with one of the names given
// whose schema is in this database, as the registry records them: what a new or renamed app login needs for the tenants it serves.
func (db *DB) GrantTenants(ctx context.Context, namespace string, names []string, appRole string) error {
	// A tenant registered a moment ago may not have its role yet: its own reconcile grants it.
	rows, _ := db.pool.Query(ctx, `SELECT role_name FROM tenantry.tenants t
WHERE namespace = $1 AND name = ANY($2) AND state <> 'retained' AND shard = '' AND EXISTS (SELECT FROM pg_roles WHERE rolname = t.role_name)`,
		namespace, names)
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string]) // a failed query's error comes back here
	if err != nil {
		return fmt.Errorf("listing the tenant roles for app role %q: %w", appRole, err)
	}
	for _, r := range roles {
		if err := db.GrantTenant(ctx, r, appRole); err != nil {
			return err
		}
	}
	return nil
}

// GrantTenant lets the app role act as a tenant (SET ROLE).
func (db *DB) GrantTenant(ctx context.Context, tenantRole, appRole string) error {
	if _, err := db.pool.Exec(ctx, "GRANT "+pgx.Identifier{tenantRole}.Sanitize()+" TO "+pgx.Identifier{appRole}.Sanitize()); err != nil {
		return fmt.Errorf("granting tenant role %q to app role %q: %w", tenantRole, appRole, err)
	}
	return nil
}

// RetireAppRole closes the app's login (Options.AppRole) of an ExpenseApp that is being deleted, on this database: it may no
// longer log in, read the registry or hear its namespace's announcements (its channel is forgotten).
// Its memberships in tenant roles went with its tenants. A role of that name that is not the app's
// (another mark) is left alone. The role itself stays, disabled, for an ExpenseApp of the same
// identity created again, which gives it a new password.
func (db *DB) RetireAppRole(ctx context.Context, namespace, app string) error {
	role := db.opts.AppRole
	if err := db.EnsureRegistry(ctx); err != nil {
		return err
	}
	if _, err := db.pool.Exec(ctx, `DELETE FROM tenantry.app_channels WHERE namespace = $1 AND app = $2`, namespace, app); err != nil {
		return fmt.Errorf("forgetting the announcement channel of ExpenseApp %s/%s: %w", namespace, app, err)
	}
	if ours, err := db.marked(ctx, role); err != nil || !ours {
		return err
	}
	q := pgx.Identifier{role.Name}.Sanitize()
	if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" NOLOGIN PASSWORD NULL"); err != nil {
		return fmt.Errorf("disabling app role %q: %w", role.Name, err)
	}
	if _, err := db.pool.Exec(ctx, "REVOKE ALL ON tenantry.tenants, tenantry.tenant_hosts FROM "+q); err != nil {
		return fmt.Errorf("closing the registry to app role %q: %w", role.Name, err)
	}
	return nil
}
