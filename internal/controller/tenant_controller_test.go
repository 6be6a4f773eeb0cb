package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/manifests"
)

// registryRow is what the registry holds for a tenant.
type registryRow struct {
	State, DisplayName string
	Version            int64
	Branding, Settings map[string]any
	Hosts              []string
}

func (f *fixture) registry(schema string) (*registryRow, error) {
	r := &registryRow{}
	err := f.db.QueryRow(context.Background(), `
SELECT state, display_name, schema_version, branding, settings,
       coalesce((SELECT array_agg(host ORDER BY host) FROM tenantry.tenant_hosts h WHERE h.schema_name = t.schema_name), '{}')
FROM tenantry.tenants t WHERE schema_name = $1`, schema).Scan(&r.State, &r.DisplayName, &r.Version, &r.Branding, &r.Settings, &r.Hosts)
	return r, err
}

func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	must(f.t, f.db.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func TestTenantReconciler_provision(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("acme", "acme.example.com", "expenses.acme.com")))
	tn := f.waitReady("acme")

	st := tn.Status
	if st.Schema != f.schema("acme") || st.SchemaVersion != migrations.Latest || st.URL != "http://acme.example.com/" ||
		st.AdminSecretName != "acme-admin" {
		t.Fatalf("status = %+v", st)
	}
	for _, typ := range []string{tenantryv1.ConditionSchemaReady, tenantryv1.ConditionMigrationsApplied,
		tenantryv1.ConditionRegistered, tenantryv1.ConditionRouted, tenantryv1.ConditionAdminReady} {
		f.waitCondition("acme", typ, metav1.ConditionTrue, tenantryv1.ReasonSucceeded)
	}
	for _, typ := range []string{tenantryv1.ConditionReconciling, tenantryv1.ConditionStalled} {
		for _, c := range st.Conditions {
			if c.Type == typ {
				t.Fatalf("a Ready tenant has %s: %+v", typ, c)
			}
		}
	}

	// Database: a NOLOGIN role owning the schema, every migration applied, the registry row.
	if n := f.count(`SELECT count(*) FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
		WHERE n.nspname = $1 AND r.rolname = $1 AND NOT r.rolcanlogin`, f.schema("acme")); n != 1 {
		t.Fatalf("schema %s is not owned by a NOLOGIN role of the same name", f.schema("acme"))
	}
	if n := f.count(`SELECT count(*) FROM ` + f.q("acme") + `.goose_db_version WHERE version_id > 0`); n != int(migrations.Latest) {
		t.Fatalf("%d migrations recorded, want %d", n, migrations.Latest)
	}
	reg, err := f.registry(f.schema("acme"))
	must(t, err)
	if reg.State != registry.StateActive || reg.DisplayName != "Tenant acme" || reg.Version != migrations.Latest ||
		reg.Branding["primaryColor"] != "#0b5fff" || reg.Settings["currency"] != "EUR" ||
		reg.Settings["approvalThreshold"] != float64(50000) ||
		strings.Join(reg.Hosts, ",") != "acme.example.com,expenses.acme.com" {
		t.Fatalf("registry row = %+v", reg)
	}

	// Ingress: owned by the Tenant, one rule per host to the app's Service port "http".
	ing := &networkingv1.Ingress{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "acme"}, ing))
	if len(ing.Spec.Rules) != 2 || ing.Spec.Rules[0].Host != "acme.example.com" || ing.Spec.Rules[1].Host != "expenses.acme.com" {
		t.Fatalf("ingress rules = %+v", ing.Spec.Rules)
	}
	be := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
	if be.Name != "expenses" || be.Port.Name != "http" {
		t.Fatalf("ingress backend = %+v", be)
	}
	if ref := metav1.GetControllerOf(ing); ref == nil || ref.Kind != "Tenant" || ref.UID != tn.UID {
		t.Fatalf("ingress controller reference = %+v", ref)
	}

	// Admin: the Secret's password signs the admin in.
	sec := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "acme-admin"}, sec))
	if string(sec.Data["email"]) != "finance@acme.example.com" || string(sec.Data["url"]) != "http://acme.example.com/" ||
		len(sec.Data["password"]) < 16 {
		t.Fatalf("admin secret = %v", sec.Data)
	}
	var hash, role string
	must(t, f.db.QueryRow(ctx, `SELECT password_hash, role FROM `+f.q("acme")+`.users WHERE email = $1`,
		"finance@acme.example.com").Scan(&hash, &role))
	if ok, err := password.Check(string(sec.Data["password"]), hash); !ok || err != nil || role != "admin" {
		t.Fatalf("admin password from the Secret does not match the user (ok=%v err=%v role=%s)", ok, err, role)
	}
}

