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
)

// gauntlet is a tenant with the gauntlet planted in its schema, on one database.
type gauntlet struct {
	f        *fixture
	tenant   string
	db       *pgxpool.Pool // the database's superuser, to read the log and the roles
	appLogin string        // the app's login role
	worker   string        // the operator's tenant login on this database
	pwned    string        // the name of the role spy() tries to create
}

// gauntletLog makes the table the planted code logs to, on the database of db, outside every tenant's
// schema (so that a move's copy, which carries the release's tables only, is not stopped by it): it is
// the test's instrument, not part of the attack, and anyone may write to it.
func gauntletLog(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	_, err := db.Exec(context.Background(), `
CREATE SCHEMA IF NOT EXISTS gauntlet;
CREATE TABLE IF NOT EXISTS gauntlet.log (tenant text, via text, session_as text, ran_as text, escalated text, query text);
GRANT USAGE ON SCHEMA gauntlet TO PUBLIC;
GRANT INSERT ON gauntlet.log TO PUBLIC`)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// plantGauntlet plants, as the app login switched to the tenant's role (what any app pod can do):
//   - views in place of the tables the operator reads and writes (users, expenses, goose's version
//     table), unless movable (a schema whose tables are not the release's cannot be moved);
//   - on every table, triggers of every kind: BEFORE and AFTER, row and statement, TRUNCATE, and
//     triggers enabled ALWAYS and REPLICA (which fire in a subscription's apply worker);
//   - a rule, CHECK constraints and a column default that call spy();
//   - row-level security, forced on the owner, with a policy that calls spy();
//   - functions and an operator named like built-ins in the tenant's schema, to shadow them on its
//     search_path;
//   - default privileges that hand every table the tenant role creates from now on to PUBLIC.
//
// conn is the app's login on the tenant's database, db that database's superuser.
func plantGauntlet(t *testing.T, f *fixture, conn *pgx.Conn, db *pgxpool.Pool, tenant string, movable bool) *gauntlet {
	t.Helper()
	ctx := context.Background()
	gauntletLog(t, db)
	g := &gauntlet{f: f, tenant: tenant, db: db, pwned: "pwned_" + strings.ReplaceAll(f.ns, "-", "_"),
		worker: registry.WorkerRoleName(conn.Config().Database, f.ns, "expenses")}
	must(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&g.appLogin))
	if len(g.pwned) > 50 {
		g.pwned = g.pwned[:50]
	}
	s := f.q(tenant)
	app := pgx.Identifier{g.appLogin}.Sanitize()
	tx, err := conn.Begin(ctx)
	must(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+s+"; SET LOCAL search_path = "+s)
	must(t, err)
	_, err = tx.Exec(ctx, fmt.Sprintf(`
CREATE FUNCTION spy(via text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE escalated text := '';
BEGIN
    BEGIN EXECUTE 'CREATE ROLE %[2]s SUPERUSER'; escalated := escalated || ' created a role;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'ALTER ROLE %[3]s SUPERUSER CREATEROLE BYPASSRLS'; escalated := escalated || ' raised the app login;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'GRANT pg_read_all_data, pg_write_all_data TO %[3]s'; escalated := escalated || ' granted read/write all;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN EXECUTE 'GRANT ALL ON ALL TABLES IN SCHEMA tenantry TO %[3]s'; escalated := escalated || ' opened the registry;';
    EXCEPTION WHEN others THEN NULL; END;
    BEGIN RESET ROLE; EXECUTE 'CREATE ROLE %[2]s_b SUPERUSER'; escalated := escalated || ' created a role after RESET ROLE;';
    EXCEPTION WHEN others THEN NULL; END;
    INSERT INTO gauntlet.log VALUES (%[4]s, via, session_user, current_user, escalated, left(current_query(), 300));
    RETURN true;
END $f$;
CREATE FUNCTION spy_text(via text) RETURNS text LANGUAGE sql AS $f$ SELECT CASE WHEN %[1]s.spy(via) THEN 'planted' END $f$;
CREATE FUNCTION spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM %[1]s.spy(TG_NAME || ' ' || TG_OP || ' on ' || TG_TABLE_NAME);
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $f$;

-- Triggers of every kind on every table.
DO $d$
DECLARE tbl text;
BEGIN
    FOR tbl IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
        EXECUTE format('CREATE TRIGGER g_before_row BEFORE INSERT OR UPDATE OR DELETE ON %%I FOR EACH ROW EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('CREATE TRIGGER g_after_row AFTER INSERT OR UPDATE OR DELETE ON %%I FOR EACH ROW EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('CREATE TRIGGER g_before_stmt BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %%I FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('CREATE TRIGGER g_after_stmt AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %%I FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('CREATE TRIGGER g_always AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %%I FOR EACH STATEMENT EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('ALTER TABLE %%I ENABLE ALWAYS TRIGGER g_always', tbl);
        EXECUTE format('CREATE TRIGGER g_replica BEFORE INSERT OR UPDATE OR DELETE ON %%I FOR EACH ROW EXECUTE FUNCTION spy_trigger()', tbl);
        EXECUTE format('ALTER TABLE %%I ENABLE REPLICA TRIGGER g_replica', tbl);
    END LOOP;
END $d$;

-- A rule, CHECK constraints, a default.
CREATE RULE g_rule AS ON INSERT TO departments DO ALSO SELECT %[1]s.spy('rule');
ALTER TABLE users ADD CONSTRAINT g_check CHECK (%[1]s.spy('check users'));
ALTER TABLE goose_db_version ADD CONSTRAINT g_check CHECK (%[1]s.spy('check goose_db_version'));
ALTER TABLE users ALTER COLUMN created_at SET DEFAULT CASE WHEN %[1]s.spy('default') THEN pg_catalog.now() END;

-- Row-level security, forced on the owner too.
ALTER TABLE users ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY g_policy ON users USING (%[1]s.spy('policy users'));
ALTER TABLE goose_db_version ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY g_policy ON goose_db_version USING (%[1]s.spy('policy goose_db_version'));

-- Built-ins shadowed on the tenant's search_path.
CREATE FUNCTION lower(text) RETURNS text LANGUAGE sql AS $f$ SELECT %[1]s.spy_text('shadow lower') $f$;
CREATE FUNCTION now() RETURNS timestamptz LANGUAGE sql AS $f$ SELECT CASE WHEN %[1]s.spy('shadow now') THEN pg_catalog.now() END $f$;
CREATE FUNCTION set_config(text, text, boolean) RETURNS text LANGUAGE sql AS $f$ SELECT %[1]s.spy_text('shadow set_config') $f$;
CREATE FUNCTION pg_notify(text, text) RETURNS void LANGUAGE sql AS $f$ SELECT %[1]s.spy('shadow pg_notify'); $f$;
CREATE FUNCTION pg_total_relation_size(regclass) RETURNS bigint LANGUAGE sql AS $f$ SELECT CASE WHEN %[1]s.spy('shadow size') THEN 0::bigint END $f$;
CREATE FUNCTION count(text) RETURNS bigint LANGUAGE sql AS $f$ SELECT CASE WHEN %[1]s.spy('shadow count') THEN 0::bigint END $f$;
CREATE FUNCTION g_eq(name, text) RETURNS boolean LANGUAGE sql AS $f$ SELECT %[1]s.spy('shadow operator') $f$;
CREATE OPERATOR = (LEFTARG = name, RIGHTARG = text, FUNCTION = g_eq);

-- Default privileges: whatever the tenant role creates from now on is everyone's.
ALTER DEFAULT PRIVILEGES IN SCHEMA %[1]s GRANT ALL ON TABLES TO PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA %[1]s GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
`, s, g.pwned, app, "'"+g.f.schema(tenant)+"'"))
	must(t, err)
	if !movable {
		// Views in place of the tables the operator reads and writes (the tables keep what was planted
		// on them).
		_, err = tx.Exec(ctx, fmt.Sprintf(`
ALTER TABLE users RENAME TO users_real;
CREATE VIEW users AS SELECT * FROM users_real WHERE %[1]s.spy('view users');
ALTER TABLE expenses RENAME TO expenses_real;
CREATE VIEW expenses AS SELECT e.* FROM expenses_real e, (SELECT %[1]s.spy('view expenses')) AS s;
ALTER TABLE goose_db_version RENAME TO goose_real;
CREATE VIEW goose_db_version AS SELECT * FROM goose_real WHERE %[1]s.spy('view goose_db_version');`, s))
		must(t, err)
	}
	must(t, tx.Commit(ctx))
	return g
}

