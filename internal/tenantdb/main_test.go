package tenantdb

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"tenantry.dev/tenantry/test/utils/pgcluster"
)

var cluster *pgcluster.Throwaway

func TestMain(m *testing.M) { pgcluster.RunTests(m, &cluster) }

// openTestDB returns a DB on a fresh database of the test cluster, with an app login for work inside
// tenant schemas, as the operator has one, and that database's URL.
func openTestDB(t *testing.T, opts Options) (*DB, string) {
	t.Helper()
	ctx := context.Background()
	adminURL, err := cluster.NewDatabase(ctx, "tenantdb")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(adminURL)
	database := strings.TrimPrefix(u.Path, "/")
	appRole := Role{Name: "app_" + database, Mark: OwnerMark("app", database, "test", "app")}
	opts.AppRole = appRole
	opts.Worker = Role{Name: "op_" + database, Mark: OwnerMark("operator", database, "test", "app")}
	db, err := Open(adminURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.EnsureAppRole(ctx, appRole, "app-password"); err != nil {
		t.Fatal(err)
	}
	return db, adminURL
}

// appRoleOf is the app login of a DB that openTestDB opened.
func appRoleOf(db *DB) string { return db.opts.AppRole.Name }

// newTenantSchema creates a tenant's role and schema, as the operator does, and lets the app login act
// as it. The role is named like the schema.
func newTenantSchema(t *testing.T, db *DB, schema string) Role {
	t.Helper()
	ctx := context.Background()
	role := Role{Name: schema, Mark: OwnerMark("tenant", db.Database(), "test", schema)}
	if err := db.EnsureSchema(ctx, schema, role); err != nil {
		t.Fatal(err)
	}
	if err := db.GrantTenant(ctx, schema, appRoleOf(db)); err != nil {
		t.Fatal(err)
	}
	return role
}

// sessionOf is the tenant session of a schema and role on db.
func sessionOf(t *testing.T, db *DB, schema, role string) *TenantSession {
	t.Helper()
	s, err := db.Session(context.Background(), Identity{Schema: schema, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