// A Ready tenant, once measured, reconciled again sends no SQL and writes nothing to the API server.
func TestTenantReconciler_reconcileReadyIsNoop(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("noop", "noop.example.com")))
	f.waitReady("noop")
	before := f.waitUsage("noop")
	app := types.NamespacedName{Namespace: f.ns, Name: "expenses"}
	stmts := databases.Statements(app)
	if stmts <= 0 {
		t.Fatalf("no statements counted for the app's database (%d)", stmts)
	}
	runs := reconciles(t, "tenant")

	// A metadata change does not bump the generation but does trigger a reconcile.
	patch := client.MergeFrom(before.DeepCopy())
	before.Annotations = map[string]string{"poke": "1"}
	must(t, k8s.Patch(ctx, before, patch))
	if err := eventually(10*time.Second, func() error {
		if reconciles(t, "tenant") <= runs {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatal("no reconcile followed the annotation change")
	}
	// The counter moves when Reconcile has returned, and its status patch happens before it returns.
	if got := databases.Statements(app); got != stmts {
		t.Fatalf("re-reconciling a Ready tenant sent %d SQL statements, want 0", got-stmts)
	}
	after := f.get("noop")
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatalf("re-reconciling changed the Tenant: resourceVersion %s -> %s, status %+v",
			before.ResourceVersion, after.ResourceVersion, after.Status)
	}
}

// Changing hosts, display name, branding, settings or suspend reaches the registry and the Ingress.
func TestTenantReconciler_updateSpec(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("upd", "upd.example.com", "old.upd.com")))
	tn := f.waitReady("upd")

	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.Hosts = []string{"new.upd.com", "upd.example.com"}
	tn.Spec.DisplayName = "Updated Ltd"
	tn.Spec.Branding.PrimaryColor = "#112233"
	tn.Spec.Settings.Currency = "JPY"
	tn.Spec.Suspend = true
	must(t, k8s.Patch(ctx, tn, patch))
	tn = f.waitReady("upd")
	if tn.Status.URL != "http://new.upd.com/" {
		t.Fatalf("url = %q", tn.Status.URL)
	}
	reg, err := f.registry(f.schema("upd"))
	must(t, err)
	if reg.State != registry.StateSuspended || reg.DisplayName != "Updated Ltd" || reg.Branding["primaryColor"] != "#112233" ||
		reg.Settings["currency"] != "JPY" || strings.Join(reg.Hosts, ",") != "new.upd.com,upd.example.com" {
		t.Fatalf("registry row = %+v", reg)
	}
	ing := &networkingv1.Ingress{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "upd"}, ing))
	var hosts []string
	for _, r := range ing.Spec.Rules {
		hosts = append(hosts, r.Host)
	}
	if strings.Join(hosts, ",") != "new.upd.com,upd.example.com" {
		t.Fatalf("ingress hosts = %v", hosts)
	}

	patch = client.MergeFrom(tn.DeepCopy())
	tn.Spec.Suspend = false
	must(t, k8s.Patch(ctx, tn, patch))
	f.waitReady("upd")
	if reg, _ := f.registry(f.schema("upd")); reg.State != registry.StateActive {
		t.Fatalf("state after unsuspend = %q", reg.State)
	}
}

