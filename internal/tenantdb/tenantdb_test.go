package tenantdb

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/registry"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func register(db *DB, schema, ns, name string, hosts ...string) error {
	_, err := db.Register(context.Background(), Registration{
		Schema: schema, Role: schema, Namespace: ns, Name: name, UID: name + "-uid", DisplayName: name,
		Branding: map[string]string{}, Settings: map[string]string{}, State: registry.StateActive, Hosts: hosts,
	})
	return err
}

func TestDB_Register(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	if err := register(db, "tenant_a", "ns", "a", "a.example.com", "shared.example.com"); err != nil {
		t.Fatal(err)
	}
	// Another tenant asking for a held host gets a conflict naming the host and its holder, and nothing of
	// its registration is written.
	err := register(db, "tenant_b", "ns", "b", "b.example.com", "shared.example.com")
	var hc *HostConflictError
	if !errors.As(err, &hc) || hc.Host != "shared.example.com" || hc.HolderName != "a" || hc.HolderNamespace != "ns" ||
		!strings.Contains(hc.Error(), "tenant a") {
		t.Fatalf("Register(b) = %v, want a host conflict on shared.example.com held by ns/a", err)
	}
	// A tenant of another namespace learns that the host is taken, not by whom.
	err = register(db, "tenant_c", "elsewhere", "c", "shared.example.com")
	if !errors.As(err, &hc) || strings.Contains(err.Error(), "ns") || strings.Contains(err.Error(), "tenant a") {
		t.Fatalf("Register(elsewhere/c) = %v, want a host conflict that names no other namespace", err)
	}
	var n int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM tenantry.tenants WHERE schema_name = 'tenant_b'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("tenant_b rows = %d (%v); a conflicting registration must write nothing", n, err)
	}
	// Another identity asking for a recorded schema is refused, and told nothing of its holder.
	err = register(db, "tenant_a", "other", "a", "x.example.com")
	var sc *SchemaConflictError
	if !errors.As(err, &sc) || strings.Contains(err.Error(), "ns") {
		t.Fatalf("Register(other/a) = %v, want a schema conflict that names no other namespace", err)
	}
	// A registered identity keeps its recorded names whatever a later call derives.
	id, err := db.Register(ctx, Registration{Schema: "tenant_new_name", Role: "tenant_new_name", Namespace: "ns",
		Name: "a", UID: "a-uid", DisplayName: "a", State: registry.StateActive, Hosts: []string{"a.example.com"}})
	if err != nil || id.Schema != "tenant_a" || id.Role != "tenant_a" {
		t.Fatalf("Register(ns/a) again = %+v, %v; want its recorded schema and role tenant_a", id, err)
	}
	// Changing hosts releases the old ones, after which b can take it.
	if err := register(db, "tenant_a", "ns", "a", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := register(db, "tenant_b", "ns", "b", "b.example.com", "shared.example.com"); err != nil {
		t.Fatalf("Register(b) after a released the host: %v", err)
	}
	hosts := hostsOf(t, db, "tenant_b")
	if strings.Join(hosts, ",") != "b.example.com,shared.example.com" {
		t.Fatalf("hosts of b = %v", hosts)
	}
	if err := db.Unregister(ctx, "ns", "b"); err != nil {
		t.Fatal(err)
	}
	if hosts := hostsOf(t, db, "tenant_b"); len(hosts) != 0 {
		t.Fatalf("hosts of an unregistered tenant = %v, want none", hosts)
	}
}

