package plugin

import (
	"strings"
	"testing"
)

// The app's password goes to psql in its environment, never on its command line (where ps shows it to
// every user of the machine), and no option of the Secret's string reaches the server besides ours.
func TestWithoutPassword(t *testing.T) {
	target, pass, user, err := withoutPassword("postgres://tenantry_app_x:s3cr%2Ft@db.example.com:5432/expenses?sslmode=require&password=other&options=-c%20role%3Dpostgres")
	if err != nil {
		t.Fatal(err)
	}
	if pass != "s3cr/t" || user != "tenantry_app_x" {
		t.Errorf("password %q, user %q", pass, user)
	}
	if strings.Contains(target, "s3cr") || strings.Contains(target, "other") || strings.Contains(target, "options") ||
		!strings.Contains(target, "tenantry_app_x@db.example.com:5432/expenses") || !strings.Contains(target, "sslmode=require") {
		t.Errorf("target %q: want the user, server and settings, without password or options", target)
	}
	for _, bad := range []string{"", "host=db user=x", "mysql://x:y@db/z", "postgres://db/expenses"} {
		if _, _, _, err := withoutPassword(bad); err == nil {
			t.Errorf("withoutPassword(%q) accepted", bad)
		}
	}
}

// Only a name a tenant's schema could have reaches psql's startup options.
func TestTenantSchemaPattern(t *testing.T) {
	for s, ok := range map[string]bool{"tenant_acme_zdmiafwtwlwmwvtt": true, "tenant_a -c role=postgres": false,
		"public": false, "tenant_": false, "tenantry_app_x": false, "tenant_A": false} {
		if tenantSchema.MatchString(s) != ok {
			t.Errorf("%q matched %t, want %t", s, !ok, ok)
		}
	}
}