// Two tenants claiming one host: one keeps it, the other stalls with a message naming the host and
// holder, even when both are created at once; the loser goes Ready once the holder lets go.
func TestTenantReconciler_hostConflict(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.tenant("hca", "hca.example.com", "shared.example.com"), f.tenant("hcb", "shared.example.com")
	must(t, k8s.Create(ctx, a))
	must(t, k8s.Create(ctx, b))

	var winner, loser string
	if err := eventually(20*time.Second, func() error {
		ra, rb := readyStatus(f.get("hca")), readyStatus(f.get("hcb"))
		switch {
		case ra == "True" && rb == tenantryv1.ReasonHostConflict:
			winner, loser = "hca", "hcb"
		case rb == "True" && ra == tenantryv1.ReasonHostConflict:
			winner, loser = "hcb", "hca"
		default:
			return fmt.Errorf("hca: %s, hcb: %s", ra, rb)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l := f.waitCondition(loser, tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonHostConflict)
	ready := findCondition(l, tenantryv1.ConditionReady)
	want := fmt.Sprintf(`host "shared.example.com" is already served by tenant %s;`, winner)
	if !strings.Contains(ready.Message, want) {
		t.Fatalf("Ready message %q does not contain %q", ready.Message, want)
	}
	if l.Status.ObservedGeneration != l.Generation {
		t.Fatal("a stalled tenant must report the generation it stalled on")
	}
	if n := f.count(`SELECT count(*) FROM tenantry.tenant_hosts WHERE host = 'shared.example.com'`); n != 1 {
		t.Fatalf("%d rows for the shared host", n)
	}

	must(t, k8s.Delete(ctx, f.get(winner)))
	f.waitReady(loser)

	// A tenant of another namespace on the same database claims the host too: it stalls, it is told
	// the host is taken but not by whom (who else the database serves is not for every namespace to
	// learn), and it gets no Ingress for the host.
	other := f.sibling()
	must(t, k8s.Create(ctx, other.tenant("squatter", "squatter.example.com", "shared.example.com")))
	s := other.waitCondition("squatter", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonHostConflict)
	msg := findCondition(s, tenantryv1.ConditionReady).Message
	if !strings.Contains(msg, "shared.example.com") || strings.Contains(msg, f.ns) || strings.Contains(msg, loser) {
		t.Errorf("the other namespace's tenant is told %q: it must name the host and not its holder", msg)
	}
	var ing networkingv1.Ingress
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: other.ns, Name: "squatter"}, &ing); err == nil {
		for _, rule := range ing.Spec.Rules {
			if rule.Host == "shared.example.com" {
				t.Error("the other namespace's tenant got an Ingress rule for the host another tenant holds")
			}
		}
	}
	if n := f.count(`SELECT count(*) FROM tenantry.tenant_hosts h JOIN tenantry.tenants t USING (schema_name)
WHERE h.host = 'shared.example.com' AND t.namespace = $1 AND t.name = $2`, f.ns, loser); n != 1 {
		t.Error("the holder lost the host to a tenant of another namespace")
	}
}

// Hosts are claimed cluster-wide: a Tenant of another namespace on another database cannot claim a
// host a Tenant holds; it stalls, told no holder, with no registry row and no route for the host, and
// gets the host once the holder lets it go. A claim whose Tenant is gone is taken over. A user with every
// right in one namespace can neither make nor remove a claim.
func TestTenantReconciler_hostsAcrossDatabases(t *testing.T) {
	f, other := newFixture(t), newFixture(t) // two namespaces, two databases
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("owner", "owner.example.com", "shared-x.example.com")))
	owner := f.waitReady("owner")
	must(t, k8s.Create(ctx, other.tenant("squat", "squat.example.com", "shared-x.example.com")))
	s := other.waitCondition("squat", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonHostConflict)
	msg := findCondition(s, tenantryv1.ConditionReady).Message
	if !strings.Contains(msg, "shared-x.example.com") || strings.Contains(msg, f.ns) || strings.Contains(msg, "owner") {
		t.Errorf("the squatter is told %q: it must name the host and not its holder", msg)
	}
	if other.count(`SELECT count(*) FROM pg_class WHERE oid = to_regclass('tenantry.tenants')`) == 1 {
		if n := other.count(`SELECT count(*) FROM tenantry.tenants`); n != 0 {
			t.Errorf("the refused tenant has %d registry row(s) on its database", n)
		}
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: other.ns, Name: "squat"}, &networkingv1.Ingress{}); !apierrors.IsNotFound(err) {
		t.Errorf("the refused tenant has an Ingress: %v", err)
	}
	claim := &tenantryv1.HostClaim{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "shared-x.example.com"}, claim))
	if claim.Spec.Tenant.Namespace != f.ns || claim.Spec.Tenant.Name != "owner" || claim.Spec.Tenant.UID != string(owner.UID) {
		t.Fatalf("the host's claim names %+v, want %s/owner", claim.Spec.Tenant, f.ns)
	}

	// Rights in one namespace, even all of them, reach no claim.
	mallory := namespaceAdmin(t, other.ns)
	for what, err := range map[string]error{
		"create a claim": mallory.Create(ctx, &tenantryv1.HostClaim{ObjectMeta: metav1.ObjectMeta{Name: "owner.example.com"},
			Spec: tenantryv1.HostClaimSpec{Tenant: tenantryv1.HostClaimTenant{Namespace: other.ns, Name: "squat", UID: "x"}}}),
		"delete the owner's claim": mallory.Delete(ctx, claim),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("a user with every right in namespace %s may %s: %v", other.ns, what, err)
		}
	}

	// The owner lets the host go: the squatter gets it, on its own database.
	owner = f.get("owner")
	owner.Spec.Hosts = []string{"owner.example.com"}
	must(t, k8s.Update(ctx, owner))
	other.waitReady("squat")
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "shared-x.example.com"}, claim))
	if claim.Spec.Tenant.Namespace != other.ns || claim.Spec.Tenant.Name != "squat" {
		t.Fatalf("the released host's claim names %+v, want %s/squat", claim.Spec.Tenant, other.ns)
	}

	// A claim left by a Tenant that is gone is taken over.
	must(t, k8s.Create(ctx, &tenantryv1.HostClaim{ObjectMeta: metav1.ObjectMeta{Name: "ghost.example.com"},
		Spec: tenantryv1.HostClaimSpec{Tenant: tenantryv1.HostClaimTenant{Namespace: f.ns, Name: "ghost", UID: "gone"}}}))
	must(t, k8s.Create(ctx, f.tenant("heir2", "ghost.example.com")))
	f.waitReady("heir2")

	// Deleting a Tenant lets its claims go.
	must(t, k8s.Delete(ctx, f.get("owner")))
	must(t, eventually(20*time.Second, func() error {
		var claims tenantryv1.HostClaimList
		must(t, k8s.List(ctx, &claims, client.MatchingLabels{LabelTenantUID: string(owner.UID)}))
		if len(claims.Items) > 0 {
			return fmt.Errorf("%d claim(s) of the deleted tenant remain", len(claims.Items))
		}
		return nil
	}))
}

// namespaceAdmin is a client acting as a user who may do anything in namespace ns, and nothing else.
func namespaceAdmin(t *testing.T, ns string) client.Client {
	t.Helper()
	ctx := context.Background()
	user := "admin-of-" + ns
	must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "everything", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}}))
	must(t, k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "everything", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "everything"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: user}}}))
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: NewScheme()})
	must(t, err)
	return c
}

func readyStatus(t *tenantryv1.Tenant) string {
	c := findCondition(t, tenantryv1.ConditionReady)
	switch {
	case c == nil:
		return "none"
	case c.Status == metav1.ConditionTrue:
		return "True"
	default:
		return c.Reason
	}
}

func findCondition(t *tenantryv1.Tenant, typ string) *metav1.Condition {
	for i := range t.Status.Conditions {
		if t.Status.Conditions[i].Type == typ {
			return &t.Status.Conditions[i]
		}
	}
	return nil
}