// A retained (or live) row goes back to a registration of the namespace UID it recorded, or of a namespace named
// its successor (by UID, or RetainedLegacy for a row that recorded none); to any other, Register
// returns a *RetainedElsewhereError naming the UID, and writes nothing.
func TestDB_Register_retainedForItsNamespace(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	reg := func(nsUID string, successor *string) error {
		_, err := db.Register(ctx, Registration{Schema: "tenant_r", Role: "tenant_r", Namespace: "ns", Name: "r", UID: "r-uid",
			DisplayName: "r", State: registry.StateActive, Hosts: []string{"r.example.com"}, NamespaceUID: nsUID, Successor: successor})
		return err
	}
	must(t, reg("uid-1", nil))
	must(t, db.Retire(ctx, "ns", "r", "uid-1"))
	must(t, reg("uid-1", nil)) // its own namespace: back
	must(t, db.Retire(ctx, "ns", "r", "uid-1"))

	var re *RetainedElsewhereError
	if err := reg("uid-2", nil); !errors.As(err, &re) || re.NamespaceUID != "uid-1" || re.Schema != "tenant_r" {
		t.Fatalf("Register from a namespace created again: %v, want a RetainedElsewhereError naming uid-1", err)
	}
	var state, uid string
	must(t, db.pool.QueryRow(ctx, `SELECT state, namespace_uid FROM tenantry.tenants WHERE name = 'r'`).Scan(&state, &uid))
	if state != registry.StateRetained || uid != "uid-1" || len(hostsOf(t, db, "tenant_r")) != 0 {
		t.Fatalf("the refused registration wrote: state %s, namespace UID %s, hosts %v", state, uid, hostsOf(t, db, "tenant_r"))
	}
	wrong := "uid-9"
	if err := reg("uid-2", &wrong); !errors.As(err, &re) {
		t.Fatalf("Register naming another namespace as the predecessor: %v, want a RetainedElsewhereError", err)
	}
	right := "uid-1"
	must(t, reg("uid-2", &right))
	must(t, db.pool.QueryRow(ctx, `SELECT namespace_uid FROM tenantry.tenants WHERE name = 'r'`).Scan(&uid))
	if uid != "uid-2" {
		t.Fatalf("the successor's row records namespace UID %s, want uid-2", uid)
	}

	// A row retained before UIDs were recorded goes to a namespace the platform says succeeds it.
	must(t, db.Retire(ctx, "ns", "r", ""))
	_, err := db.pool.Exec(ctx, `UPDATE tenantry.tenants SET namespace_uid = '' WHERE name = 'r'`)
	must(t, err)
	if err := reg("uid-3", nil); !errors.As(err, &re) || re.NamespaceUID != "" || !strings.Contains(err.Error(), RetainedLegacy) {
		t.Fatalf("Register of a row retained without a UID: %v, want a RetainedElsewhereError saying %s", err, RetainedLegacy)
	}
	legacy := RetainedLegacy
	must(t, reg("uid-3", &legacy))
	// A live row (its Tenant's finalizer removed by hand, so never retired) is its namespace's too.
	if err := reg("uid-4", nil); !errors.As(err, &re) || re.NamespaceUID != "uid-3" {
		t.Fatalf("Register of a live row from a namespace created again: %v, want a RetainedElsewhereError naming uid-3", err)
	}
}

// Two tenants claiming one host at the same moment: the unique key lets exactly one win, every time.
func TestDB_Register_race(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	must(t, db.EnsureRegistry(context.Background()))
	for i := range 20 {
		host := fmt.Sprintf("race-%d.example.com", i)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("r%d-%d", i, j)
				errs[j] = register(db, "tenant_"+strings.ReplaceAll(name, "-", "_"), "ns", name, host)
			}()
		}
		wg.Wait()
		var hc *HostConflictError
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.As(err, &hc):
				t.Fatalf("round %d: unexpected error %v", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d tenants won host %s (errors %v), want exactly 1", i, won, host, errs)
		}
	}
}

