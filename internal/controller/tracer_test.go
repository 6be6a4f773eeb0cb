package controller

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// adminTrace records every statement the suite's operator sends on an admin session
// (tenantdb.Options.AdminTracer), and tells which of them reach inside a tenant schema: the admin
// session creates, drops, owns, grants and registers schemas, and never reads, writes, truncates or
// calls anything in one. TestMain fails the suite when any statement did.
type adminTrace struct {
	mu         sync.Mutex
	statements int
	violations []string
}

var adminStatements = &adminTrace{}

func (a *adminTrace) record(sql string, args []any) {
	why := adminViolation(sql, args)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statements++
	if why != "" && len(a.violations) < 50 {
		stmt := strings.Join(strings.Fields(sql), " ")
		if len(stmt) > 300 {
			stmt = stmt[:300] + "..."
		}
		a.violations = append(a.violations, fmt.Sprintf("%s: %s %v", why, stmt, args))
	}
}

// report is what TestMain prints: empty when every admin statement kept out of tenant schemas.
func (a *adminTrace) report() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.violations) == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d admin-session statements reached inside a tenant schema:\n  %s", len(a.violations),
		a.statements, strings.Join(a.violations, "\n  "))
}

var (
	// tenantObject is a name qualified by a tenant schema ("tenant_..."."x" or tenant_....x): an object
	// inside one, which only a tenant session may touch.
	tenantObject = regexp.MustCompile(`(?i)("tenant_[^"]+"|\btenant_[a-z0-9_$]+)\s*\.\s*("[^"]+"|[a-z_])`)
	// actsAs is a statement that switches the session to another role or search_path: an admin session
	// that did would run whatever the tenant planted there.
	actsAs = regexp.MustCompile(`(?i)(^|;)\s*(SET\s+(LOCAL\s+|SESSION\s+)?(ROLE|SESSION\s+AUTHORIZATION|search_path)\b|RESET\s+(ROLE|search_path))|set_config\s*\(\s*'(role|search_path)'`)
	// lockOnly is LOCK TABLE: it takes locks on a tenant's tables (a move's fence) and runs nothing.
	lockOnly = regexp.MustCompile(`(?i)^\s*LOCK\s+TABLE\b`)
)

// adminViolation says why an admin-session statement reaches inside a tenant schema, or "".
func adminViolation(sql string, args []any) string {
	if actsAs.MatchString(sql) {
		return "switches role or search_path"
	}
	if tenantObject.MatchString(sql) && !lockOnly.MatchString(sql) {
		return "names an object inside a tenant schema"
	}
	for _, a := range args {
		if s, ok := a.(string); ok && tenantObject.MatchString(s) {
			return "binds the name of an object inside a tenant schema"
		}
	}
	return ""
}

// The check itself: it flags what the usage measurement sent before it moved to the tenant session,
// and a sequence set by name, and lets the admin session's own statements through.
func TestAdminTrace_adminViolation(t *testing.T) {
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
		{`CREATE FUNCTION tenantry.f() RETURNS void LANGUAGE sql SET search_path = pg_catalog AS $$ SELECT $$`, nil, false},
		{`CREATE SCHEMA IF NOT EXISTS "tenant_acme_x" AUTHORIZATION "tenant_acme_x"`, nil, false},
		{`DROP SCHEMA IF EXISTS "tenant_acme_x" CASCADE`, nil, false},
		{`ALTER SCHEMA "tenant_acme_x" RENAME TO "tenant_acme_x_moved_1"`, nil, false},
		{`GRANT INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA "tenant_acme_x" TO "tenant_acme_x"`, nil, false},
		{`LOCK TABLE "tenant_acme_x"."users", "tenant_acme_x"."expenses" IN EXCLUSIVE MODE`, nil, false},
		{`SELECT schema_name, role_name FROM tenantry.tenants WHERE schema_name = $1`, []any{"tenant_acme_x"}, false},
		{`CREATE PUBLICATION "tenantry_move_tenant_acme_x" FOR TABLES IN SCHEMA "tenant_acme_x", TABLE tenantry.move_markers`, nil, false},
	} {
		if got := adminViolation(c.sql, c.args) != ""; got != c.bad {
			t.Errorf("adminViolation(%q, %v) flags it: %v, want %v", c.sql, c.args, got, c.bad)
		}
	}
}
