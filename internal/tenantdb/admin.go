package tenantdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnsureAdmin makes sure the tenant schema has an active admin user with this email and password hash:
// a new user, or the existing user of that email made admin again, reactivated and given the hash. The
// operator calls it while it establishes the login of the admin Secret, never after. It reports whether
// it wrote anything.
//
// It runs on the app's login, switched to the tenant role for the one transaction: a trigger the tenant
// role may have put on its users table runs with no more than that.
func (db *DB) EnsureAdmin(ctx context.Context, schema, role, email, passwordHash string) (bool, error) {
	pool, err := db.tenantPool()
	if err != nil {
		return false, err
	}
	users := pgx.Identifier{schema, "users"}.Sanitize()
	var written int64
	err = withTenantConn(ctx, pool, func(conn *pgxpool.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true), set_config('search_path', $2, true)",
				role, pgx.Identifier{schema}.Sanitize()); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO `+users+` AS u (email, name, role, password_hash)
VALUES ($1, 'Administrator', 'admin', $2)
ON CONFLICT ((lower(email))) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin', active = true`,
				email, passwordHash)
			written = tag.RowsAffected()
			return err
		})
	})
	if err != nil {
		return false, fmt.Errorf("creating admin user in schema %q: %w", schema, err)
	}
	return written > 0, nil
}