// A host whose holder lets go of it between another tenant's claim and its check (the holder was
// deleted a moment ago) goes to the tenant asking, which is never told it has a host it does not hold.
// A statement trigger the test plants holds the claimant right after its claim, until the holder let go.
func TestDB_Register_holderLetsGoMidClaim(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	must(t, register(db, "tenant_a", "ns", "a", "shared.example.com"))
	_, err := db.pool.Exec(ctx, `
CREATE FUNCTION public.pause_after_claim() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END$$;
CREATE TRIGGER pause_after_claim AFTER INSERT ON tenantry.tenant_hosts
    FOR EACH STATEMENT EXECUTE FUNCTION public.pause_after_claim();`)
	must(t, err)
	gate, err := db.pool.Acquire(ctx)
	must(t, err)
	defer gate.Release()
	_, err = gate.Exec(ctx, "SELECT pg_advisory_lock(4242)")
	must(t, err)

	claimed := make(chan error, 1)
	go func() { claimed <- register(db, "tenant_b", "other", "b", "shared.example.com") }()
	must(t, waitFor(ctx, db, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`))
	must(t, db.Retire(ctx, "ns", "a", ""))
	_, err = gate.Exec(ctx, "SELECT pg_advisory_unlock(4242)")
	must(t, err)
	if err := <-claimed; err != nil {
		t.Fatalf("Register(b) after a let go of the host: %v", err)
	}
	if hosts := hostsOf(t, db, "tenant_b"); !slices.Equal(hosts, []string{"shared.example.com"}) {
		t.Fatalf("hosts of b = %v: b was registered without the host it asked for", hosts)
	}
}

// waitFor polls a boolean query until it is true, for at most 10 s.
func waitFor(ctx context.Context, db *DB, query string) error {
	for range 1000 {
		var ok bool
		if err := db.pool.QueryRow(ctx, query).Scan(&ok); err != nil || ok {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s: still false after 10 s", query)
}

func hostsOf(t *testing.T, db *DB, schema string) []string {
	t.Helper()
	rows, _ := db.pool.Query(context.Background(),
		"SELECT host FROM tenantry.tenant_hosts WHERE schema_name = $1 ORDER BY host", schema)
	hosts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

func TestDB_EnsureSchemaAndMigrate(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	schema := "tenant_mig_" + fmt.Sprint(len(t.Name()))
	role := newTenantSchema(t, db, schema)
	v, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test")
	if err != nil || v != migrations.Latest {
		t.Fatalf("Migrate = %d, %v; want %d", v, err, migrations.Latest)
	}
	// The tenant role owns what the migrations made, and the role cannot log in.
	var owner string
	var canLogin bool
	if err := db.pool.QueryRow(ctx, `SELECT tableowner, (SELECT rolcanlogin FROM pg_roles WHERE rolname = $1)
		FROM pg_tables WHERE schemaname = $1 AND tablename = 'expenses'`, schema).Scan(&owner, &canLogin); err != nil {
		t.Fatal(err)
	}
	if owner != schema || canLogin {
		t.Fatalf("expenses owned by %q (role can log in: %v), want %q and NOLOGIN", owner, canLogin, schema)
	}
	// Nothing pending: a second run applies nothing and sends no DDL.
	before := db.Statements()
	if v, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test"); err != nil || v != migrations.Latest {
		t.Fatalf("second Migrate = %d, %v", v, err)
	}
	if err := db.EnsureSchema(ctx, schema, role); err != nil {
		t.Fatal(err)
	}
	var applied int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, VersionTable}.Sanitize()+
		" WHERE version_id > 0").Scan(&applied); err != nil || applied != int(migrations.Latest) {
		t.Fatalf("version table holds %d migrations (%v), want %d", applied, err, migrations.Latest)
	}
	t.Logf("an up-to-date schema costs %d statements to check", db.Statements()-before)
}

// A failing migration leaves the schema at the last good version, and after the fix the next run
// continues from there.
func TestDB_Migrate_failureKeepsLastGoodVersion(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	schema := "tenant_broken"
	newTenantSchema(t, db, schema)
	fsys := fstest.MapFS{
		"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (id int);\n")},
		"00002_b.sql": {Data: []byte("-- +goose Up\nCREATE TABLE b (id int);\nINSERT INTO nowhere VALUES (1);\n")},
		"00003_c.sql": {Data: []byte("-- +goose Up\nCREATE TABLE c (id int);\n")},
	}
	v, err := sessionOf(t, db, schema, schema).Migrate(ctx, fsys, "test")
	var me *MigrationError
	if !errors.As(err, &me) || me.Version != 2 || v != 1 {
		t.Fatalf("Migrate = %d, %v; want version 1 and a MigrationError for migration 2", v, err)
	}
	if !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("error %q does not say what failed", err)
	}
	if exists(t, db, schema, "b") {
		t.Fatal("table b exists: the failed migration was not rolled back")
	}
	fsys["00002_b.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE b (id int);\n")}
	if v, err := sessionOf(t, db, schema, schema).Migrate(ctx, fsys, "test"); err != nil || v != 3 {
		t.Fatalf("Migrate after the fix = %d, %v; want 3", v, err)
	}
	if !exists(t, db, schema, "c") {
		t.Fatal("table c missing after the fixed run")
	}
}

func exists(t *testing.T, db *DB, schema, table string) bool {
	t.Helper()
	var ok bool
	if err := db.pool.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = $1 AND tablename = $2)", schema, table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// One tenant's role cannot read another tenant's schema.
func TestDB_tenantIsolation(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	for _, s := range []string{"tenant_iso_a", "tenant_iso_b"} {
		newTenantSchema(t, db, s)
		if _, err := sessionOf(t, db, s, s).Migrate(ctx, migrations.FS(), "test"); err != nil {
			t.Fatal(err)
		}
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE tenant_iso_a`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT count(*) FROM tenant_iso_a.users`); err != nil {
			return fmt.Errorf("own schema: %w", err)
		}
		_, err := tx.Exec(ctx, `SELECT count(*) FROM tenant_iso_b.users`)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("reading tenant_iso_b as tenant_iso_a: %v; want permission denied (42501)", err)
	}
	if !strings.Contains(pgErr.Message, "tenant_iso_b") {
		t.Fatalf("permission error %q does not name the schema", pgErr.Message)
	}
}

func TestDB_DropSchema(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	newTenantSchema(t, db, "tenant_drop")
	if err := db.DropSchema(ctx, "tenant_drop", "tenant_drop"); err != nil {
		t.Fatal(err)
	}
	var schemas int
	_ = db.pool.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_drop'").Scan(&schemas)
	if schemas != 0 {
		t.Fatal("schema still exists")
	}
	var roles int
	_ = db.pool.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = 'tenant_drop'").Scan(&roles)
	if roles != 0 {
		t.Fatal("role still exists")
	}
}

// No more schemas migrate at once than MaxConcurrentMigrations, however many callers ask.
func TestDB_Migrate_maxConcurrent(t *testing.T) {
	db, _ := openTestDB(t, Options{MaxConcurrentMigrations: 2})
	ctx := context.Background()
	slow := fstest.MapFS{"00001_slow.sql": {Data: []byte("-- +goose Up\nSELECT pg_sleep(0.3);\nCREATE TABLE done (id int);\n")}}
	var schemas []string
	for i := range 6 {
		s := fmt.Sprintf("tenant_mc%d", i)
		newTenantSchema(t, db, s)
		schemas = append(schemas, s)
	}
	stop := make(chan struct{})
	peak := make(chan int)
	go func() {
		max := 0
		for {
			select {
			case <-stop:
				peak <- max
				return
			default:
			}
			var n int
			_ = db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
				AND query LIKE '%pg_sleep(0.3)%' AND state = 'active' AND pid <> pg_backend_pid()`).Scan(&n)
			if n > max {
				max = n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for _, s := range schemas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sessionOf(t, db, s, s).Migrate(ctx, slow, "test"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if got := <-peak; got != 2 {
		t.Fatalf("at most %d migrations ran at once, want exactly the limit of 2", got)
	}
}

// Usage counts a schema's users (all and active) and expenses exactly, and measures its size.
func TestDB_Usage(t *testing.T) {
	db, adminURL := openTestDB(t, Options{})
	ctx := context.Background()
	schema := "tenant_usage"
	newTenantSchema(t, db, schema)
	if _, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test"); err != nil {
		t.Fatal(err)
	}
	empty, err := sessionOf(t, db, schema, schema).Usage(ctx)
	must(t, err)
	if empty.Users != 0 || empty.Expenses != 0 || empty.SchemaBytes <= 0 {
		t.Fatalf("usage of a new schema = %+v", empty)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	s := pgx.Identifier{schema}.Sanitize()
	_, err = conn.Exec(ctx, `
INSERT INTO `+s+`.users (email, role, password_hash, active) VALUES ('a@x', 'admin', 'h', true), ('b@x', 'member', 'h', false);
INSERT INTO `+s+`.departments (name) VALUES ('Ops');
INSERT INTO `+s+`.funding_accounts (name, total_minor) VALUES ('Main', 100000);
INSERT INTO `+s+`.budgets (department_id, account_id, month, amount_minor)
  SELECT d.id, a.id, date '2026-11-01', 50000 FROM `+s+`.departments d, `+s+`.funding_accounts a;
INSERT INTO `+s+`.expenses (budget_id, spent_on, description, amount_minor, created_by)
  SELECT b.id, date '2026-11-02', 'Taxi ' || i, 100 * i, u.id FROM `+s+`.budgets b, `+s+`.users u, generate_series(1, 3) i
  WHERE u.email = 'a@x'`)
	must(t, err)
	u, err := sessionOf(t, db, schema, schema).Usage(ctx)
	must(t, err)
	if u.Users != 2 || u.ActiveUsers != 1 || u.Expenses != 3 || u.SchemaBytes < empty.SchemaBytes {
		t.Fatalf("usage = %+v, want 2 users (1 active), 3 expenses, at least %d bytes", u, empty.SchemaBytes)
	}
}

// A migration's connection goes back to the pool as the operator's tenant login, not as the tenant it migrated: the
// next user of that connection (another tenant's migration, a rollout) never starts out as someone else.
func TestDB_Migrate_leavesNoTenantRoleInThePool(t *testing.T) {
	db, _ := openTestDB(t, Options{MaxConcurrentMigrations: 1})
	ctx := context.Background()
	schema := "tenant_pooled"
	newTenantSchema(t, db, schema)
	if _, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test"); err != nil {
		t.Fatal(err)
	}
	pool := db.tenant
	for range pool.Stat().TotalConns() + 1 {
		var user, path string
		must(t, pool.QueryRow(ctx, "SELECT current_user, current_setting('search_path')").Scan(&user, &path))
		if user != db.opts.Worker.Name || strings.Contains(path, schema) {
			t.Fatalf("a pooled connection runs as %q with search_path %q after a migration", user, path)
		}
	}
}

// A publication found under a move's name is used only if the operator made it for this move (its
// mark) and it publishes exactly the tenant's schema and marker row: one made by someone else, or
// publishing something else, is dropped and made anew; the move's own is kept.
func TestDB_Publish_takesOnlyItsOwnPublication(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	schema := "tenant_pub"
	newTenantSchema(t, db, schema)
	_, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test")
	must(t, err)
	name := MoveName(schema)
	t.Cleanup(func() { _ = db.Unpublish(context.Background(), schema) })
	// Planted under the move's name: a publication of the registry.
	_, err = db.pool.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{name}.Sanitize()+" FOR TABLE tenantry.tenants")
	must(t, err)
	published := func() (oid uint32, tables []string) {
		t.Helper()
		must(t, db.pool.QueryRow(ctx, `SELECT p.oid, coalesce(obj_description(p.oid, 'pg_publication'), '') FROM pg_publication p WHERE pubname = $1`,
			name).Scan(&oid, new(string)))
		rows, _ := db.pool.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, name)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		return oid, tables
	}
	mark := MoveMark("test", "pub", time.Unix(1, 0))
	must(t, db.Publish(ctx, schema, mark))
	first, tables := published()
	if slices.Contains(tables, "tenantry.tenants") || !slices.Contains(tables, "tenantry.move_markers") ||
		!slices.Contains(tables, schema+".users") {
		t.Fatalf("after Publish the move's publication publishes %v, want the tenant's tables and the marker only", tables)
	}
	must(t, db.Publish(ctx, schema, mark))
	if again, _ := published(); again != first {
		t.Fatal("the move's own publication was made anew")
	}
	must(t, db.Publish(ctx, schema, MoveMark("test", "pub", time.Unix(2, 0))))
	if other, _ := published(); other == first {
		t.Fatal("another move's publication was kept")
	}
}