// A Tenant created before its ExpenseApp, the app's ClusterDatabase and that one's Secret waits with a
// reason for each, then becomes Ready.
func TestTenantReconciler_missingDependencies(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tn := f.tenant("dep", "dep.example.com")
	tn.Spec.AppRef.Name = "later"
	must(t, k8s.Create(ctx, tn))
	got := f.waitCondition("dep", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonAppNotFound)
	if c := findCondition(got, tenantryv1.ConditionReconciling); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("a waiting tenant should be Reconciling: %+v", got.Status.Conditions)
	}
	if msg := findCondition(got, tenantryv1.ConditionReady).Message; !strings.Contains(msg, `ExpenseApp "later"`) {
		t.Fatalf("message %q does not name the missing ExpenseApp", msg)
	}

	must(t, k8s.Create(ctx, &tenantryv1.ExpenseApp{
		ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: f.ns},
		Spec:       tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{ClusterDatabase: f.declared("later")}},
	}))
	// Foreign Secrets are not watched (the operator caches none), nor are ClusterDatabases by the Tenant
	// controller; a new ExpenseApp generation is, and so is the periodic retry. The app's spec changes so
	// that the test does not wait for the retry.
	replicas := int32(1)
	nudge := func() {
		app := &tenantryv1.ExpenseApp{}
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "later"}, app))
		patch := client.MergeFrom(app.DeepCopy())
		replicas++
		app.Spec.Replicas = &replicas
		must(t, k8s.Patch(ctx, app, patch))
	}
	got = f.waitCondition("dep", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonDatabaseNotDeclared)
	if msg := findCondition(got, tenantryv1.ConditionReady).Message; !strings.Contains(msg, "ClusterDatabase "+f.declared("later")) {
		t.Fatalf("message %q does not name the missing ClusterDatabase", msg)
	}
	// Declared, with its Secret still to come.
	must(t, k8s.Create(ctx, &tenantryv1.ClusterDatabase{ObjectMeta: metav1.ObjectMeta{Name: f.declared("later")},
		Spec: tenantryv1.ClusterDatabaseSpec{SecretRef: tenantryv1.SecretKeyRef{Name: manifests.DatabaseSecret(f.declared("later"))},
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: f.ns}}}}))
	nudge()
	got = f.waitCondition("dep", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonSecretNotFound)
	if msg := findCondition(got, tenantryv1.ConditionReady).Message; !strings.Contains(msg, platformNS+"/"+manifests.DatabaseSecret(f.declared("later"))) {
		t.Fatalf("message %q does not name the missing Secret", msg)
	}
	f.declare("later", f.url)
	nudge()
	f.waitReady("dep")
}

// PostgreSQL down: the tenant says so and retries; when it is back the tenant becomes Ready, and no
// step was done twice.
func TestTenantReconciler_databaseOutage(t *testing.T) {
	if pg.External() {
		t.Skip("TENANTRY_TEST_DATABASE_URL names a server this test must not stop")
	}
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("out1", "out1.example.com")))
	f.waitReady("out1")

	must(t, pg.Stop())
	restarted := false
	defer func() {
		if !restarted {
			_ = pg.Start()
		}
	}()
	must(t, k8s.Create(ctx, f.tenant("out2", "out2.example.com")))
	got := f.waitCondition("out2", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonDatabaseError)
	if c := findCondition(got, tenantryv1.ConditionReconciling); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("a tenant retrying a database error should be Reconciling: %+v", got.Status.Conditions)
	}
	must(t, pg.Start())
	restarted = true
	f.waitReady("out2")
	f.waitReady("out1")

	if n := f.count(`SELECT count(*) FROM ` + f.q("out2") + `.goose_db_version WHERE version_id > 0`); n != int(migrations.Latest) {
		t.Fatalf("%d migration records, want %d (each applied once)", n, migrations.Latest)
	}
	if n := f.count(`SELECT count(*) FROM ` + f.q("out2") + `.users`); n != 1 {
		t.Fatalf("%d users, want the one admin", n)
	}
	if n := f.count(`SELECT count(*) FROM tenantry.tenants WHERE namespace = $1`, f.ns); n != 2 {
		t.Fatalf("%d registry rows, want 2", n)
	}
}

