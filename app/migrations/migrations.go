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