// The verifier the operator computes for a password is the one PostgreSQL computes for it, with the
// same salt: the server accepts the password it stands for.
func TestPasswordVerifier_matchesPostgreSQL(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	ctx := context.Background()
	role := "scram_check_" + fmt.Sprint(time.Now().UnixNano()%1e6)
	var want string
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL password_encryption = 'scram-sha-256'; CREATE ROLE "+role+" PASSWORD 'correct horse 42'"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&want)
	})
	must(t, err)
	t.Cleanup(func() { _, _ = db.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	var iterations int
	var salt64 string
	if _, err := fmt.Sscanf(strings.NewReplacer("$", " ", ":", " ").Replace(want), "SCRAM-SHA-256 %d %s", &iterations, &salt64); err != nil {
		t.Fatalf("reading PostgreSQL's verifier %q: %v", want, err)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	must(t, err)
	got, err := scramVerifier("correct horse 42", salt, iterations)
	must(t, err)
	if got != want {
		t.Fatalf("verifier %q, PostgreSQL's %q", got, want)
	}
	if v, err := passwordVerifier("x"); err != nil || !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") {
		t.Fatalf("passwordVerifier = %q, %v", v, err)
	}
}

// What a tenant's code leaves on a tenant session's connection (a setting, a temporary table that would
// stand in for one of another schema's tables) is gone before the connection serves anyone else.
func TestTenantSession_leavesNothingOnTheConnection(t *testing.T) {
	db, _ := openTestDB(t, Options{MaxConcurrentMigrations: 1, StatementTimeout: 7 * time.Second})
	ctx := context.Background()
	schema := "tenant_leftover"
	newTenantSchema(t, db, schema)
	s := sessionOf(t, db, schema, schema)
	must(t, s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SET statement_timeout = 0; CREATE TEMP TABLE users (id int)")
		return err
	}))
	var timeout string
	var temps int
	must(t, db.tenant.QueryRow(ctx, `SELECT current_setting('statement_timeout'),
       (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())`).Scan(&timeout, &temps))
	if timeout != "7s" || temps != 0 {
		t.Fatalf("the next user of the connection finds statement_timeout %q and %d temporary tables, want 7s and none", timeout, temps)
	}
}