func TestTenantReconciler_deletionPolicy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	keep, drop := f.tenant("keep", "keep.example.com"), f.tenant("drop", "drop.example.com")
	drop.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, keep))
	must(t, k8s.Create(ctx, drop))
	f.waitReady("keep")
	f.waitReady("drop")
	if keep := f.get("keep"); keep.Spec.DeletionPolicy != tenantryv1.DeletionPolicyRetain {
		t.Fatalf("default deletionPolicy = %q, want Retain", keep.Spec.DeletionPolicy)
	}
	_, err := f.db.Exec(ctx, `INSERT INTO `+f.q("keep")+`.departments (name) VALUES ('Research')`)
	must(t, err)

	for _, name := range []string{"keep", "drop"} {
		must(t, k8s.Delete(ctx, f.get(name)))
		if err := eventually(20*time.Second, func() error {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, &tenantryv1.Tenant{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		}); err != nil {
			t.Fatalf("Tenant %s not deleted: %v", name, err)
		}
	}
	// Retain: out of service and routing, its row kept as the record of who owns schema and role; the
	// schema, data and role stay, and no login but the operator's may act as the role.
	if reg, err := f.registry(f.schema("keep")); err != nil || reg.State != registry.StateRetained || len(reg.Hosts) != 0 {
		t.Fatalf("registry row of a retained tenant: %+v, %v; want state retained, no hosts", reg, err)
	}
	if n := f.count(`SELECT count(*) FROM ` + f.q("keep") + `.departments`); n != 1 {
		t.Fatal("Retain lost the tenant's data")
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1`, f.schema("keep")); n != 1 {
		t.Fatal("Retain dropped the tenant's role")
	}
	if n := f.count(`SELECT count(*) FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
		WHERE r.rolname = $1 AND m.rolname <> current_user`, f.schema("keep")); n != 0 {
		t.Fatalf("%d logins may still act as the retained tenant's role", n)
	}
	// Delete: schema, role and registry row are gone.
	if _, err := f.registry(f.schema("drop")); err != pgx.ErrNoRows {
		t.Fatalf("registry row of a deleted tenant: %v", err)
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("drop")); n != 0 {
		t.Fatal("Delete kept the schema")
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1`, f.schema("drop")); n != 0 {
		t.Fatal("Delete kept the role")
	}

	// Creating the retained tenant again brings its data back.
	must(t, k8s.Create(ctx, f.tenant("keep", "keep.example.com")))
	f.waitReady("keep")
	if n := f.count(`SELECT count(*) FROM ` + f.q("keep") + `.departments`); n != 1 {
		t.Fatal("re-created tenant does not see its retained data")
	}
}

// A retained tenant goes back to a Tenant of its own namespace only: the registry row records the
// namespace's UID. One of a namespace created again under the same name (here: a row that says it
// was retained for another UID) stalls, creating nothing, until the platform labels the namespace the
// earlier one's successor; then it gets its data back.
func TestTenantReconciler_retainedForAnEarlierNamespace(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("heir", "heir.example.com")))
	f.waitReady("heir")
	_, err := f.db.Exec(ctx, `INSERT INTO `+f.q("heir")+`.departments (name) VALUES ('Legacy')`)
	must(t, err)
	ns := &corev1.Namespace{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: f.ns}, ns))
	f.deleteTenant("heir")
	must(t, eventually(20*time.Second, func() error {
		if n := f.count(`SELECT count(*) FROM tenantry.tenants WHERE schema_name = $1 AND state = 'retained' AND namespace_uid = $2`,
			f.schema("heir"), string(ns.UID)); n != 1 {
			return fmt.Errorf("no retained row recording namespace UID %s", ns.UID)
		}
		return nil
	}))
	// As if the namespace had been deleted and created again: the row names an earlier UID.
	earlier := "0b9c6d4e-earlier-namespace"
	_, err = f.db.Exec(ctx, `UPDATE tenantry.tenants SET namespace_uid = $1 WHERE schema_name = $2`, earlier, f.schema("heir"))
	must(t, err)

	must(t, k8s.Create(ctx, f.tenant("heir", "heir.example.com")))
	stalled := f.waitCondition("heir", tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonSchemaConflict)
	msg := findCondition(stalled, tenantryv1.ConditionReady).Message
	if !strings.Contains(msg, earlier) || !strings.Contains(msg, LabelAdoptRetainedFrom) {
		t.Errorf("the stalled Tenant is told %q: it must name the earlier UID and the label that hands the data over", msg)
	}
	if n := f.count(`SELECT count(*) FROM tenantry.tenants WHERE schema_name = $1 AND state = 'retained' AND namespace_uid = $2`,
		f.schema("heir"), earlier); n != 1 {
		t.Fatal("the refused Tenant changed the retained row")
	}
	if n := f.count(`SELECT count(*) FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
		WHERE r.rolname = $1 AND m.rolname <> current_user`, f.schema("heir")); n != 0 {
		t.Fatal("a login may act as the retained tenant's role for a Tenant that was refused it")
	}

	// The platform names this namespace the earlier one's successor, and the Tenant is looked at again.
	must(t, k8s.Get(ctx, client.ObjectKey{Name: f.ns}, ns))
	ns.Labels = map[string]string{LabelAdoptRetainedFrom: earlier}
	must(t, k8s.Update(ctx, ns))
	tn := f.get("heir")
	tn.Annotations = map[string]string{"poke": "1"}
	must(t, k8s.Update(ctx, tn))
	f.waitReady("heir")
	if n := f.count(`SELECT count(*) FROM ` + f.q("heir") + `.departments WHERE name = 'Legacy'`); n != 1 {
		t.Fatal("the successor's Tenant does not see its retained data")
	}
	if n := f.count(`SELECT count(*) FROM tenantry.tenants WHERE schema_name = $1 AND namespace_uid = $2`, f.schema("heir"), string(ns.UID)); n != 1 {
		t.Fatal("the row does not record its new namespace's UID")
	}
}

// A 200-character Tenant name gets a valid, unique, stable schema name.
func TestTenantReconciler_longName(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	name := strings.Repeat("x", 190) + "-long-name"
	long := f.tenant(name, "long.example.com")
	long.Spec.DisplayName = ""
	must(t, k8s.Create(ctx, long))
	tn := f.waitReady(name)
	if tn.Status.Schema != f.schema(name) || len(tn.Status.Schema) > 63 {
		t.Fatalf("schema = %q", tn.Status.Schema)
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, tn.Status.Schema); n != 1 {
		t.Fatal("schema not created under its derived name")
	}
}

