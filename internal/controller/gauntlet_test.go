package controller

// The planted-code gauntlet: with only the app's database login (a compromised app pod), someone plants
// in a tenant's schema every kind of object that can run code or redirect a name, and the operator is
// then driven through every action it takes on that tenant. Each planted object calls spy(), which
// tries to escalate (create a role, make the app login a superuser, grant it the predefined roles that
// read and write everything, open the registry to it; also after RESET ROLE) and logs who it ran as. It
// must only ever run as the app's login or the tenant's role, and escalate nothing. See
// docs/security.md. (The operator's own work inside the schema runs on its tenant login, which is a
// member of the app's login and can do no more.)

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// gauntlet is a tenant with the gauntlet planted in its schema, on one database.
type gauntlet struct {
	f        *fixture
	tenant   string
	dbs      []*pgxpool.Pool // the database's superuser (and on Citus its workers'): to read the log and the roles
	appLogin string          // the app's login role
	worker   string          // the operator's tenant login on this database
	pwned    string          // the name of the role spy() tries to create
	planted  []string        // the logs of the plants that took (Citus refuses some)
}

// gauntletLog makes the table the planted code logs to, on the database of db, outside every tenant's
// schema (so that a move's copy, which carries the release's tables only, is not stopped by it): it is
// the test's instrument, not part of the attack, and anyone may write to it.
func gauntletLog(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	// On a Citus worker, with Citus's propagation off: the table is the worker's own.
	var citus, worker bool
	must(t, db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')`).Scan(&citus))
	if citus {
		must(t, db.QueryRow(ctx, `SELECT NOT citus_is_coordinator()`).Scan(&worker))
	}
	for _, stmt := range []string{"CREATE SCHEMA IF NOT EXISTS gauntlet",
		"CREATE TABLE IF NOT EXISTS gauntlet.log (tenant text, via text, session_as text, ran_as text, escalated text, query text)",
		"GRANT USAGE ON SCHEMA gauntlet TO PUBLIC", "GRANT INSERT ON gauntlet.log TO PUBLIC"} {
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if worker {
				if _, err := tx.Exec(ctx, "SET LOCAL citus.enable_ddl_propagation TO off"); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, stmt)
			return err
		})
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// marker is the file spy() tries to create on the server's machine with COPY TO PROGRAM, which only a
// superuser (or pg_execute_server_program) may run: unlike a role, it stays if the work rolls back.
func (g *gauntlet) marker() string { return filepath.Join(os.TempDir(), "tenantry-"+g.pwned) }

// plant is one statement of the gauntlet, and what its code logs as (via, for waitFired).
type plant struct{ logs, sql string }

// gauntletPlants are, for a tenant schema s (quoted) and its tables:
//   - on every table, triggers of every kind: BEFORE and AFTER, row and statement, TRUNCATE, and
//     triggers enabled ALWAYS and REPLICA (which fire in a subscription's apply worker);
//   - a rule, CHECK constraints and a column default that call spy();
//   - row-level security, forced on the owner, with a policy that calls spy();
//   - functions and an operator named like built-ins in the tenant's schema, to shadow them on its
//     search_path;
//   - default privileges that hand every table the tenant role creates from now on to PUBLIC;
//   - with views, views in place of the tables the operator reads and writes (users, expenses, goose's
//     version table). A schema whose tables are not the release's cannot be moved, and on Citus such a
//     view only breaks the tenant's own writes (Citus modifies no view over its tables).
func (g *gauntlet) plants(s, tenantLiteral string, tables []string, views bool) []plant {
	app := pgx.Identifier{g.appLogin}.Sanitize()
	ps := []plant{{"spy", fmt.Sprintf(`CREATE FUNCTION spy(via text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE escalated text := '';
BEGIN
    BEGIN EXECUTE 'CREATE ROLE %[2]s SUPERUSER'; escalated := escalated || ' created a role;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE %[3]s SUPERUSER CREATEROLE BYPASSRLS'; escalated := escalated || ' raised the app login;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'GRANT pg_read_all_data, pg_write_all_data TO %[3]s'; escalated := escalated || ' granted read/write all;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'GRANT ALL ON tenantry.tenants TO %[3]s'; escalated := escalated || ' opened the registry;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN PERFORM migration_secret FROM tenantry.registry_version; escalated := escalated || ' read the migration secret;';
    EXCEPTION WHEN others THEN NULL; END;
    -- Outside the transaction: a file written as the server's user stays even if the work rolls back.
    BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch %[5]s'''; escalated := escalated || ' ran a program on the server;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN RESET ROLE; EXECUTE 'CREATE ROLE %[2]s_b SUPERUSER'; escalated := escalated || ' created a role after RESET ROLE;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN
        INSERT INTO gauntlet.log VALUES (%[4]s, via, session_user, current_user, escalated, left(current_query(), 300));
    EXCEPTION WHEN others THEN -- a read-only transaction: the log is the server's
        RAISE WARNING 'gauntlet: %% ran on %% as %%:%%', via, session_user, current_user, escalated;
    END;
    RETURN true;
END $f$`, s, g.pwned, app, tenantLiteral, g.marker())},
		{"spy", `CREATE FUNCTION spy_text(via text) RETURNS text LANGUAGE sql AS $f$ SELECT CASE WHEN ` + s + `.spy(via) THEN 'planted' END $f$`},
		// Declared IMMUTABLE, which PostgreSQL takes on trust: an index expression or a generated column
		// may call it, and both run on every write.
		{"spy", `CREATE FUNCTION spy_immutable(v text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM ` + s + `.spy('index or generated column');
    RETURN v;
END $f$`},
		{"spy", `CREATE FUNCTION spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM ` + s + `.spy(TG_NAME || ' ' || TG_OP || ' on ' || TG_TABLE_NAME);
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $f$`}}
	for _, tbl := range tables {
		q, on := pgx.Identifier{tbl}.Sanitize(), "on "+tbl
		ps = append(ps,
			plant{on, "CREATE TRIGGER g_before_row BEFORE INSERT OR UPDATE OR DELETE ON " + q + " FOR EACH ROW EXECUTE FUNCTION spy_trigger()"},
			plant{on, "CREATE TRIGGER g_after_row AFTER INSERT OR UPDATE OR DELETE ON " + q + " FOR EACH ROW EXECUTE FUNCTION spy_trigger()"},
			plant{on, "CREATE TRIGGER g_before_stmt BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + q + " FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()"},
			plant{on, "CREATE TRIGGER g_after_stmt AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + q + " FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()"},
			plant{on, "CREATE TRIGGER g_always AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + q + " FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()"},
			plant{on, "ALTER TABLE " + q + " ENABLE ALWAYS TRIGGER g_always"},
			plant{on, "CREATE TRIGGER g_replica BEFORE INSERT OR UPDATE OR DELETE ON " + q + " FOR EACH ROW EXECUTE FUNCTION spy_trigger()"},
			plant{on, "ALTER TABLE " + q + " ENABLE REPLICA TRIGGER g_replica"})
	}
	spy := func(via string) string { return s + ".spy('" + via + "')" }
	ps = append(ps,
		plant{"rule", "CREATE RULE g_rule AS ON INSERT TO departments DO ALSO SELECT " + spy("rule")},
		plant{"check users", "ALTER TABLE users ADD CONSTRAINT g_check CHECK (" + spy("check users") + ")"},
		plant{"check goose_db_version", "ALTER TABLE goose_db_version ADD CONSTRAINT g_check CHECK (" + spy("check goose_db_version") + ")"},
		plant{"default", "ALTER TABLE users ALTER COLUMN created_at SET DEFAULT CASE WHEN " + spy("default") + " THEN pg_catalog.now() END"},
		plant{"index or generated column", "CREATE INDEX g_index ON users (" + s + ".spy_immutable(email))"},
		// Row-level security, forced on the owner too.
		plant{"policy users", "ALTER TABLE users ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY"},
		plant{"policy users", "CREATE POLICY g_policy ON users USING (" + spy("policy users") + ")"},
		plant{"policy goose_db_version", "ALTER TABLE goose_db_version ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY"},
		plant{"policy goose_db_version", "CREATE POLICY g_policy ON goose_db_version USING (" + spy("policy goose_db_version") + ")"},
		// Built-ins shadowed on the tenant's search_path.
		plant{"shadow lower", "CREATE FUNCTION lower(text) RETURNS text LANGUAGE sql AS $f$ SELECT " + s + ".spy_text('shadow lower') $f$"},
		plant{"shadow now", "CREATE FUNCTION now() RETURNS timestamptz LANGUAGE sql AS $f$ SELECT CASE WHEN " + spy("shadow now") + " THEN pg_catalog.now() END $f$"},
		plant{"shadow set_config", "CREATE FUNCTION set_config(text, text, boolean) RETURNS text LANGUAGE sql AS $f$ SELECT " + s + ".spy_text('shadow set_config') $f$"},
		plant{"shadow pg_notify", "CREATE FUNCTION pg_notify(text, text) RETURNS void LANGUAGE sql AS $f$ SELECT " + spy("shadow pg_notify") + "; $f$"},
		plant{"shadow size", "CREATE FUNCTION pg_total_relation_size(regclass) RETURNS bigint LANGUAGE sql AS $f$ SELECT CASE WHEN " + spy("shadow size") + " THEN 0::bigint END $f$"},
		plant{"shadow count", "CREATE FUNCTION count(text) RETURNS bigint LANGUAGE sql AS $f$ SELECT CASE WHEN " + spy("shadow count") + " THEN 0::bigint END $f$"},
		plant{"shadow operator", "CREATE FUNCTION g_eq(name, text) RETURNS boolean LANGUAGE sql AS $f$ SELECT " + spy("shadow operator") + " $f$"},
		plant{"shadow operator", "CREATE OPERATOR = (LEFTARG = name, RIGHTARG = text, FUNCTION = g_eq)"},
		// Default privileges: whatever the tenant role creates from now on is everyone's, in its schema
		// and (without IN SCHEMA) wherever it creates it.
		plant{"default privileges", "ALTER DEFAULT PRIVILEGES IN SCHEMA " + s + " GRANT ALL ON TABLES TO PUBLIC"},
		plant{"default privileges", "ALTER DEFAULT PRIVILEGES IN SCHEMA " + s + " GRANT EXECUTE ON FUNCTIONS TO PUBLIC"},
		plant{"default privileges", "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC"})
	if views {
		// A generated column (a column the release does not have), and views in place of the tables
		// the operator reads and writes (the tables keep what was planted on them).
		ps = append(ps,
			plant{"index or generated column", "ALTER TABLE users ADD COLUMN g_generated text GENERATED ALWAYS AS (" + s + ".spy_immutable(email)) STORED"},
			plant{"view users", "ALTER TABLE users RENAME TO users_real"},
			plant{"view users", "CREATE VIEW users AS SELECT * FROM users_real WHERE " + spy("view users")},
			plant{"view expenses", "ALTER TABLE expenses RENAME TO expenses_real"},
			plant{"view expenses", "CREATE VIEW expenses AS SELECT e.* FROM expenses_real e, (SELECT " + spy("view expenses") + ") AS s"},
			plant{"view goose_db_version", "ALTER TABLE goose_db_version RENAME TO goose_real"},
			plant{"view goose_db_version", "CREATE VIEW goose_db_version AS SELECT * FROM goose_real WHERE " + spy("view goose_db_version")})
	}
	return ps
}

// plantGauntlet plants the gauntlet (gauntletPlants) in a tenant's schema, as the app login switched to
// the tenant's role: what any app pod can do. conn is the app's login on the tenant's database, dbs that
// database's superuser and, on Citus, its workers'. On PostgreSQL every plant must take, in one
// transaction; on Citus each is tried on its own, and those Citus refuses are logged and left out.
func plantGauntlet(t *testing.T, f *fixture, conn *pgx.Conn, dbs []*pgxpool.Pool, tenant string, views bool) *gauntlet {
	t.Helper()
	ctx := context.Background()
	for _, db := range dbs {
		gauntletLog(t, db)
	}
	g := &gauntlet{f: f, tenant: tenant, dbs: dbs, pwned: "pwned_" + strings.ReplaceAll(f.ns, "-", "_"),
		worker: registry.WorkerRoleName(conn.Config().Database, f.ns, "expenses")}
	var citus bool
	must(t, conn.QueryRow(ctx, "SELECT current_user, EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')").Scan(&g.appLogin, &citus))
	if len(g.pwned) > 50 {
		g.pwned = g.pwned[:50]
	}
	_ = os.Remove(g.marker()) // left by an earlier run
	s := f.q(tenant)
	rows, _ := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", f.schema(tenant))
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	plants := g.plants(s, "'"+f.schema(tenant)+"'", tables, views)
	if !citus {
		tx, err := conn.Begin(ctx)
		must(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		_, err = tx.Exec(ctx, "SET LOCAL ROLE "+s+"; SET LOCAL search_path = "+s)
		must(t, err)
		for _, p := range plants {
			if _, err := tx.Exec(ctx, p.sql); err != nil {
				t.Fatalf("planting %q: %v", p.sql, err)
			}
			g.planted = append(g.planted, p.logs)
		}
		must(t, tx.Commit(ctx))
		return g
	}
	for _, set := range []string{"SET ROLE " + s, "SET search_path = " + s} {
		_, err := conn.Exec(ctx, set)
		must(t, err)
	}
	defer func() { _, _ = conn.Exec(ctx, "RESET ROLE; RESET search_path") }()
	refused := map[string][]string{} // plants, by Citus's reason
	for _, p := range plants {
		if _, err := conn.Exec(ctx, p.sql); err != nil {
			if p.logs == "spy" {
				t.Fatalf("Citus refused the spy itself: %v", err)
			}
			if !slices.Contains(refused[err.Error()], p.logs) {
				refused[err.Error()] = append(refused[err.Error()], p.logs)
			}
			continue
		}
		g.planted = append(g.planted, p.logs)
	}
	for why, logs := range refused {
		t.Logf("%s: Citus refused %s: %s", tenant, strings.Join(logs, ", "), why)
		g.planted = slices.DeleteFunc(g.planted, func(p string) bool { return slices.Contains(logs, p) })
	}
	return g
}

// wasPlanted says whether something that logs as via took.
func (g *gauntlet) wasPlanted(via string) bool {
	return slices.ContainsFunc(g.planted, func(p string) bool { return strings.Contains(" "+p+" ", via) })
}

// logged returns how many times the planted code ran, and fails the test for every run on any login
// but the app's or the operator's tenant login (or, on a Citus worker, the tenant's role, as the
// coordinator logs in there), as anyone but that login or the tenant's role, and for every escalation
// it achieved.
func (g *gauntlet) logged(t *testing.T, via string) int {
	t.Helper()
	n, role := 0, g.f.schema(g.tenant)
	for _, db := range g.dbs {
		rows, err := db.Query(context.Background(), `SELECT via, session_as, ran_as, escalated, query FROM gauntlet.log
WHERE tenant = $1 AND strpos(via, $2) > 0`, role, via)
		must(t, err)
		logged, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Via, Session, Ran, Escalated, Query string }])
		must(t, err)
		for _, l := range logged {
			if !slices.Contains([]string{g.appLogin, g.worker, role}, l.Session) || (l.Ran != l.Session && l.Ran != role) {
				t.Errorf("planted %q ran on login %q as %q, want the app's login %q or the operator's tenant login %q, as the tenant: %s",
					l.Via, l.Session, l.Ran, g.appLogin, g.worker, l.Query)
			}
			if l.Escalated != "" {
				t.Errorf("planted %q%s: %s", l.Via, l.Escalated, l.Query)
			}
		}
		n += len(logged)
	}
	return n
}

// ran says what of the planted code ran, on which login: for the test's log.
func (g *gauntlet) ran(t *testing.T) string {
	t.Helper()
	var all []string
	for _, db := range g.dbs {
		rows, _ := db.Query(context.Background(), `SELECT DISTINCT via || ' (' || session_as || ')' FROM gauntlet.log WHERE tenant = $1`,
			g.f.schema(g.tenant))
		ran, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		all = append(all, ran...)
	}
	if len(all) == 0 {
		return "nothing"
	}
	slices.Sort(all)
	return strings.Join(slices.Compact(all), "; ")
}

// waitFired waits until the planted code with via in its name has run more than before.
func (g *gauntlet) waitFired(t *testing.T, action, via string, before int) {
	t.Helper()
	if !g.wasPlanted(via) {
		t.Logf("%s: nothing that logs as %q was planted", action, via)
		return
	}
	if err := eventually(30*time.Second, func() error {
		if g.logged(t, via) <= before {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: the planted %q never ran: the gauntlet proves nothing for it (%s: %+v)", action, via, g.tenant,
			g.f.get(g.tenant).Status.Conditions)
	}
}

// escalations checks that nothing the planted code tried took effect: no new role; and the app's login
// and the operator's tenant login raised to nothing, members of nothing they should not be (tenant
// roles; the app's login, for the operator's), with the registry closed to them.
func (g *gauntlet) escalations(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	// The namespace's tenant roles, from the registry (on the home database).
	rows, _ := g.f.db.Query(ctx, `SELECT role_name FROM tenantry.tenants WHERE namespace = $1`, g.f.ns)
	tenantRoles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	if _, err := os.Stat(g.marker()); err == nil {
		t.Errorf("the planted code ran a program on the database server (%s exists)", g.marker())
	}
	for _, db := range g.dbs {
		count := func(query string, args ...any) int {
			t.Helper()
			var n int
			must(t, db.QueryRow(ctx, query, args...).Scan(&n))
			return n
		}
		if n := count(`SELECT count(*) FROM pg_roles WHERE rolname LIKE $1`, g.pwned+"%"); n != 0 {
			t.Errorf("the planted code created %d role(s)", n)
		}
		for _, login := range []string{g.appLogin, g.worker} {
			if n := count(`SELECT count(*) FROM pg_roles WHERE rolname = $1 AND (rolsuper OR rolcreaterole OR rolbypassrls OR rolcreatedb OR rolreplication)`,
				login); n != 0 {
				t.Errorf("%s gained role attributes", login)
			}
			if n := count(`SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) AND r.rolname <> ALL ($2)`,
				login, append([]string{g.appLogin, tenantdb.AppsGroup}, tenantRoles...)); n != 0 {
				t.Errorf("%s became a member of a role that is neither one of its namespace's tenants nor the app's login", login)
			}
			if n := count(`SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace('tenantry') AND relkind = 'r'
AND (has_table_privilege($1, oid, 'INSERT') OR has_table_privilege($1, oid, 'UPDATE') OR has_table_privilege($1, oid, 'DELETE'))`,
				login); n != 0 {
				t.Errorf("%s may write %d table(s) of the registry", login, n)
			}
			if n := count(`SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('tenantry.registry_version')
AND attname = 'migration_secret' AND has_column_privilege($1, attrelid, attname, 'SELECT')`, login); n != 0 {
				t.Errorf("%s may read the registry's migration secret", login)
			}
		}
	}
}

// The gauntlet, driven through onboarding another tenant, an admin reset, usage, drift, a backup and a
// restore of it, a clone, a restore in place, a fleet release, suspend and resume, and deletion with
// Retain and with Delete. It fails on a usage measurement run on
// the admin session (the view over users runs as the admin login and creates a role).
func TestIsolation_plantedCodeGauntlet(t *testing.T) {
	f := newFixture(t)
	runGauntlet(t, f, []*pgxpool.Pool{f.db}, true)
}

// The gauntlet on Citus, where each tenant schema is a distributed schema: the operator's work is routed
// to the tenant's worker, where the coordinator logs in as the tenant's role. dbs are the coordinator's
// database and its workers'.
func TestCitus_plantedCodeGauntlet(t *testing.T) {
	c := citusCluster(t)
	f := newCitusFixture(t)
	dbs := []*pgxpool.Pool{f.db}
	for _, w := range c.Workers {
		pool, err := pgxpool.New(context.Background(), w.URL(pgcluster.CitusDatabase))
		must(t, err)
		t.Cleanup(pool.Close)
		dbs = append(dbs, pool)
	}
	runGauntlet(t, f, dbs, false)
}

// runGauntlet plants the gauntlet in two tenants of f (dbs and views: see plantGauntlet) and drives the
// operator through every action it takes on them.
func runGauntlet(t *testing.T, f *fixture, dbs []*pgxpool.Pool, views bool) {
	ctx := context.Background()
	host := func(name string) string { return name + "." + f.ns + ".gauntlet.test" }
	must(t, k8s.Create(ctx, f.tenant("trap", host("trap"))))
	dropped := f.tenant("trapdel", host("trapdel"))
	dropped.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, dropped))
	f.waitReady("trap")
	f.waitReady("trapdel")
	g := plantGauntlet(t, f, f.appLogin(), dbs, "trap", views)
	gd := plantGauntlet(t, f, f.appLogin(), dbs, "trapdel", views)

	// Onboarding another tenant beside them.
	must(t, k8s.Create(ctx, f.tenant("bystander", host("bystander"))))
	f.waitReady("bystander")

	// An admin reset: the admin Secret is deleted, and the operator writes a new password.
	adminSecret := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "trap" + tenantryv1.AdminSecretSuffix}, adminSecret))
	fired := g.logged(t, "on users")
	must(t, k8s.Delete(ctx, adminSecret))
	if err := eventually(30*time.Second, func() error {
		again := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: adminSecret.Name}, again); err != nil || again.UID == adminSecret.UID {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("admin reset: no new admin Secret (%+v)", f.get("trap").Status.Conditions)
	}
	g.waitFired(t, "admin reset", "on users", fired)
	for _, via := range []string{"check users", "policy users", "default"} {
		if g.wasPlanted(via) && g.logged(t, via) == 0 {
			t.Errorf("admin reset: the planted %q never ran", via)
		}
	}

	// Usage: the last measurement is made two hours old, and the tenant looks again.
	for _, name := range []string{"trap", "trapdel"} {
		tn := f.get(name)
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Status.Usage = &tenantryv1.TenantUsage{MeasuredAt: metav1.NewTime(time.Now().Add(-2 * time.Hour))}
		must(t, k8s.Status().Patch(ctx, tn, patch))
	}
	fired, firedDel := g.logged(t, "view users"), gd.logged(t, "view users")
	pokeAll(t, f, []string{"trap", "trapdel"})
	g.waitFired(t, "usage", "view users", fired)
	gd.waitFired(t, "usage", "view users", firedDel)
	g.waitFired(t, "usage", "view expenses", 0)

	// Drift: the app is asked for a pass over its fleet. The plants
	// are found and called planted code, and the comparison runs none of them. (The usage measurement
	// above has ended first: where no view was planted, nothing above waited for it.)
	for _, name := range []string{"trap", "trapdel"} {
		must(t, eventually(30*time.Second, func() error {
			if u := f.get(name).Status.Usage; u == nil || time.Since(u.MeasuredAt.Time) > time.Hour {
				return errNotYet
			}
			return nil
		}))
	}
	fired = g.logged(t, "")
	f.waitPass(f.askPass())
	for _, name := range []string{"trap", "trapdel"} {
		var d *tenantryv1.TenantDrift
		var c *metav1.Condition
		if err := eventually(10*time.Second, func() error {
			tn := f.get(name)
			d, c = tn.Status.Drift, meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSchemaDrift)
			if d == nil || d.Planted < 5 || c == nil || c.Reason != tenantryv1.ReasonCodePlanted ||
				!slices.Contains(d.Details, "planted function spy(via text) (code the release does not have)") {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Errorf("drift of %s: %+v, SchemaDrift %+v: want the planted code found", name, d, c)
		}
	}
	if ran := g.logged(t, ""); ran != fired {
		t.Errorf("comparing the schemas with the release ran the planted code %d times", ran-fired)
	}

	// A backup of the planted tenant, then a restore of it into a new tenant. The backup reads the
	// schema as the tenant, in a READ ONLY transaction: its forced policy on users runs (as the tenant),
	// and can write nothing, not even to the log (its warnings go to the server's log), so the
	// escalation check at the end is what tells. The restore fills a schema the release's migrations
	// made, where nothing is planted, and leaves out the planted tables that are not the release's.
	f.withObjectStore()
	must(t, k8s.Create(ctx, &tenantryv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "trap-backup"},
		Spec: tenantryv1.BackupSpec{Tenant: tenantryv1.LocalRef{Name: "trap"}}}))
	f.waitBackup("trap-backup", tenantryv1.BackupCompleted)
	f.restoreFrom("trapcopy", "trap-backup")
	f.waitReady("trapcopy")
	t.Logf("restored from the planted tenant's backup: %s",
		meta.FindStatusCondition(f.get("trapcopy").Status.Conditions, tenantryv1.ConditionSourceCopied).Message)
	// A clone of the planted tenant: its snapshot is read as the tenant, in a READ ONLY transaction.
	clone := f.tenant("trapclone", host("trapclone"))
	clone.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "trap"}}
	must(t, k8s.Create(ctx, clone))
	f.waitReady("trapclone")
	// A restore in place of the other planted tenant: the credentials are carried forward from the
	// planted schema as the tenant (its views and policies run, as the tenant, and log), and the swap,
	// the staging schema's making and the kept schema run on the admin session, which reaches nothing
	// inside. The kept schema goes with the tenant's deletion (Delete) below.
	must(t, k8s.Create(ctx, &tenantryv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "trapdel-backup"},
		Spec: tenantryv1.BackupSpec{Tenant: tenantryv1.LocalRef{Name: "trapdel"}}}))
	f.waitBackup("trapdel-backup", tenantryv1.BackupCompleted)
	rs := f.restoreInPlace("trapdel-undo", "trapdel", "trapdel-backup")
	switch {
	case views && rs.Status.Phase != tenantryv1.RestoreCompleted:
		t.Fatalf("the restore in place of a planted tenant: %s", rs.Status.Error)
	case !views && !strings.Contains(rs.Status.Error, "not supported on a Citus coordinator"):
		t.Fatalf("a restore in place on Citus: %s %s, want it refused", rs.Status.Phase, rs.Status.Error)
	}
	kept := rs.Status.PreviousSchema

	// Suspend and resume.
	for _, suspend := range []bool{true, false} {
		tn := f.get("trap")
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.Suspend = suspend
		must(t, k8s.Patch(ctx, tn, patch))
		want := registry.StateActive
		if suspend {
			want = registry.StateSuspended
		}
		must(t, eventually(20*time.Second, func() error {
			if f.count(`SELECT count(*) FROM tenantry.tenants WHERE schema_name = $1 AND state = $2`, f.schema("trap"), want) != 1 {
				return errNotYet
			}
			return nil
		}))
	}
	f.waitReady("trap")

	// A fleet release whose migration writes to users.
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nUPDATE users SET name = name || '';\n")))
	fired = g.logged(t, " on ")
	pokeAll(t, f, []string{"trap", "trapdel", "bystander"})
	// The bystander is released; a planted tenant is released, or its release fails on what was planted
	// (on Citus, an UPDATE under a policy that calls a volatile function), and it stays where it was.
	if err := eventually(30*time.Second, func() error {
		for _, name := range []string{"trap", "trapdel", "bystander"} {
			tn := f.get(name)
			failed := name != "bystander" && meta.IsStatusConditionFalse(tn.Status.Conditions, tenantryv1.ConditionMigrationsApplied) &&
				tn.Status.SchemaVersion == migrations.Latest
			if tn.Status.SchemaVersion != migrations.Latest+1 && !failed {
				return fmt.Errorf("%s: %+v", name, tn.Status.Conditions)
			}
			if failed {
				t.Logf("fleet release: %s", meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMigrationsApplied).Message)
				f.stallExpected = true // the rollout halts on the failed tenants
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("fleet release: %v", err)
	}
	g.waitFired(t, "fleet release", " on ", fired)
	g.waitFired(t, "fleet release", "view goose_db_version", 0)

	// Delete with Delete, then with Retain.
	f.deleteTenant("trapdel")
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)`, []string{f.schema("trapdel"), kept}); n != 0 {
		t.Error("deletionPolicy Delete left the planted tenant's schema, or the one its restore kept")
	}
	f.deleteTenant("trap")
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("trap")); n != 1 {
		t.Error("deletionPolicy Retain dropped the planted tenant's schema")
	}

	// The retained tenant returns (the same namespace and name): the operator takes its planted schema
	// back. It is Ready again, or, where its plants broke its release (Citus), stays at its version.
	must(t, k8s.Create(ctx, f.tenant("trap", host("trap"))))
	if err := eventually(30*time.Second, func() error {
		tn := f.get("trap")
		if meta.IsStatusConditionTrue(tn.Status.Conditions, tenantryv1.ConditionReady) ||
			meta.IsStatusConditionFalse(tn.Status.Conditions, tenantryv1.ConditionMigrationsApplied) && f.stallExpected {
			return nil
		}
		return fmt.Errorf("%+v", tn.Status.Conditions)
	}); err != nil {
		t.Fatalf("the retained planted tenant's return: %v", err)
	}
	t.Logf("the planted code ran %d times: %s", g.logged(t, "")+gd.logged(t, ""), g.ran(t))
	g.escalations(t)
}

// The gauntlet through a move to another server and back. It is planted on each source in turn: at home,
// then on the shard the tenant moved to, once the app's login may act there (before the cut-over the
// target is closed to it: TestShards_moveTargetClosedToTheAppLogin). The copy reads the source with
// row_security off (TestDB_Subscribe_runsNoPolicyOfTheTenant), so the forced policy stops nothing here,
// where the copy reads as a superuser.
func TestIsolation_plantedCodeGauntletThroughMoves(t *testing.T) {
	f := newShardedFixture(t)
	ctx := context.Background()
	f.createOn(tenantryv1.HomeShard, "trapmove", "trapmove.example.com")
	f.waitReady("trapmove")
	moveTo := func(shard string) {
		t.Helper()
		tn := f.get("trapmove")
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.Shard = shard
		must(t, k8s.Patch(ctx, tn, patch))
		if err := eventually(90*time.Second, func() error {
			tn := f.get("trapmove")
			if tn.Status.Shard != shard || meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) != nil {
				return errNotYet
			}
			return nil
		}); err != nil {
			t.Fatalf("the planted tenant never moved to %s: %+v", shard, f.get("trapmove").Status.Conditions)
		}
	}
	home := plantGauntlet(t, f.fixture, f.appLogin(), []*pgxpool.Pool{f.db}, "trapmove", false)
	moveTo("east")
	east := f.shardDB["east"].Config().ConnConfig
	onEast := plantGauntlet(t, f.fixture, f.appLoginTo(func(cfg *pgx.ConnConfig) {
		cfg.Host, cfg.Port, cfg.Database = east.Host, east.Port, east.Database
	}), []*pgxpool.Pool{f.shardDB["east"]}, "trapmove", false)
	moveTo(tenantryv1.HomeShard)
	f.waitReady("trapmove")
	t.Logf("the planted code ran %d times; at home: %s; on east: %s", home.logged(t, "")+onEast.logged(t, ""), home.ran(t), onEast.ran(t))
	home.escalations(t)
	onEast.escalations(t)
}
