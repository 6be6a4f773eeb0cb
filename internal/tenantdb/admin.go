package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// EnsureAdmin makes sure the tenant schema has an active admin user with this email and password hash:
// a new user, or the existing user of that email made admin again, reactivated and given the hash. The
// operator calls it while it establishes the login of the admin Secret, never after. It reports whether
// it wrote anything.
func (db *DB) EnsureAdmin(ctx context.Context, schema, email, passwordHash string) (bool, error) {
	users := pgx.Identifier{schema, "users"}.Sanitize()
	tag, err := db.pool.Exec(ctx, `INSERT INTO `+users+` AS u (email, name, role, password_hash)
VALUES ($1, 'Administrator', 'admin', $2)
ON CONFLICT ((lower(email))) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin', active = true`,
		email, passwordHash)
	if err != nil {
		return false, fmt.Errorf("creating admin user in schema %q: %w", schema, err)
	}
	return tag.RowsAffected() > 0, nil
}
