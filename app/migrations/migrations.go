// Package migrations holds the versioned SQL migrations of a tenant schema. Files are named
// NNNNN_name.sql in goose's format; each is applied in its own transaction inside the tenant's schema
// (unqualified names resolve through search_path), by the operator, never by the app.
package migrations

import (
	"embed"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

//go:embed *.sql
var files embed.FS

// FS returns the migration files.
func FS() fs.FS { return files }

// Latest is the version of the newest migration: the schema version this build of the app needs.
var Latest = latest()

func latest() int64 {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err)
	}
	var max int64
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok || path.Ext(e.Name()) != ".sql" {
			continue
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			panic("migration " + e.Name() + " does not start with a version number")
		}
		if v > max {
			max = v
		}
	}
	return max
}