// logged returns how many times the planted code ran, and fails the test for every run on any login
// but the app's or the operator's tenant login, as anyone but those or the tenant's role, and for
// every escalation it achieved.
func (g *gauntlet) logged(t *testing.T, via string) int {
	t.Helper()
	rows, err := g.db.Query(context.Background(), `SELECT via, session_as, ran_as, escalated, query FROM gauntlet.log
WHERE tenant = $1 AND strpos(via, $2) > 0`, g.f.schema(g.tenant), via)
	must(t, err)
	logged, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Via, Session, Ran, Escalated, Query string }])
	must(t, err)
	for _, l := range logged {
		if (l.Session != g.appLogin && l.Session != g.worker) || (l.Ran != l.Session && l.Ran != g.f.schema(g.tenant)) {
			t.Errorf("planted %q ran on login %q as %q, want the app's login %q or the operator's tenant login %q, as the tenant: %s",
				l.Via, l.Session, l.Ran, g.appLogin, g.worker, l.Query)
		}
		if l.Escalated != "" {
			t.Errorf("planted %q%s: %s", l.Via, l.Escalated, l.Query)
		}
	}
	return len(logged)
}

// ran says what of the planted code ran, on which login: for the test's log.
func (g *gauntlet) ran(t *testing.T) string {
	t.Helper()
	var summary string
	must(t, g.db.QueryRow(context.Background(), `SELECT coalesce(string_agg(DISTINCT via || ' (' || session_as || ')', '; '), 'nothing')
FROM gauntlet.log WHERE tenant = $1`, g.f.schema(g.tenant)).Scan(&summary))
	return summary
}

