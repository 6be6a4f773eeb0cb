package tenantdb

import (
	"slices"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
		want      []string
	}{
		{"two", "CREATE TABLE a (id int);\nCREATE INDEX a_i ON a (id);\n", []string{"CREATE TABLE a (id int)", "CREATE INDEX a_i ON a (id)"}},
		{"no trailing semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"string", "INSERT INTO t VALUES ('a;b', 'it''s;');SELECT 2", []string{"INSERT INTO t VALUES ('a;b', 'it''s;')", "SELECT 2"}},
		{"escape string", `SELECT E'a\';b';SELECT 3`, []string{`SELECT E'a\';b'`, "SELECT 3"}},
		{"identifier", `CREATE TABLE "a;b" (id int);`, []string{`CREATE TABLE "a;b" (id int)`}},
		{"line comment", "SELECT 1; -- a; b\nSELECT 2;", []string{"SELECT 1", "-- a; b\nSELECT 2"}},
		{"block comment, nested", "SELECT /* a; /* b; */ c; */ 1; SELECT 2", []string{"SELECT /* a; /* b; */ c; */ 1", "SELECT 2"}},
		{"dollar quotes", "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nDO $x$ BEGIN PERFORM 1; END $x$;",
			[]string{"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", "DO $x$ BEGIN PERFORM 1; END $x$"}},
		{"parameter is no dollar quote", "SELECT $1; SELECT $2", []string{"SELECT $1", "SELECT $2"}},
		{"only comments and empties", "-- nothing\n;;\n", nil},
	} {
		if got := splitStatements(tc.sql); !slices.Equal(got, tc.want) {
			t.Errorf("%s: splitStatements(%q) = %q, want %q", tc.name, tc.sql, got, tc.want)
		}
	}
}