// The registry's row is what the app reads: read through the app's own query and scanner
// (registry.SelectServed, registry.ScanTenant), it gives back the Tenant's spec, branding and settings
// included.
func TestTenantReconciler_registryJSON(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("js", "js.example.com", "js2.example.com")))
	f.waitReady("js")
	rows, err := f.db.Query(ctx, registry.SelectServed+" AND t.schema_name = $1", f.schema("js"))
	must(t, err)
	read, err := pgx.CollectRows(rows, registry.ScanTenant)
	must(t, err)
	if len(read) != 1 {
		t.Fatalf("the app reads %d rows for the tenant, want 1", len(read))
	}
	got, want := read[0], f.tenant("js", "js.example.com", "js2.example.com").Spec
	if got.Namespace != f.ns || got.Name != "js" || got.DisplayName != want.DisplayName || got.State != registry.StateActive ||
		!slices.Equal(got.Hosts, want.Hosts) {
		t.Errorf("the app reads %+v", got)
	}
	if got.Branding.PrimaryColor != want.Branding.PrimaryColor || got.Branding.LogoURL != want.Branding.LogoURL {
		t.Errorf("branding read as %+v, want %+v", got.Branding, want.Branding)
	}
	if got.Settings.CurrencyOrDefault() != "EUR" || got.Settings.ApprovalThreshold == nil ||
		*got.Settings.ApprovalThreshold != *want.Settings.ApprovalThreshold || !got.Settings.NeedsApproval(50001) {
		t.Errorf("settings read as %+v, want %+v", got.Settings, want.Settings)
	}
}

// Deleting the admin Secret is how a lost admin password is reset: a new Secret appears whose password
// signs the admin in.
func TestTenantReconciler_adminSecretReset(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("reset", "reset.example.com")))
	f.waitReady("reset")
	old := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "reset-admin"}, old))
	must(t, k8s.Delete(ctx, old))
	fresh := &corev1.Secret{}
	if err := eventually(20*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "reset-admin"}, fresh); err != nil {
			return err
		}
		if fresh.UID == old.UID {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("no new admin Secret: %v", err)
	}
	if string(fresh.Data["password"]) == string(old.Data["password"]) {
		t.Fatal("the new Secret has the old password")
	}
	var hash string
	must(t, f.db.QueryRow(ctx, `SELECT password_hash FROM `+f.q("reset")+`.users WHERE email = $1`, "finance@reset.example.com").Scan(&hash))
	if ok, _ := password.Check(string(fresh.Data["password"]), hash); !ok {
		t.Fatal("the new Secret's password does not sign the admin in")
	}
	if ok, _ := password.Check(string(old.Data["password"]), hash); ok {
		t.Fatal("the old password still works")
	}
}

// A Ready tenant whose registry row was removed by hand is registered again when a step next needs its
// database (here, an admin reset): the step gives up, and the registration step of the next reconcile
// registers it. Its schema and data are kept.
func TestTenantReconciler_registryRowRemovedByHand(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("lost", "lost.example.com")))
	schema := f.waitReady("lost").Status.Schema
	_, err := f.db.Exec(ctx, `INSERT INTO `+f.q("lost")+`.departments (name) VALUES ('kept')`)
	must(t, err)
	_, err = f.db.Exec(ctx, `DELETE FROM tenantry.tenants WHERE namespace = $1 AND name = 'lost'`, f.ns)
	must(t, err)
	must(t, k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "lost-admin"}}))
	must(t, eventually(30*time.Second, func() error {
		if n := f.count(`SELECT count(*) FROM tenantry.tenants t JOIN tenantry.tenant_hosts h USING (schema_name)
WHERE t.schema_name = $1 AND t.state = 'active' AND h.host = 'lost.example.com'`, schema); n != 1 {
			return fmt.Errorf("%d active registry rows with the host for schema %s", n, schema)
		}
		return k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "lost-admin"}, &corev1.Secret{})
	}))
	if got := f.waitReady("lost").Status.Schema; got != schema {
		t.Fatalf("schema %s, want the one the tenant had: %s", got, schema)
	}
	if n := f.count(`SELECT count(*) FROM ` + f.q("lost") + `.departments WHERE name = 'kept'`); n != 1 {
		t.Fatal("the tenant's data is gone")
	}
}

// waitUsage waits for a tenant's first usage measurement.
func (f *fixture) waitUsage(name string) *tenantryv1.Tenant {
	f.t.Helper()
	var tn *tenantryv1.Tenant
	must(f.t, eventually(30*time.Second, func() error {
		if tn = f.get(name); tn.Status.Usage == nil {
			return errNotYet
		}
		return nil
	}))
	return tn
}

// A Ready tenant's usage (users, expenses, schema size) appears in its status after it is Ready, never
// before: measuring is no part of onboarding.
func TestTenantReconciler_usage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("meter", "meter.example.com")))
	ready := f.waitReady("meter")
	tn := f.waitUsage("meter")
	u := tn.Status.Usage
	if u.Users != 1 || u.ActiveUsers != 1 || u.Expenses != 0 || u.SchemaBytes <= 0 || time.Since(u.MeasuredAt.Time) > time.Minute {
		t.Fatalf("usage of a new tenant = %+v, want its admin, no expenses and a size", u)
	}
	readyAt := meta.FindStatusCondition(ready.Status.Conditions, tenantryv1.ConditionReady).LastTransitionTime
	if u.MeasuredAt.Before(&readyAt) {
		t.Fatalf("measured at %s, before the tenant was Ready at %s", u.MeasuredAt, readyAt)
	}
}