// waitFired waits until the planted code with via in its name has run more than before.
func (g *gauntlet) waitFired(t *testing.T, action, via string, before int) {
	t.Helper()
	if err := eventually(30*time.Second, func() error {
		if g.logged(t, via) <= before {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: the planted %q never ran: the gauntlet proves nothing for it", action, via)
	}
}

// escalations checks that nothing the planted code tried took effect: no new role; and the app's login
// and the operator's tenant login raised to nothing, members of nothing they should not be (tenant
// roles; the app's login, for the operator's), with the registry closed to them.
func (g *gauntlet) escalations(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	count := func(query string, args ...any) int {
		t.Helper()
		var n int
		must(t, g.db.QueryRow(ctx, query, args...).Scan(&n))
		return n
	}
	if n := count(`SELECT count(*) FROM pg_roles WHERE rolname LIKE $1`, g.pwned+"%"); n != 0 {
		t.Errorf("the planted code created %d role(s)", n)
	}
	// The namespace's tenant roles, from the registry (on the home database).
	rows, _ := g.f.db.Query(ctx, `SELECT role_name FROM tenantry.tenants WHERE namespace = $1`, g.f.ns)
	tenantRoles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	for _, login := range []string{g.appLogin, g.worker} {
		if n := count(`SELECT count(*) FROM pg_roles WHERE rolname = $1 AND (rolsuper OR rolcreaterole OR rolbypassrls OR rolcreatedb OR rolreplication)`,
			login); n != 0 {
			t.Errorf("%s gained role attributes", login)
		}
		if n := count(`SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) AND r.rolname <> $2 AND r.rolname <> ALL ($3)`,
			login, g.appLogin, tenantRoles); n != 0 {
			t.Errorf("%s became a member of a role that is neither one of its namespace's tenants nor the app's login", login)
		}
		if n := count(`SELECT count(*) FROM pg_class WHERE relnamespace = 'tenantry'::regnamespace AND relkind = 'r'
AND (has_table_privilege($1, oid, 'INSERT') OR has_table_privilege($1, oid, 'UPDATE') OR has_table_privilege($1, oid, 'DELETE'))`,
			login); n != 0 {
			t.Errorf("%s may write %d table(s) of the registry", login, n)
		}
	}
}

// The gauntlet, driven through onboarding another tenant, an admin reset, usage, a fleet release,
// suspend and resume, and deletion with Retain and with Delete. It fails on a usage measurement run on
// the admin session (the view over users runs as the admin login and creates a role).
func TestIsolation_plantedCodeGauntlet(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("trap", "trap.example.com")))
	dropped := f.tenant("trapdel", "trapdel.example.com")
	dropped.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, dropped))
	f.waitReady("trap")
	f.waitReady("trapdel")
	g := plantGauntlet(t, f, f.appLogin(""), f.db, "trap", false)
	gd := plantGauntlet(t, f, f.appLogin(""), f.db, "trapdel", false)

	// Onboarding another tenant beside them.
	must(t, k8s.Create(ctx, f.tenant("bystander", "bystander.example.com")))
	f.waitReady("bystander")

	// An admin reset: the admin Secret is deleted, and the operator writes a new password.
	adminSecret := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "trap" + tenantryv1.AdminSecretSuffix}, adminSecret))
	fired := g.logged(t, "on users")
	must(t, k8s.Delete(ctx, adminSecret))
	g.waitFired(t, "admin reset", "on users", fired)
	for _, via := range []string{"check users", "policy users", "default"} {
		if g.logged(t, via) == 0 {
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

	// A fleet release whose migration writes to users.
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nUPDATE users SET name = name || '';\n")))
	fired = g.logged(t, " on ")
	pokeAll(t, f, []string{"trap", "trapdel", "bystander"})
	must(t, eventually(30*time.Second, func() error {
		for _, name := range []string{"trap", "trapdel", "bystander"} {
			if f.get(name).Status.SchemaVersion != migrations.Latest+1 {
				return errNotYet
			}
		}
		return nil
	}))
	g.waitFired(t, "fleet release", " on ", fired)
	g.waitFired(t, "fleet release", "view goose_db_version", 0)

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

	// Delete with Delete, then with Retain.
	f.deleteTenant("trapdel")
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("trapdel")); n != 0 {
		t.Error("deletionPolicy Delete left the planted tenant's schema")
	}
	f.deleteTenant("trap")
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("trap")); n != 1 {
		t.Error("deletionPolicy Retain dropped the planted tenant's schema")
	}
	t.Logf("the planted code ran %d times", g.logged(t, "")+gd.logged(t, ""))
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
	mover := f.tenant("trapmove", "trapmove.example.com")
	mover.Spec.Shard = tenantryv1.HomeShard
	must(t, k8s.Create(ctx, mover))
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
	home := plantGauntlet(t, f.fixture, f.appLogin(""), f.db, "trapmove", true)
	moveTo("east")
	east := f.shardDB["east"].Config().ConnConfig
	onEast := plantGauntlet(t, f.fixture, f.appLoginTo(func(cfg *pgx.ConnConfig) {
		cfg.Host, cfg.Port, cfg.Database = east.Host, east.Port, east.Database
	}), f.shardDB["east"], "trapmove", true)
	moveTo(tenantryv1.HomeShard)
	f.waitReady("trapmove")
	t.Logf("the planted code ran %d times; at home: %s; on east: %s", home.logged(t, "")+onEast.logged(t, ""), home.ran(t), onEast.ran(t))
	home.escalations(t)
	onEast.escalations(t)
}
