package controller

// The adversarial suite: each test plays someone who holds one credential (rights in one namespace,
// the right to write Tenant status, the app's database login) and tries to reach another tenant's data
// or the operator's privileges through the operator. See docs/security.md.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
)

// sibling is another namespace with an ExpenseApp "expenses" on the same database as f: someone with
// rights in a namespace of their own, pointing an app at a database they know.
func (f *fixture) sibling() *fixture {
	f.t.Helper()
	ctx := context.Background()
	s := &fixture{t: f.t, ns: f.ns + "-x", url: f.url, database: f.database, db: f.db}
	must(f.t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}))
	f.t.Cleanup(s.dropTenants)
	s.declare("db", f.url)
	s.app = &tenantryv1.ExpenseApp{
		ObjectMeta: metav1.ObjectMeta{Name: "expenses", Namespace: s.ns},
		Spec:       tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{ClusterDatabase: s.declared("db")}},
	}
	must(f.t, k8s.Create(ctx, s.app))
	return s
}

// appLogin connects with the app's own login of the fixture's ExpenseApp, from its Secret: what a
// compromised app pod holds.
func (f *fixture) appLogin() *pgx.Conn {
	f.t.Helper()
	return f.appLoginTo(func(*pgx.ConnConfig) {})
}

// appLoginAt connects as the app's login to the server on a port of loopback (e.g. a Citus worker).
func (f *fixture) appLoginAt(port int) *pgx.Conn {
	f.t.Helper()
	return f.appLoginTo(func(cfg *pgx.ConnConfig) { cfg.Host, cfg.Port = "127.0.0.1", uint16(port) })
}

func (f *fixture) appLoginTo(adjust func(*pgx.ConnConfig)) *pgx.Conn {
	f.t.Helper()
	sec := &corev1.Secret{}
	must(f.t, eventually(20*time.Second, func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: "expenses-app-db"}, sec)
	}))
	cfg, err := pgx.ParseConfig(string(sec.Data["uri"]))
	must(f.t, err)
	adjust(cfg)
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	must(f.t, err)
	f.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// deleteTenant deletes a Tenant and waits until it is gone.
func (f *fixture) deleteTenant(name string) {
	f.t.Helper()
	ctx := context.Background()
	must(f.t, k8s.Delete(ctx, f.get(name)))
	if err := eventually(20*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, &tenantryv1.Tenant{}); apierrors.IsNotFound(err) {
			return nil
		}
		return errNotYet
	}); err != nil {
		f.t.Fatalf("Tenant %s/%s not deleted", f.ns, name)
	}
}

// setRole tries SET ROLE on conn and returns the error.
func setRole(conn *pgx.Conn, role string) error {
	_, err := conn.Exec(context.Background(), "SET ROLE "+pgx.Identifier{role}.Sanitize())
	if err == nil {
		_, _ = conn.Exec(context.Background(), "RESET ROLE")
	}
	return err
}

func isPermissionDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// A Tenant deleted with Retain, then one of the same name in another namespace on the same database:
// the newcomer gets a schema of its own and never sees, or writes into, the retained one. The owner's
// return in its own namespace brings the data back; the newcomer's Delete drops only its own.
func TestIsolation_sameNameInTwoNamespaces(t *testing.T) {
	owner := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, owner.tenant("acme", "acme.example.com")))
	owner.waitReady("acme")
	_, err := owner.db.Exec(ctx, `INSERT INTO `+owner.q("acme")+`.departments (name) VALUES ('Secret projects')`)
	must(t, err)
	owner.deleteTenant("acme") // Retain

	mallory := owner.sibling()
	evil := mallory.tenant("acme", "acme.example.com")
	evil.Spec.Admin.Email = "mallory@evil.example"
	evil.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, evil))
	got := mallory.waitReady("acme")
	if got.Status.Schema == owner.schema("acme") {
		t.Fatalf("the other namespace's acme took the retained schema %s", got.Status.Schema)
	}
	if n := owner.count(`SELECT count(*) FROM `+owner.q("acme")+`.users WHERE email = $1`, "mallory@evil.example"); n != 0 {
		t.Fatal("the newcomer's admin was written into the retained tenant's users")
	}
	if n := owner.count(`SELECT count(*) FROM ` + mallory.q("acme") + `.departments`); n != 0 {
		t.Fatal("the newcomer sees departments it never made")
	}
	// Its app login cannot act as the retained tenant; neither can the owner's own app login any more.
	if err := setRole(mallory.appLogin(), owner.schema("acme")); !isPermissionDenied(err) {
		t.Fatalf("the other namespace's app login: SET ROLE to the retained tenant = %v, want permission denied", err)
	}
	if err := setRole(owner.appLogin(), owner.schema("acme")); !isPermissionDenied(err) {
		t.Fatalf("a retained tenant's role is still reachable by its app login: %v", err)
	}

	// The owner returns in its own namespace: its data is back. The host is held by the newcomer now.
	mallory.deleteTenant("acme") // Delete: drops the newcomer's schema only
	must(t, k8s.Create(ctx, owner.tenant("acme", "acme.example.com")))
	back := owner.waitReady("acme")
	if back.Status.Schema != owner.schema("acme") {
		t.Fatalf("the returning owner got schema %s, want its retained %s", back.Status.Schema, owner.schema("acme"))
	}
	if n := owner.count(`SELECT count(*) FROM ` + owner.q("acme") + `.departments`); n != 1 {
		t.Fatal("the returning owner does not see its retained data")
	}
	if n := owner.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, mallory.schema("acme")); n != 0 {
		t.Fatal("the newcomer's Delete left its own schema")
	}
}