// An ExpenseApp with spec.gateway routes each tenant through an HTTPRoute on its Gateways instead of an
// Ingress, with the same hosts; a Gateway that refuses the route makes the tenant not Ready, saying why;
// and taking spec.gateway away moves the tenant back to an Ingress, its HTTPRoute gone.
func TestTenantReconciler_gatewayAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Gateway = &tenantryv1.GatewaySpec{HTTPS: true,
		ParentRefs: []tenantryv1.GatewayParentRef{{Name: "shared", Namespace: "gateways", SectionName: "https"}}}
	must(t, k8s.Patch(ctx, app, patch))
	must(t, k8s.Create(ctx, f.tenant("gw", "gw.example.com", "www.gw.example.com")))
	tn := f.waitReady("gw")
	if tn.Status.URL != "https://gw.example.com/" {
		t.Errorf("url = %q, want https (the Gateway terminates TLS)", tn.Status.URL)
	}
	route := &gwapiv1.HTTPRoute{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "gw"}, route))
	if len(route.Spec.Hostnames) != 2 || route.Spec.Hostnames[0] != "gw.example.com" || len(route.Spec.ParentRefs) != 1 ||
		route.Spec.ParentRefs[0].Name != "shared" || *route.Spec.ParentRefs[0].Namespace != "gateways" ||
		*route.Spec.ParentRefs[0].SectionName != "https" || !metav1.IsControlledBy(route, tn) {
		t.Fatalf("HTTPRoute = %+v", route.Spec)
	}
	backend := route.Spec.Rules[0].BackendRefs[0]
	if backend.Name != "expenses" || *backend.Port != 80 {
		t.Fatalf("HTTPRoute backend = %+v, want the app's Service, port 80", backend)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "gw"}, &networkingv1.Ingress{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a tenant routed by a Gateway has an Ingress too: %v", err)
	}

	// The Gateway's controller refuses the route.
	route.Status.Parents = []gwapiv1.RouteParentStatus{{ParentRef: route.Spec.ParentRefs[0], ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "NotAllowedByListeners",
			Message: "listener https allows no routes from this namespace", ObservedGeneration: route.Generation,
			LastTransitionTime: metav1.Now()}}}}
	must(t, k8s.Status().Update(ctx, route))
	tn = f.waitCondition("gw", tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonRouteNotAccepted)
	if c := findCondition(tn, tenantryv1.ConditionReady); c.Status != metav1.ConditionFalse ||
		!strings.Contains(c.Message, "allows no routes from this namespace") {
		t.Fatalf("Ready of a tenant whose route the Gateway refused: %+v", c)
	}

	// Back to Ingress.
	app = f.getApp()
	patch = client.MergeFrom(app.DeepCopy())
	app.Spec.Gateway = nil
	must(t, k8s.Patch(ctx, app, patch))
	must(t, eventually(30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "gw"}, &networkingv1.Ingress{}); err != nil {
			return err
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "gw"}, &gwapiv1.HTTPRoute{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the HTTPRoute is still there (%v)", err)
		}
		return nil
	}))
	if tn = f.waitReady("gw"); tn.Status.URL != "http://gw.example.com/" {
		t.Errorf("url after moving to an Ingress without TLS = %q", tn.Status.URL)
	}
}

