package testenv

import (
	"strings"
	"testing"
)

// The check itself: it flags what the usage measurement sent before it moved to the tenant session,
// and a sequence set by name, and lets the admin session's own statements through.
func TestAdminViolation(t *testing.T) {
	for _, c := range []struct {
		sql  string
		args []any
		bad  bool
	}{
		{`SELECT (SELECT count(*) FROM "tenant_acme_x"."users"), (SELECT count(*) FROM "tenant_acme_x"."expenses")`, nil, true},
		{`SELECT count(*) FROM tenant_acme_x.users`, nil, true},
		{`SELECT setval($1::regclass, $2, true)`, []any{`"tenant_acme_x"."users_id_seq"`, int64(3)}, true},
		{`TRUNCATE "tenant_acme_x"."users", "tenant_acme_x"."expenses" CASCADE`, nil, true},
		{`SELECT set_config('role', $1, true), set_config('search_path', $2, true)`, []any{"tenant_acme_x", `"tenant_acme_x"`}, true},
		{`SET ROLE "tenant_acme_x"`, nil, true},
		{`SELECT set_config($1, $2, true)`, []any{"role", "tenant_acme_x"}, true},
		{`DO $$ BEGIN EXECUTE 'SELECT 1'; END $$`, nil, true},
		{`LOCK TABLE "tenant_acme_x"."users" IN EXCLUSIVE MODE; DELETE FROM "tenant_acme_x"."users"`, nil, true},
		{`CREATE FUNCTION tenantry.f() RETURNS void LANGUAGE sql SET search_path = pg_catalog AS $$ SELECT $$`, nil, false},
		{`CREATE SCHEMA IF NOT EXISTS "tenant_acme_x" AUTHORIZATION "tenant_acme_x"`, nil, false},
		{`DROP SCHEMA IF EXISTS "tenant_acme_x" CASCADE`, nil, false},
		{`ALTER SCHEMA "tenant_acme_x" RENAME TO "tenant_acme_x_moved_1"`, nil, false},
		{`GRANT INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "tenant_acme_x" TO "tenant_acme_x"`, nil, false},
		{`LOCK TABLE "tenant_acme_x"."users", "tenant_acme_x"."expenses" IN EXCLUSIVE MODE`, nil, false},
		{`SELECT schema_name, role_name FROM tenantry.tenants WHERE schema_name = $1`, []any{"tenant_acme_x"}, false},
		{`CREATE PUBLICATION "tenantry_move_tenant_acme_x" FOR TABLES IN SCHEMA "tenant_acme_x", TABLE tenantry.move_markers`, nil, false},
	} {
		if got := AdminViolation(c.sql, c.args) != ""; got != c.bad {
			t.Errorf("AdminViolation(%q, %v) flags it: %v, want %v", c.sql, c.args, got, c.bad)
		}
	}
}

// The server log, read as the fault tests read it: the operator's admin statements are found by
// application and user, multi-line statements whole, and another login's statements are not judged.
func TestAdminViolationsInLog(t *testing.T) {
	log := `tenantry-operator|postgres|LOG:  statement: CREATE SCHEMA IF NOT EXISTS "tenant_a_x" AUTHORIZATION "tenant_a_x"
tenantry-operator|postgres|LOG:  execute <unnamed>: SELECT (SELECT count(*)
	FROM "tenant_a_x"."users")
tenantry-operator|postgres|DETAIL:  parameters: $1 = 'tenant_a_x'
tenantry-operator|tenantry_op_expenses_x|LOG:  execute <unnamed>: SELECT count(*) FROM "tenant_a_x"."users"
psql|postgres|LOG:  statement: SELECT count(*) FROM "tenant_a_x"."users"
tenantry-operator|postgres|LOG:  statement: SET ROLE "tenant_a_x"
`
	bad, n, err := AdminViolationsInLog(strings.NewReader(log), "tenantry-operator", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(bad) != 2 || !strings.Contains(bad[0], `"tenant_a_x"."users"`) || !strings.Contains(bad[1], "SET ROLE") {
		t.Fatalf("read %d admin statements, flagged %q; want 3, the count over users and the SET ROLE", n, bad)
	}
}
