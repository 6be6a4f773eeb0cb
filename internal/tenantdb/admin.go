package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// EnsureAdmin makes sure the tenant schema has an active admin user with this email. With reset, an
// existing user of that email gets passwordHash, role admin and is reactivated (the operator does this
// when it writes a new admin Secret, so the Secret always holds a working password); without reset an
// existing user is left alone. It reports whether it wrote anything.
func (db *DB) EnsureAdmin(ctx context.Context, schema, email, passwordHash string, reset bool) (bool, error) {
	users := pgx.Identifier{schema, "users"}.Sanitize()
	conflict := "DO NOTHING"
	if reset {
		conflict = "DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin', active = true"
	}
	tag, err := db.pool.Exec(ctx, `INSERT INTO `+users+` AS u (email, name, role, password_hash)
VALUES ($1, 'Administrator', 'admin', $2)
ON CONFLICT ((lower(email))) `+conflict, email, passwordHash)
	if err != nil {
		return false, fmt.Errorf("creating admin user in schema %q: %w", schema, err)
	}
	return tag.RowsAffected() > 0, nil
}