// Two databases on one server, seen from one namespace: its Tenant "globex" is deleted (Retain: schema
// and role stay) and made again on another database, through another ExpenseApp of the namespace. Roles
// are server-wide, so only the database in the identity's hash keeps the two apart: the new tenant gets
// a role of its own (it is not refused as the retained one's), and the other app's login cannot act as
// the retained role.
func TestIsolation_twoDatabasesOnOneServer(t *testing.T) {
	a, b := newFixture(t), newFixture(t)
	ctx := context.Background()
	a.declare("other-db", b.url)
	must(t, k8s.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: a.ns},
		Spec: tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{ClusterDatabase: a.declared("other-db")}}}))
	must(t, k8s.Create(ctx, a.tenant("globex", "globex-a.example.com")))
	ta := a.waitReady("globex")
	a.deleteTenant("globex")
	again := a.tenant("globex", "globex-b.example.com")
	again.Spec.AppRef.Name = "other"
	must(t, k8s.Create(ctx, again))
	tb := a.waitReady("globex")
	if ta.Status.Schema == tb.Status.Schema {
		t.Fatalf("the tenant on both databases uses role %s", ta.Status.Schema)
	}
	sec := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: "other-app-db"}, sec))
	cfg, err := pgx.ParseConfig(string(sec.Data["uri"]))
	must(t, err)
	cfg.Database = a.database // the other app's login, connected to the first database
	conn, err := pgx.ConnectConfig(ctx, cfg)
	must(t, err)
	defer conn.Close(ctx)
	if err := setRole(conn, ta.Status.Schema); !isPermissionDenied(err) {
		t.Fatalf("the other app's login: SET ROLE to the retained globex = %v, want permission denied", err)
	}
	if _, err := conn.Exec(ctx, `SELECT count(*) FROM `+pgx.Identifier{ta.Status.Schema}.Sanitize()+`.users`); !isPermissionDenied(err) {
		t.Fatalf("the other app's login reading the retained globex: %v, want permission denied", err)
	}
}

// Two ExpenseApps on one database, in two namespaces: app A's login cannot act as app B's tenants.
func TestIsolation_appLoginCannotReachAnotherApp(t *testing.T) {
	a := newFixture(t)
	b := a.sibling()
	ctx := context.Background()
	must(t, k8s.Create(ctx, a.tenant("ta", "ta.example.com")))
	must(t, k8s.Create(ctx, b.tenant("tb", "tb.example.com")))
	a.waitReady("ta")
	b.waitReady("tb")
	if err := setRole(a.appLogin(), b.schema("tb")); !isPermissionDenied(err) {
		t.Fatalf("app A's login: SET ROLE to app B's tenant = %v, want permission denied", err)
	}
	if err := setRole(a.appLogin(), a.schema("ta")); err != nil {
		t.Fatalf("app A's login cannot act as its own tenant: %v", err)
	}
}

// Someone who may write Tenant status points their Tenant at another tenant's schema. The operator acts
// on the schema the registry records for the Tenant's identity: the admin reset writes into the
// attacker's own schema, and a Delete drops only the attacker's schema. (The tampered field itself is
// reported again by the next reconcile that opens the database.)
func TestIsolation_statusTampering(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("victim", "victim.example.com")))
	evil := f.tenant("mallory", "mallory.example.com")
	evil.Spec.Admin.Email = "mallory@evil.example"
	evil.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, evil))
	f.waitReady("victim")
	f.waitReady("mallory")
	tamper := func() {
		t.Helper()
		m := f.get("mallory")
		patch := client.MergeFrom(m.DeepCopy())
		m.Status.Schema = f.schema("victim")
		must(t, k8s.Status().Patch(ctx, m, patch))
	}

	tamper()
	old := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "mallory-admin"}, old))
	must(t, k8s.Delete(ctx, old)) // an admin reset: the operator writes the admin row
	must(t, eventually(20*time.Second, func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "mallory-admin"}, s); err != nil || s.UID == old.UID {
			return errNotYet
		}
		return nil
	}))
	if n := f.count(`SELECT count(*) FROM `+f.q("victim")+`.users WHERE email = $1`, "mallory@evil.example"); n != 0 {
		t.Fatal("the admin reset wrote the attacker's admin into the victim's schema")
	}
	if n := f.count(`SELECT count(*) FROM `+f.q("mallory")+`.users WHERE email = $1`, "mallory@evil.example"); n != 1 {
		t.Fatal("the admin reset did not write the attacker's own schema")
	}

	tamper()
	f.deleteTenant("mallory")
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("victim")); n != 1 {
		t.Fatal("deleting the attacker's Tenant dropped the victim's schema")
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("mallory")); n != 0 {
		t.Fatal("deleting the attacker's Tenant did not drop its own schema")
	}
}

