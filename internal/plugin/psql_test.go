package plugin

import (
	"strings"
	"testing"
)

// Only the server, database, user, password and sslmode of the app's Secret reach psql, and the
// password only in its environment, never on its command line (where ps shows it to every user of the
// machine): a Secret edited by someone else cannot send psql, and the user's own credentials (a password
// file, a service, a client key), anywhere the string does not plainly say, nor set anything on the
// session.
func TestParseLogin(t *testing.T) {
	lg, err := parseLogin("postgres://tenantry_app_x:s3cr%2Ft@db.example.com:6432/expenses?sslmode=require&password=other" +
		"&options=-c%20role%3Dpostgres&hostaddr=203.0.113.9&passfile=/home/me/.pgpass&service=prod&sslkey=/home/me/key")
	if err != nil {
		t.Fatal(err)
	}
	if lg.password != "s3cr/t" || lg.user != "tenantry_app_x" || lg.where() != "db.example.com:6432/expenses" {
		t.Errorf("login %+v", lg)
	}
	if u := lg.url(); u != "postgres://tenantry_app_x@db.example.com:6432/expenses?connect_timeout=10&sslmode=require" {
		t.Errorf("psql's connection string %q: want the server, database, user and sslmode alone", u)
	}
	for _, bad := range []string{"", "host=db user=x password=y dbname=z", "mysql://x:y@db/z", "postgres://db/expenses",
		"postgres://x@db/expenses", "postgres://x:y@db/", "postgres://x:y@a,b/expenses", "postgres://x:y@%2Ftmp/expenses",
		"postgres://x:y@db/expenses?sslmode=whatever"} {
		if _, err := parseLogin(bad); err == nil {
			t.Errorf("parseLogin(%q) accepted", bad)
		}
	}
	if lg, err := parseLogin("postgresql://u:p@[::1]/d"); err != nil || !strings.HasPrefix(lg.url(), "postgres://u@[::1]:5432/d") {
		t.Errorf("an IPv6 server: %v, %+v", err, lg)
	}
}

// Only a name a tenant's schema and role could have reaches psql's startup options.
func TestTenantNamePattern(t *testing.T) {
	for s, ok := range map[string]bool{"tenant_acme_zdmiafwtwlwmwvtt": true, "tenant_a -c role=postgres": false,
		"public": false, "tenant_": false, "tenantry_app_x": false, "tenant_A": false} {
		if tenantName.MatchString(s) != ok {
			t.Errorf("%q matched %t, want %t", s, !ok, ok)
		}
	}
}