// A control schema someone else made first (a login with CREATE on the database, ahead of the
// operator) is refused: the operator would otherwise write to tables whose triggers are theirs.
func TestDB_EnsureRegistry_refusesAForeignControlSchema(t *testing.T) {
	ctx := context.Background()
	adminURL, err := cluster.NewDatabase(ctx, "squat")
	must(t, err)
	conn, err := pgx.Connect(ctx, adminURL)
	must(t, err)
	defer conn.Close(ctx)
	squatter := "squatter_" + conn.Config().Database
	_, err = conn.Exec(ctx, "CREATE ROLE "+squatter+"; GRANT CREATE ON DATABASE "+pgx.Identifier{conn.Config().Database}.Sanitize()+
		" TO "+squatter+"; SET ROLE "+squatter+"; CREATE SCHEMA tenantry; RESET ROLE")
	must(t, err)
	db, err := Open(adminURL, Options{})
	must(t, err)
	defer db.Close()
	if err := db.EnsureRegistry(ctx); err == nil || !strings.Contains(err.Error(), "belongs to "+squatter) {
		t.Fatalf("EnsureRegistry on a control schema another login made = %v, want a refusal naming it", err)
	}
}

// A move's copy reads the source with row_security off: when the login it reads with is subject to row
// security (no SUPERUSER, no BYPASSRLS: a replication login of the platform team's), a policy the tenant
// forced on its own table stops the copy; it never runs the tenant's code as that login.
func TestDB_Subscribe_runsNoPolicyOfTheTenant(t *testing.T) {
	ctx := context.Background()
	src, srcURL := openTestDB(t, Options{})
	tgt, _ := openTestDB(t, Options{})
	schema := "tenant_rls"
	must(t, src.EnsureRegistry(ctx))
	must(t, tgt.EnsureRegistry(ctx))
	role := newTenantSchema(t, src, schema)
	must(t, tgt.EnsureSchema(ctx, schema, role)) // the same server: its role is the source's
	must(t, tgt.GrantWorker(ctx, schema))
	for _, db := range []*DB{src, tgt} {
		_, err := sessionOf(t, db, schema, schema).Migrate(ctx, migrations.FS(), "test")
		must(t, err)
	}
	must(t, sessionOf(t, tgt, schema, schema).EmptyCopy(ctx))
	// Planted by the tenant: a policy forced on its own table, which calls its own function.
	must(t, sessionOf(t, src, schema, schema).inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
CREATE FUNCTION spy() RETURNS boolean LANGUAGE sql AS $f$ SELECT true $f$;
ALTER TABLE departments ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY g_policy ON departments USING (spy())`)
		return err
	}))
	repl := "repl_" + src.Database()
	s := pgx.Identifier{schema}.Sanitize()
	_, err := src.pool.Exec(ctx, "CREATE ROLE "+repl+" LOGIN REPLICATION; GRANT USAGE ON SCHEMA "+s+", tenantry TO "+repl+
		"; GRANT SELECT ON ALL TABLES IN SCHEMA "+s+" TO "+repl+"; GRANT SELECT ON tenantry.move_markers TO "+repl)
	must(t, err)
	must(t, src.Publish(ctx, schema, MoveMark("test", "rls", time.Now())))
	u, err := url.Parse(srcURL)
	must(t, err)
	u.User = url.User(repl)
	must(t, tgt.Subscribe(ctx, schema, u.String()))
	t.Cleanup(func() {
		ctx := context.Background()
		_ = tgt.Unsubscribe(ctx, schema)
		_ = src.Unpublish(ctx, schema)
		_, _ = src.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
WHERE slot_name LIKE 'pg\_%\_sync\_%' AND NOT active AND database = current_database()`)
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ready, total, err := tgt.CopyProgress(ctx, schema)
		must(t, err)
		if total > 0 && ready == total {
			t.Fatal("the copy read the tenant's table through its policy: its code ran as the replication login")
		}
		errs, err := tgt.SubscriptionErrors(ctx, schema)
		must(t, err)
		if errs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the copy neither failed nor finished in 30 s")
		}
	}
}