// An installation from before names carried the whole identity: a live tenant keeps its schema and role
// ("tenant_<name>"), because its registry row says it is the same namespace and name, and the role gets
// its owner mark. The same legacy row does not hand the schema to a Tenant of that name elsewhere.
func TestIsolation_legacyNamesAdoptedOnlyByTheirOwner(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	legacy := "tenant_" + strings.ReplaceAll(f.ns, "-", "_") + "_old"
	if len(legacy) > 63 {
		legacy = legacy[len(legacy)-63:]
	}
	q := pgx.Identifier{legacy}.Sanitize()
	// The registry as the operator makes it (its ExpenseApp's reconcile does, under an advisory lock).
	must(t, eventually(20*time.Second, func() error {
		if f.count(`SELECT count(*) FROM pg_tables WHERE schemaname = 'tenantry' AND tablename = 'tenants'`) == 0 {
			return errNotYet
		}
		return nil
	}))
	_, err := f.db.Exec(ctx, `CREATE ROLE `+q+` NOLOGIN; CREATE SCHEMA `+q+` AUTHORIZATION `+q)
	must(t, err)
	_, err = f.db.Exec(ctx, `INSERT INTO tenantry.tenants (schema_name, role_name, namespace, name, uid, display_name, state)
VALUES ($1, $1, $2, 'old', 'uid-of-old', 'Old', 'active')`, legacy, f.ns)
	must(t, err)
	must(t, k8s.Create(ctx, f.tenant("old", "old.example.com")))
	if got := f.waitReady("old"); got.Status.Schema != legacy {
		t.Fatalf("the legacy tenant moved to schema %s, want its own %s", got.Status.Schema, legacy)
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1 AND shobj_description(oid, 'pg_authid') LIKE 'tenantry tenant %'`, legacy); n != 1 {
		t.Fatal("the adopted legacy role carries no owner mark")
	}
	other := f.sibling()
	must(t, k8s.Create(ctx, other.tenant("old", "old-elsewhere.example.com")))
	if got := other.waitReady("old"); got.Status.Schema == legacy {
		t.Fatal("a Tenant of the same name in another namespace took the legacy schema")
	}
}

// A role of a derived name that exists without Tenantry's mark (someone with CREATEROLE made it first,
// to get into the tenant) is not taken: the Tenant stalls, and nothing is granted to the app.
func TestIsolation_foreignRoleNotAdopted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	q := f.q("squat")
	_, err := f.db.Exec(ctx, `CREATE ROLE `+q+` NOLOGIN`)
	must(t, err)
	must(t, k8s.Create(ctx, f.tenant("squat", "squat.example.com")))
	got := f.waitCondition("squat", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonSchemaConflict)
	if c := findCondition(got, tenantryv1.ConditionReady); !strings.Contains(c.Message, "belongs to someone else") {
		t.Fatalf("Ready message %q does not say the role is someone else's", c.Message)
	}
	if n := f.count(`SELECT count(*) FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid WHERE r.rolname = $1`, f.schema("squat")); n != 0 {
		t.Fatalf("%d memberships granted in a role that is not the operator's", n)
	}
}

// The same for the app's login: a role of its derived name that someone else made first stalls the
// ExpenseApp with RoleConflict (not a connection string's InvalidDatabaseURL), and the operator gives
// it no password and no tenant.
func TestIsolation_foreignAppLoginNotAdopted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	squatted := registry.AppRoleName(f.database, f.ns+"-x", "expenses")
	_, err := f.db.Exec(ctx, `CREATE ROLE `+pgx.Identifier{squatted}.Sanitize()+` LOGIN`)
	must(t, err)
	s := f.sibling()
	app := s.waitApp("a stall for the squatted login", func(a *tenantryv1.ExpenseApp) bool {
		return meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionStalled)
	})
	for _, typ := range []string{tenantryv1.ConditionStalled, tenantryv1.ConditionDatabaseReady} {
		if c := meta.FindStatusCondition(app.Status.Conditions, typ); c == nil || c.Reason != tenantryv1.ReasonRoleConflict ||
			!strings.Contains(c.Message, "belongs to someone else") {
			t.Errorf("%s: %+v, want reason %s saying the role belongs to someone else", typ, c, tenantryv1.ReasonRoleConflict)
		}
	}
	if n := f.count(`SELECT count(*) FROM pg_authid WHERE rolname = $1 AND rolpassword IS NOT NULL`, squatted); n != 0 {
		t.Error("the operator set a password on a login that is not its own")
	}
}

// Three ExpenseApps on one database: A in one namespace, B and C in another. Each app's login reads the
// registry rows (tenants and hosts) of its own app's tenants only, and hears only their announcements,
// on a channel named in its own Secret. It cannot read the channels, announce, or re-mark its role as
// another app's, and the channel every app once shared carries nothing.
func TestIsolation_registryPerApp(t *testing.T) {
	a := newFixture(t)
	b := a.sibling()
	ctx := context.Background()
	must(t, k8s.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "second", Namespace: b.ns},
		Spec: tenantryv1.ExpenseAppSpec{Image: "tenantry:test", Database: tenantryv1.DatabaseSpec{ClusterDatabase: b.declared("db")}}}))
	must(t, k8s.Create(ctx, a.tenant("ra", "ra.example.com")))
	must(t, k8s.Create(ctx, b.tenant("rb", "rb.example.com")))
	rc := b.tenant("rc", "rc.example.com")
	rc.Spec.AppRef.Name = "second"
	must(t, k8s.Create(ctx, rc))
	a.waitReady("ra")
	b.waitReady("rb")
	b.waitReady("rc")
	login := b.appLogin()
	rows, err := login.Query(ctx, `SELECT t.namespace || '/' || t.name || ' ' || coalesce(h.host, '') FROM tenantry.tenants t
LEFT JOIN tenantry.tenant_hosts h USING (schema_name)`)
	must(t, err)
	seen, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	if want := []string{b.ns + "/rb rb.example.com"}; !slices.Equal(seen, want) {
		t.Errorf("app B's login reads registry rows %q, want %q", seen, want)
	}
	var hosts int
	must(t, login.QueryRow(ctx, `SELECT count(*) FROM tenantry.tenant_hosts`).Scan(&hosts))
	if hosts != 1 {
		t.Errorf("app B's login reads %d host rows, want its tenant's 1", hosts)
	}
	for what, sql := range map[string]string{
		"read the channels": `SELECT channel FROM tenantry.app_channels`,
		"announce":          `SELECT tenantry.announce('` + a.ns + `', '', 'x')`,
		"re-mark its own login": `COMMENT ON ROLE ` + pgx.Identifier{login.Config().User}.Sanitize() + ` IS 'tenantry app ` +
			a.database + `/` + b.ns + `/second'`,
	} {
		if _, err := login.Exec(ctx, sql); !isPermissionDenied(err) {
			t.Errorf("app B's login may %s: %v", what, err)
		}
	}

	// B listens on its own channel and on the one every app once shared; A's and C's tenants change,
	// then B's.
	bSecret := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: "expenses-app-db"}, bSecret))
	own := string(bSecret.Data[channelKey])
	listener := b.appLogin()
	for _, ch := range []string{own, "tenantry_tenants"} {
		_, err := listener.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize())
		must(t, err)
	}
	rename := func(f *fixture, name, display string) {
		tn := f.get(name)
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.DisplayName = display
		must(t, k8s.Patch(ctx, tn, patch))
	}
	// A's and C's changes are in the registry (and announced) before B's is made: B would hear them first.
	for _, other := range []struct {
		f    *fixture
		name string
	}{{a, "ra"}, {b, "rc"}} {
		rename(other.f, other.name, "Renamed")
		must(t, eventually(20*time.Second, func() error {
			if other.f.count(`SELECT count(*) FROM tenantry.tenants WHERE schema_name = $1 AND display_name = 'Renamed'`,
				other.f.schema(other.name)) != 1 {
				return errNotYet
			}
			return nil
		}))
	}
	rename(b, "rb", "Renamed B")
	for {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("app B never heard of its own tenant's change: %v", err)
		}
		if n.Channel != own || n.Payload != b.schema("rb") {
			t.Fatalf("app B heard %q on channel %q, want only its own tenant %q on its own channel (A's is %q, C's %q)",
				n.Payload, n.Channel, b.schema("rb"), a.schema("ra"), b.schema("rc"))
		}
		if n.Payload == b.schema("rb") {
			break
		}
	}
}