// The operator's route policy decides what of an ExpenseApp's routing reaches its tenants' routes:
// configuration snippets and authentication overrides never reach an Ingress (also one planted on the
// tenant's Ingress by hand), nor does a route attach to a Gateway of a namespace the platform did not
// allow; the app is Stalled with NotAllowed, naming what was left out, until its spec stops asking.
func TestTenantReconciler_routePolicy(t *testing.T) {
	f := newFixture(t)
	f.stallExpected = true
	ctx := context.Background()
	setApp := func(mutate func(*tenantryv1.ExpenseApp)) {
		t.Helper()
		app := f.getApp()
		patch := client.MergeFrom(app.DeepCopy())
		mutate(app)
		must(t, k8s.Patch(ctx, app, patch))
	}
	appStalled := func(want ...string) {
		t.Helper()
		app := f.waitApp("Stalled NotAllowed", func(a *tenantryv1.ExpenseApp) bool {
			c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionStalled)
			return c != nil && c.Status == metav1.ConditionTrue && c.Reason == tenantryv1.ReasonNotAllowed && a.Status.ObservedGeneration == a.Generation
		})
		msg := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionStalled).Message
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("the app's Stalled message %q does not name %q", msg, w)
			}
		}
	}
	setApp(func(a *tenantryv1.ExpenseApp) {
		a.Spec.Ingress.Annotations = map[string]string{"nginx.ingress.kubernetes.io/server-snippet": "return 200 'owned';",
			"nginx.ingress.kubernetes.io/auth-url": "http://collector.evil/", "cert-manager.io/cluster-issuer": "letsencrypt"}
	})
	must(t, k8s.Create(ctx, f.tenant("pol", "pol.example.com")))
	f.waitReady("pol")
	onlyIssuer := func() error {
		ing := &networkingv1.Ingress{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "pol"}, ing); err != nil {
			return err
		}
		if len(ing.Annotations) != 1 || ing.Annotations["cert-manager.io/cluster-issuer"] != "letsencrypt" {
			return fmt.Errorf("Ingress annotations %v, want the issuer alone", ing.Annotations)
		}
		return nil
	}
	must(t, onlyIssuer())
	f.markRolledOut()
	appStalled("nginx.ingress.kubernetes.io/server-snippet", "nginx.ingress.kubernetes.io/auth-url")

	// A snippet planted on the tenant's Ingress by hand goes at the next reconcile of the tenant.
	ing := &networkingv1.Ingress{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "pol"}, ing))
	ing.Annotations["nginx.ingress.kubernetes.io/configuration-snippet"] = "more_set_headers 'X: y';"
	must(t, k8s.Update(ctx, ing))
	must(t, eventually(20*time.Second, onlyIssuer))

	// Asking for no more than the policy allows: the app is Ready again.
	setApp(func(a *tenantryv1.ExpenseApp) {
		a.Spec.Ingress.Annotations = map[string]string{"cert-manager.io/cluster-issuer": "letsencrypt"}
	})
	f.markRolledOut()
	f.waitApp("Ready", func(a *tenantryv1.ExpenseApp) bool {
		return meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionReady) && a.Status.ObservedGeneration == a.Generation
	})

	// Gateways: one of an allowed namespace and one of another. The route attaches to the first alone.
	setApp(func(a *tenantryv1.ExpenseApp) {
		a.Spec.Gateway = &tenantryv1.GatewaySpec{ParentRefs: []tenantryv1.GatewayParentRef{
			{Name: "shared", Namespace: "gateways"}, {Name: "theirs", Namespace: "other-team"}}}
	})
	must(t, eventually(20*time.Second, func() error {
		route := &gwapiv1.HTTPRoute{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "pol"}, route); err != nil {
			return err
		}
		if len(route.Spec.ParentRefs) != 1 || string(*route.Spec.ParentRefs[0].Namespace) != "gateways" {
			return fmt.Errorf("HTTPRoute parents %+v, want the Gateway of namespace gateways alone", route.Spec.ParentRefs)
		}
		return nil
	}))
	f.markRolledOut()
	appStalled("other-team/theirs")
	// Only a Gateway of another namespace: the tenant has no route, and says why.
	setApp(func(a *tenantryv1.ExpenseApp) {
		a.Spec.Gateway = &tenantryv1.GatewaySpec{ParentRefs: []tenantryv1.GatewayParentRef{{Name: "theirs", Namespace: "other-team"}}}
	})
	tn := f.waitCondition("pol", tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonNotAllowed)
	if c := findCondition(tn, tenantryv1.ConditionReady); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "--gateway-namespaces") {
		t.Errorf("Ready of a tenant whose Gateways are all refused: %+v", c)
	}
}

// The schema's own version table is the truth, not the registry row. A retained tenant's schema dropped
// by hand (as a DBA freeing space would) comes back, when its Tenant is created again, migrated from
// nothing and Ready, with its first admin; one whose version table was dropped by hand, its tables
// left, is reported in plain words, and comes back once the schema is gone.
func TestTenantReconciler_schemaVersionFromTheSchema(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	target := release.Target()
	for _, name := range []string{"dropped", "unversioned"} {
		must(t, k8s.Create(ctx, f.tenant(name, name+".truth.example.com")))
		f.waitReady(name)
		f.deleteTenant(name)
	}
	_, err := f.db.Exec(ctx, "DROP SCHEMA "+f.q("dropped")+" CASCADE")
	must(t, err)
	_, err = f.db.Exec(ctx, "DROP TABLE "+f.q("unversioned")+"."+tenantdb.VersionTable)
	must(t, err)

	must(t, k8s.Create(ctx, f.tenant("dropped", "dropped.truth.example.com")))
	back := f.waitReady("dropped")
	if c := findCondition(back, tenantryv1.ConditionMigrationsApplied); c.Message != fmt.Sprintf("Schema at version %d", target) {
		t.Errorf("MigrationsApplied says %q, want the release's version %d", c.Message, target)
	}
	if n := f.count(`SELECT count(*) FROM ` + f.q("dropped") + `.users WHERE role = 'admin'`); n != 1 {
		t.Errorf("the schema made anew has %d admin(s), want its first admin", n)
	}

	must(t, k8s.Create(ctx, f.tenant("unversioned", "unversioned.truth.example.com")))
	stalled := f.waitCondition("unversioned", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonSchemaVersionUnknown)
	if msg := findCondition(stalled, tenantryv1.ConditionReady).Message; !strings.Contains(msg, "no version table") ||
		strings.Contains(msg, "SQLSTATE") {
		t.Errorf("the unversioned schema is reported as %q, want plain words", msg)
	}
	// Its data may go: the schema is dropped, and a change of the Tenant brings it back at once.
	_, err = f.db.Exec(ctx, "DROP SCHEMA "+f.q("unversioned")+" CASCADE")
	must(t, err)
	tn := f.get("unversioned")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.DisplayName = "Unversioned, again"
	must(t, k8s.Patch(ctx, tn, patch))
	f.waitReady("unversioned")
}