// row_security=off joins whatever options a connection string already sets, in either of libpq's forms,
// where libpq reads them; a string that would have libpq take options from elsewhere is refused.
func TestRowSecurityOff(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://h/db": "postgres://h/db?options=-c%20row_security%3Doff",
		"postgres://u:p%2Bq@h:5432/db?sslmode=require":   "postgres://u:p%2Bq@h:5432/db?sslmode=require&options=-c%20row_security%3Doff",
		"postgresql://h/db?options=-c%20work_mem%3D64MB": "postgresql://h/db?options=-c%20work_mem%3D64MB%20-c%20row_security%3Doff",
		"postgres://u:pw?x@h/db?sslmode=disable":         "postgres://u:pw?x@h/db?sslmode=disable&options=-c%20row_security%3Doff",
		"postgres://h/db?opt%69ons=-c%20a%3Db":           "postgres://h/db?opt%69ons=-c%20a%3Db%20-c%20row_security%3Doff",
		"host=h dbname=db user=u":                        "host=h dbname=db user=u options='-c row_security=off'",
		"host=h password=nooptions":                      "host=h password=nooptions options='-c row_security=off'",
	} {
		if got, err := rowSecurityOff(in); err != nil || got != want {
			t.Errorf("rowSecurityOff(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"host=h options='-c x=1'", "host=h options = '-c x=1'", "postgres://h/db?options=x&options=-c%20row_security%3Don",
		"postgres://h/db?options=x&opt%69ons=y"} {
		if got, err := rowSecurityOff(in); err == nil {
			t.Errorf("rowSecurityOff(%q) = %q, want it refused", in, got)
		}
	}
}

// The key of goose's lock for a schema on one occasion is the same for every operator of a database
// (the secret is kept in its registry), different on another database or another occasion, and not the
// key the bare name would give.
func TestLockID_secretOfTheDatabase(t *testing.T) {
	ctx := context.Background()
	db, url := openTestDB(t, Options{})
	other, _ := openTestDB(t, Options{})
	again, err := Open(url, Options{AppRole: db.opts.AppRole, Worker: db.opts.Worker})
	must(t, err)
	t.Cleanup(again.Close)
	key := func(db *DB, occasion string) int64 {
		t.Helper()
		s, err := db.Session(ctx, Identity{Schema: "tenant_key", Role: "tenant_key"})
		must(t, err)
		return LockID(s.secret, "tenant_key", occasion)
	}
	if key(db, "uid-1") != key(again, "uid-1") {
		t.Error("two operators of one database derive different keys for one schema and occasion")
	}
	if key(db, "uid-1") == key(other, "uid-1") {
		t.Error("two databases derive the same key for one schema")
	}
	if key(db, "uid-1") == key(db, "uid-2") {
		t.Error("two occasions derive the same key for one schema")
	}
	if key(db, "uid-1") == LockID("", "tenant_key", "uid-1") {
		t.Error("the key is the one the schema's name alone gives")
	}
	var readable bool
	must(t, db.pool.QueryRow(ctx, `SELECT has_column_privilege($1, 'tenantry.registry_version', 'migration_secret', 'SELECT')`,
		appRoleOf(db)).Scan(&readable))
	if readable {
		t.Error("the app's login may read the migration secret")
	}
}

// Two schemas whose names differ only at their end (where a schema name's hash is) get move names of
// their own, within PostgreSQL's 63 bytes.
func TestMoveName_longNamesStayApart(t *testing.T) {
	a := "tenant_" + strings.Repeat("x", 40) + "_aaaaaaaaaaaaaaaa"
	b := "tenant_" + strings.Repeat("x", 40) + "_aaaaaaaaaaaaaaab"
	if MoveName(a) == MoveName(b) || len(MoveName(a)) > 63 || len(MoveName(b)) > 63 {
		t.Fatalf("MoveName(%q) = %q, MoveName(%q) = %q", a, MoveName(a), b, MoveName(b))
	}
	if short := "tenant_acme_0123456789abcdef"; MoveName(short) != "tenantry_move_"+short {
		t.Fatalf("MoveName(%q) = %q", short, MoveName(short))
	}
}

// A move's login is dropped when the move ends. The tenant (or the app's login acting as it) may make
// the server refuse the drop, by granting the login default privileges in another database of the
// server, where the operator's DROP OWNED does not reach: the move's end goes on regardless, and the
// login stays, unable to log in, replicate or bypass row-level security, with no password.
func TestDB_Unpublish_disablesAMoveLoginItCannotDrop(t *testing.T) {
	db, _ := openTestDB(t, Options{})
	other, _ := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	schema := "tenant_stuck_" + db.Database()
	role := newTenantSchema(t, db, schema)
	login, password, err := db.MoveLogin(ctx, schema)
	must(t, err)
	if login != MoveName(schema) || password == "" {
		t.Fatalf("MoveLogin = %q, %q", login, password)
	}
	_, err = other.pool.Exec(ctx, "ALTER DEFAULT PRIVILEGES FOR ROLE "+pgx.Identifier{role.Name}.Sanitize()+
		" GRANT SELECT ON TABLES TO "+pgx.Identifier{login}.Sanitize())
	must(t, err)
	t.Cleanup(func() {
		_, _ = other.pool.Exec(context.Background(), "DROP OWNED BY "+pgx.Identifier{login}.Sanitize())
		_, _ = db.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{login}.Sanitize())
	})
	must(t, db.Unpublish(ctx, schema))
	var canLogin, replication, bypass, hasPassword bool
	must(t, db.pool.QueryRow(ctx, `SELECT rolcanlogin, rolreplication, rolbypassrls, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1`,
		login).Scan(&canLogin, &replication, &bypass, &hasPassword))
	if canLogin || replication || bypass || hasPassword {
		t.Errorf("the move's login left behind: login %v, replication %v, bypassrls %v, password %v; want none",
			canLogin, replication, bypass, hasPassword)
	}
	// Without such a grant it goes entirely.
	_, _ = other.pool.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{login}.Sanitize())
	must(t, db.Unpublish(ctx, schema))
	var n int
	must(t, db.pool.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, login).Scan(&n))
	if n != 0 {
		t.Error("the move's login outlived a move's end that could drop it")
	}
}

