// Package migrations holds the versioned SQL migrations of a tenant schema. Files are named
// NNNNN_name.sql in goose's format; each is applied in its own transaction inside the tenant's schema
// (unqualified names resolve through search_path), by the operator, never by the app.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

//go:embed *.sql
var files embed.FS

// PeopleTables are the tables that hold a tenant's people and their credentials: a clone of a tenant
// never copies them, nor any table whose rows refer to them.
var PeopleTables = []string{"users", "sessions", "api_tokens"}

// CredentialTables hold what signs a client in without a password: a restore into a new tenant does not
// bring them (its users sign in again, and make new API tokens), so that no cookie or token of one
// tenant opens another.
var CredentialTables = []string{"sessions", "api_tokens"}

// SessionTables are not restored in place: every session of the tenant ends, and its users sign in
// again (a session closed since the backup does not come back).
var SessionTables = []string{"sessions"}

// CarryForward are the statements that an in-place restore runs on the restored schema (to) before it
// replaces the tenant's schema (from), so that no credential goes back in time: each user keeps the
// password it has now, and stays deactivated if it was deactivated since; a user deleted since is
// deactivated; an API token revoked or deleted since stays revoked. Identifiers come quoted.
func CarryForward(from, to string) []string {
	return []string{
		`UPDATE ` + to + `.users u SET password_hash = c.password_hash, active = u.active AND c.active
FROM ` + from + `.users c WHERE c.id = u.id`,
		`UPDATE ` + to + `.users u SET active = false WHERE NOT EXISTS (SELECT FROM ` + from + `.users c WHERE c.id = u.id)`,
		`UPDATE ` + to + `.api_tokens t SET revoked_at = coalesce(c.revoked_at, pg_catalog.now())
FROM (SELECT t2.id, c2.revoked_at FROM ` + to + `.api_tokens t2 LEFT JOIN ` + from + `.api_tokens c2 ON c2.id = t2.id
      WHERE t2.revoked_at IS NULL AND (c2.id IS NULL OR c2.revoked_at IS NOT NULL)) c
WHERE t.id = c.id`,
	}
}

// FS returns the migration files.
func FS() fs.FS { return files }

// Latest is the version of the newest migration: the schema version this build of the app needs.
var Latest = mustLatest(files)

func mustLatest(fsys fs.FS) int64 {
	v, err := LatestIn(fsys)
	if err != nil {
		panic(err)
	}
	return v
}

// LatestIn is the version of the newest migration in a directory of migration files.
func LatestIn(fsys fs.FS) (int64, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return 0, err
	}
	var max int64
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok || path.Ext(e.Name()) != ".sql" {
			continue
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("migration %s does not start with a version number", e.Name())
		}
		if v > max {
			max = v
		}
	}
	return max, nil
}
