package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// EnsureAppRole creates or updates the app's login role: it owns nothing, inherits nothing (NOINHERIT:
// it holds a tenant's privileges only after SET ROLE to it) and may read the registry. An empty password
// leaves the password as it is.
func (db *DB) EnsureAppRole(ctx context.Context, role, password string) error {
	if err := db.EnsureRegistry(ctx); err != nil {
		return err
	}
	q := pgx.Identifier{role}.Sanitize()
	var exists bool
	if err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return fmt.Errorf("looking up role %q: %w", role, err)
	}
	if !exists {
		if _, err := db.pool.Exec(ctx, "CREATE ROLE "+q+" LOGIN NOINHERIT"); err != nil && !isCode(err, codeDuplicateObject, codeUniqueViolation) {
			return fmt.Errorf("creating app role %q: %w", role, err)
		}
	}
	if password != "" {
		// ALTER ROLE takes no bound parameters: the password goes in as a quoted literal.
		lit := "'" + escapeLiteral(password) + "'"
		if _, err := db.pool.Exec(ctx, "ALTER ROLE "+q+" LOGIN NOINHERIT PASSWORD "+lit); err != nil {
			return fmt.Errorf("setting the password of app role %q: %w", role, err)
		}
	}
	if _, err := db.pool.Exec(ctx, "GRANT USAGE ON SCHEMA tenantry TO "+q+
		"; GRANT SELECT ON tenantry.tenants, tenantry.tenant_hosts TO "+q); err != nil {
		return fmt.Errorf("letting app role %q read the registry: %w", role, err)
	}
	return nil
}

// EnsureAppRoleOnce is EnsureAppRole without a password, done once per DB and role.
func (db *DB) EnsureAppRoleOnce(ctx context.Context, role string) error {
	db.mu.Lock()
	done := db.appRoles[role]
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
	db.appRoles[role] = true
	db.mu.Unlock()
	return nil
}

// GrantTenant lets the app role act as a tenant (SET ROLE).
func (db *DB) GrantTenant(ctx context.Context, tenantRole, appRole string) error {
	if _, err := db.pool.Exec(ctx, "GRANT "+pgx.Identifier{tenantRole}.Sanitize()+" TO "+pgx.Identifier{appRole}.Sanitize()); err != nil {
		return fmt.Errorf("granting tenant role %q to app role %q: %w", tenantRole, appRole, err)
	}
	return nil
}

func escapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}