// A registry row from before rows named their app gets it when the registry is upgraded: the app whose
// login may act as the row's tenant role, by the operator's mark on that login and of the row's
// namespace. So an existing fleet is read per app without registering every tenant again.
func TestDB_registryUpgrade_recordsTheApp(t *testing.T) {
	db, adminURL := openTestDB(t, Options{})
	ctx := context.Background()
	must(t, db.EnsureRegistry(ctx))
	schema := "tenant_old_" + db.Database()
	newTenantSchema(t, db, schema)
	_, err := db.Register(ctx, Registration{Schema: schema, Role: schema, Namespace: "test", Name: "old", UID: "u",
		DisplayName: "Old", State: "active"})
	must(t, err)
	var app string
	must(t, db.pool.QueryRow(ctx, `SELECT app FROM tenantry.tenants WHERE schema_name = $1`, schema).Scan(&app))
	if app != "" {
		t.Fatalf("a row registered without its app records %q", app)
	}
	// As a registry of the release before: the DDL runs again at the next operator's first use.
	_, err = db.pool.Exec(ctx, `UPDATE tenantry.registry_version SET version = 5`)
	must(t, err)
	again, err := Open(adminURL, db.opts)
	must(t, err)
	t.Cleanup(again.Close)
	must(t, again.EnsureRegistry(ctx))
	must(t, db.pool.QueryRow(ctx, `SELECT app FROM tenantry.tenants WHERE schema_name = $1`, schema).Scan(&app))
	if app != "app" {
		t.Errorf("after the upgrade the row names app %q, want %q (its login's)", app, "app")
	}
}
