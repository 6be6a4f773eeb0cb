package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/test/utils/manifests"
)

func (f *fixture) getApp() *tenantryv1.ExpenseApp {
	f.t.Helper()
	app := &tenantryv1.ExpenseApp{}
	must(f.t, k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: "expenses"}, app))
	return app
}

// waitApp waits until cond holds for the ExpenseApp, and returns it.
func (f *fixture) waitApp(what string, cond func(*tenantryv1.ExpenseApp) bool) *tenantryv1.ExpenseApp {
	f.t.Helper()
	var app *tenantryv1.ExpenseApp
	if err := eventually(30*time.Second, func() error {
		app = f.getApp()
		if !cond(app) {
			return errNotYet
		}
		return nil
	}); err != nil {
		f.t.Fatalf("ExpenseApp: waiting for %s; status: %+v", what, app.Status)
	}
	return app
}

func (f *fixture) setImage(image string) {
	f.t.Helper()
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Image = image
	must(f.t, k8s.Patch(context.Background(), app, patch))
}

// markRolledOut does what a kubelet and the Deployment controller would: every replica updated and
// available (envtest runs neither). It waits for the Deployment to run the ExpenseApp's image first, so
// that it marks the template the operator wrote last, not one before it.
func (f *fixture) markRolledOut() {
	f.t.Helper()
	dep := &appsv1.Deployment{}
	app := f.getApp()
	must(f.t, eventually(10*time.Second, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: "expenses"}, dep); err != nil {
			return err
		}
		if len(dep.Spec.Template.Spec.Containers) == 0 || dep.Spec.Template.Spec.Containers[0].Image != app.Spec.Image ||
			(app.Spec.Replicas != nil && (dep.Spec.Replicas == nil || *dep.Spec.Replicas != *app.Spec.Replicas)) {
			return fmt.Errorf("the Deployment is not yet the ExpenseApp's (%s)", app.Spec.Image)
		}
		return nil
	}))
	patch := client.MergeFrom(dep.DeepCopy())
	n := *dep.Spec.Replicas
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n,
		ReadyReplicas: n, AvailableReplicas: n}
	must(f.t, k8s.Status().Patch(context.Background(), dep, patch))
}

// kstatusOf computes an object's status the way GitOps tools (Flux, Argo CD via kstatus) do.
func kstatusOf(t *testing.T, obj client.Object) status.Status {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	must(t, err)
	res, err := status.Compute(&unstructured.Unstructured{Object: m})
	must(t, err)
	return res.Status
}

func TestExpenseAppReconciler_install(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("inst", "inst.example.com")))
	f.waitReady("inst")
	f.setImage("tenantry:v1")

	app := f.waitApp("Deployed or waiting for replicas", func(a *tenantryv1.ExpenseApp) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionDeployed)
		return c != nil && a.Status.ObservedGeneration == a.Generation || c != nil && c.Reason == tenantryv1.ReasonProgressing
	})
	if got := kstatusOf(t, app); got != status.InProgressStatus {
		t.Fatalf("kstatus of an app waiting for replicas = %s, want InProgress", got)
	}
	// The app's own login: a Secret with a connection string for a role that is not the admin's.
	sec := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses-app-db"}, sec))
	role := registry.AppRoleName(f.database, f.ns, "expenses")
	if string(sec.Data["username"]) != role || !strings.Contains(string(sec.Data["uri"]), role+":") {
		t.Fatalf("app Secret = %s", sec.Data["uri"])
	}
	// And the key every replica signs its device cookies with.
	if len(sec.Data[deviceKeyKey]) < 40 {
		t.Fatalf("app Secret's %s holds %d bytes, want a key of 40 or more", deviceKeyKey, len(sec.Data[deviceKeyKey]))
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin AND NOT rolinherit AND NOT rolsuper
		AND NOT rolcreaterole AND NOT rolcreatedb`, role); n != 1 {
		t.Fatalf("app role %s is not a plain NOINHERIT login", role)
	}
	// It can act as the tenant, and only by SET ROLE.
	conn, err := pgx.Connect(ctx, string(sec.Data["uri"]))
	must(t, err)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT count(*) FROM `+f.q("inst")+`.users`); err == nil {
		t.Fatal("the app role reads tenant data without SET ROLE")
	}
	tx, err := conn.Begin(ctx)
	must(t, err)
	_, err = tx.Exec(ctx, `SET LOCAL ROLE `+f.q("inst"))
	must(t, err)
	_, err = tx.Exec(ctx, `SELECT count(*) FROM `+f.q("inst")+`.users`)
	must(t, err)
	must(t, tx.Rollback(ctx))

	dep := &appsv1.Deployment{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, dep))
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != "tenantry:v1" || c.Env[0].ValueFrom.SecretKeyRef.Name != "expenses-app-db" || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe.HTTPGet.Path != "/healthz" || !*c.SecurityContext.ReadOnlyRootFilesystem || !*dep.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Fatalf("app container = %+v", c)
	}
	if *dep.Spec.Replicas != 2 {
		t.Fatalf("replicas = %d, want the default 2", *dep.Spec.Replicas)
	}
	svc := &corev1.Service{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, svc))
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Name != "http" || svc.Spec.Ports[1].Name != "metrics" ||
		svc.Spec.Ports[1].TargetPort.StrVal != "metrics" {
		t.Fatalf("service ports = %+v, want http and metrics", svc.Spec.Ports)
	}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, &policyv1.PodDisruptionBudget{}))

	f.markRolledOut()
	app = f.waitApp("Ready", func(a *tenantryv1.ExpenseApp) bool {
		return meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionReady) && a.Status.ObservedGeneration == a.Generation
	})
	if app.Status.Tenants != 1 || app.Status.ReadyTenants != 1 || app.Status.TenantsAtTarget != 1 || app.Status.Migration != "1/1" ||
		app.Status.TargetSchemaVersion != migrations.Latest || app.Status.ReadyReplicas != 2 || app.Status.Image != "tenantry:v1" {
		t.Fatalf("status = %+v", app.Status)
	}
	if got := kstatusOf(t, app); got != status.CurrentStatus {
		t.Fatalf("kstatus of a Ready app = %s, want Current", got)
	}
	if got := kstatusOf(t, f.get("inst")); got != status.CurrentStatus {
		t.Fatalf("kstatus of a Ready tenant = %s, want Current", got)
	}
}

// The app's database Secret follows the admin connection string, and the Deployment rolls whenever
// that Secret changes: a pod never keeps a connection string that no longer works.
func TestExpenseAppReconciler_reconcileDeployment_rollsOnSecretChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.setImage("tenantry:v1")
	appSecret := &corev1.Secret{}
	dep := &appsv1.Deployment{}
	// templateHash waits until the Deployment's template carries the hash of the app Secret as it is now
	// and differs from every hash in old, and returns it.
	templateHash := func(what string, old ...string) string {
		t.Helper()
		var got string
		err := eventually(30*time.Second, func() error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses-app-db"}, appSecret); err != nil {
				return err
			}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, dep); err != nil {
				return err
			}
			got = dep.Spec.Template.Annotations[AnnotationAppSecretHash]
			if got == "" || got != SecretHash(appSecret) {
				return errNotYet
			}
			for _, o := range old {
				if got == o {
					return errNotYet
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: the pod template's %s = %q, want the hash of the current Secret, new", what, AnnotationAppSecretHash, got)
		}
		return got
	}
	first := templateHash("first install")
	firstURI := string(appSecret.Data["uri"])

	// The app Secret is deleted (a leaked password, say): a new password, and the pods roll to it.
	must(t, k8s.Delete(ctx, appSecret))
	second := templateHash("after the app Secret was deleted", first)
	if string(appSecret.Data["uri"]) == firstURI {
		t.Fatal("the re-created app Secret has the old password")
	}
	conn, err := pgx.Connect(ctx, string(appSecret.Data["uri"]))
	must(t, err)
	conn.Close(ctx)

	// The admin Secret moves to another address of the same server: the app's connection string follows.
	admin := &corev1.Secret{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: platformNS, Name: manifests.DatabaseSecret(f.declared("db"))}, admin))
	admin.Data["uri"] = []byte(strings.Replace(string(admin.Data["uri"]), "127.0.0.1", "localhost", 1))
	must(t, k8s.Update(ctx, admin))
	// A Ready app re-reads its database Secret every minute; an annotation makes it look now (the
	// connection string is also cached for a few seconds, so keep asking).
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			app := &tenantryv1.ExpenseApp{}
			if k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, app) == nil {
				patch := client.MergeFrom(app.DeepCopy())
				app.Annotations = map[string]string{"test/poke": fmt.Sprint(i)}
				_ = k8s.Patch(ctx, app, patch)
			}
		}
	}()
	templateHash("after the admin Secret changed", first, second)
	if !strings.Contains(string(appSecret.Data["uri"]), "@localhost:") {
		t.Fatalf("the app Secret did not follow the admin connection string: %s", appSecret.Data["uri"])
	}
	conn, err = pgx.Connect(ctx, string(appSecret.Data["uri"]))
	must(t, err)
	conn.Close(ctx)
}

// An ExpenseApp with Tenants waits for them before it goes: they need its database to clean up. Once
// gone, its login no longer logs in, reads the registry or has a channel: a namespace of the same name
// created later by someone else finds nothing of it working.
func TestExpenseAppReconciler_deletionWaitsForTenants(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("stay", "stay.example.com")))
	f.waitReady("stay")
	login := f.appLogin().Config().User
	must(t, k8s.Delete(ctx, f.getApp()))
	app := f.waitApp("deletion to be blocked", func(a *tenantryv1.ExpenseApp) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionReady)
		return c != nil && c.Reason == tenantryv1.ReasonDeletionBlocked
	})
	if msg := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionReady).Message; !strings.Contains(msg, "stay") {
		t.Fatalf("message %q does not name the tenant", msg)
	}
	must(t, k8s.Delete(ctx, f.get("stay")))
	if err := eventually(20*time.Second, func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, &tenantryv1.ExpenseApp{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errNotYet
	}); err != nil {
		t.Fatal("the ExpenseApp was not deleted once its last Tenant went")
	}
	// Retain: the tenant's schema outlived both.
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, f.schema("stay")); n != 1 {
		t.Fatal("the retained schema is gone")
	}
	if n := f.count(`SELECT count(*) FROM pg_roles WHERE rolname = $1 AND (rolcanlogin OR has_table_privilege(oid, 'tenantry.tenants', 'SELECT'))`,
		login); n != 0 {
		t.Error("the deleted ExpenseApp's login may still log in or read the registry")
	}
	if n := f.count(`SELECT count(*) FROM tenantry.app_channels WHERE namespace = $1`, f.ns); n != 0 {
		t.Error("the deleted ExpenseApp's channel is still announced to")
	}
}

// fleetAtV1 makes Tenants of the names, waits until each is Ready, and rolls the app out at image v1:
// a fleet a release can find.
func (f *fixture) fleetAtV1(names ...string) {
	f.t.Helper()
	for _, n := range names {
		must(f.t, k8s.Create(context.Background(), f.tenant(n, n+".example.com")))
	}
	for _, n := range names {
		f.waitReady(n)
	}
	f.setImage("tenantry:v1")
	f.markRolledOut()
	f.waitApp("Ready at v1", func(a *tenantryv1.ExpenseApp) bool {
		return meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionReady)
	})
}

// A release with a new migration: a canary first, then the fleet; a migration that fails on some
// tenants halts the rollout within the failure budget and leaves their schemas at the last good
// version; the image waits; after the fix the rollout finishes and the image rolls.
func TestFleetMigration(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	names := []string{"fa", "fb", "fc", "fd", "bad1", "bad2"}
	f.fleetAtV1(names...)
	old := migrations.Latest
	defer func() { must(t, release.Set(migrations.FS())) }()

	// The new release's migration fails in the schemas of tenants named bad*.
	broken := releaseWith(t, `-- +goose Up
ALTER TABLE expenses ADD COLUMN receipt_url text;
CREATE INDEX expenses_receipt_idx ON expenses (receipt_url);
DO $$ BEGIN IF current_schema() LIKE 'tenant_bad%' THEN RAISE EXCEPTION 'cannot migrate %', current_schema(); END IF; END $$;
`)
	must(t, release.Set(broken))
	f.setImage("tenantry:v2")
	pokeAll(t, f, names)

	app := f.waitApp("the rollout to halt", func(a *tenantryv1.ExpenseApp) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, tenantryv1.ConditionStalled)
		return c != nil && c.Reason == tenantryv1.ReasonRolloutHalted
	})
	if got := kstatusOf(t, app); got != status.FailedStatus {
		t.Fatalf("kstatus of a halted app = %s, want Failed", got)
	}
	if len(app.Status.FailedTenants) == 0 || !strings.HasPrefix(app.Status.FailedTenants[0], "bad") {
		t.Fatalf("failedTenants = %v", app.Status.FailedTenants)
	}
	msg := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionStalled).Message
	if !strings.Contains(msg, app.Status.FailedTenants[0]) || !strings.Contains(msg, "budget of 0") {
		t.Fatalf("halt message %q", msg)
	}
	bad := f.waitCondition(app.Status.FailedTenants[0], tenantryv1.ConditionStalled, metav1.ConditionTrue, tenantryv1.ReasonMigrationFailed)
	if got := kstatusOf(t, bad); got != status.FailedStatus {
		t.Fatalf("kstatus of a tenant whose migration failed = %s, want Failed", got)
	}
	if c := findCondition(bad, tenantryv1.ConditionReady); !strings.Contains(c.Message, "cannot migrate") {
		t.Fatalf("the failed tenant's message does not carry the migration's error: %q", c.Message)
	}
	for _, n := range []string{"bad1", "bad2"} {
		if v := f.count(`SELECT max(version_id) FROM ` + f.q(n) + `.goose_db_version`); v != int(old) {
			t.Fatalf("%s is at version %d after a failed migration, want the last good %d", n, v, old)
		}
		if n := f.count(`SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'receipt_url'`, f.schema(n)); n != 0 {
			t.Fatal("the failed migration left its column behind")
		}
	}
	// The image waits for the fleet.
	dep := &appsv1.Deployment{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, dep))
	if img := currentImage(dep); img != "tenantry:v1" {
		t.Fatalf("image rolled to %s while tenants are behind", img)
	}

	// Fixed: the rollout continues where it stopped and the image rolls.
	must(t, release.Set(releaseWith(t, `-- +goose Up
ALTER TABLE expenses ADD COLUMN receipt_url text;
CREATE INDEX expenses_receipt_idx ON expenses (receipt_url);
`)))
	pokeAll(t, f, names)
	f.waitApp("every tenant at the new version", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.TenantsAtTarget == int32(len(names)) && a.Status.TargetSchemaVersion == old+1
	})
	for _, n := range names {
		if v := f.count(`SELECT max(version_id) FROM ` + f.q(n) + `.goose_db_version`); v != int(old+1) {
			t.Fatalf("%s at version %d, want %d", n, v, old+1)
		}
	}
	// The canary (the first tenant behind, by name) went first: its migration's transaction began before
	// any other's (goose's tstamp is the transaction's start).
	var canaryDone, othersBegan time.Time
	must(t, f.db.QueryRow(ctx, `SELECT tstamp FROM `+f.q("bad1")+`.goose_db_version WHERE version_id = $1`, old+1).Scan(&canaryDone))
	for _, n := range names[:4] { // fa..fd
		var began time.Time
		must(t, f.db.QueryRow(ctx, `SELECT tstamp FROM `+f.q(n)+`.goose_db_version WHERE version_id = $1`, old+1).Scan(&began))
		if othersBegan.IsZero() || began.Before(othersBegan) {
			othersBegan = began
		}
	}
	if !canaryDone.Before(othersBegan) {
		t.Fatalf("the canary's migration (%s) did not come before the others' (%s)", canaryDone, othersBegan)
	}
	f.waitApp("the new image", func(a *tenantryv1.ExpenseApp) bool { return a.Status.Image == "tenantry:v2" })
	f.markRolledOut()
	f.waitApp("Ready", func(a *tenantryv1.ExpenseApp) bool {
		return meta.IsStatusConditionTrue(a.Status.Conditions, tenantryv1.ConditionReady) && a.Status.Migration == "6/6"
	})
}

// releaseWith is the embedded migrations plus one more.
func releaseWith(t *testing.T, sql string) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	entries, err := fsReadDir(migrations.FS())
	must(t, err)
	for name, data := range entries {
		m[name] = &fstest.MapFile{Data: data}
	}
	m[fmt.Sprintf("%05d_receipts.sql", migrations.Latest+1)] = &fstest.MapFile{Data: []byte(sql)}
	return m
}

// pokeAll makes each Tenant reconcile, as an operator restart with a new release would.
func pokeAll(t *testing.T, f *fixture, names []string) {
	t.Helper()
	for _, n := range names {
		tn := f.get(n)
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Annotations = map[string]string{"poke": time.Now().String()}
		must(t, k8s.Patch(context.Background(), tn, patch))
	}
}

// spec.networkPolicy: the app's pods accept HTTP only from the ingress namespaces and metrics only from
// the metrics namespaces, and reach only the database ports (on its addresses) and DNS; turned off, the
// policy goes. Settings that would let no request in, or name no address, are refused by the API server.
func TestExpenseAppReconciler_networkPolicy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	app := f.getApp()
	refused := func(spec *tenantryv1.NetworkPolicySpec, want string) {
		t.Helper()
		bad := app.DeepCopy()
		bad.Spec.NetworkPolicy = spec
		if err := k8s.Patch(ctx, bad, client.MergeFrom(app)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("networkPolicy %+v: %v, want an error saying %q", spec, err, want)
		}
	}
	refused(&tenantryv1.NetworkPolicySpec{Enabled: true}, "ingressNamespaces must name")
	refused(&tenantryv1.NetworkPolicySpec{Enabled: true, IngressNamespaces: []string{"ingress-nginx"},
		DatabaseCIDRs: []string{"10.0.0.300/8"}}, "must be a CIDR")

	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{Enabled: true, IngressNamespaces: []string{"ingress-nginx"},
		MetricsNamespaces: []string{"monitoring"}, DatabaseCIDRs: []string{"10.10.0.0/16"}}
	must(t, k8s.Patch(ctx, app, patch))
	np := &networkingv1.NetworkPolicy{}
	must(t, eventually(30*time.Second, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, np)
	}))
	s := np.Spec
	if s.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "expenses" || len(s.PolicyTypes) != 2 {
		t.Fatalf("policy selects %v, types %v", s.PodSelector, s.PolicyTypes)
	}
	if len(s.Ingress) != 2 || s.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values[0] != "ingress-nginx" ||
		s.Ingress[0].Ports[0].Port.IntVal != 8080 || s.Ingress[1].Ports[0].Port.IntVal != 9090 ||
		s.Ingress[1].From[0].NamespaceSelector.MatchExpressions[0].Values[0] != "monitoring" {
		t.Fatalf("ingress rules = %+v", s.Ingress)
	}
	if len(s.Egress) != 2 || s.Egress[0].Ports[0].Port.IntVal != 5432 || s.Egress[0].To[0].IPBlock.CIDR != "10.10.0.0/16" ||
		s.Egress[1].Ports[0].Port.IntVal != 53 {
		t.Fatalf("egress rules = %+v", s.Egress)
	}

	app = f.getApp()
	patch = client.MergeFrom(app.DeepCopy())
	app.Spec.NetworkPolicy = nil
	must(t, k8s.Patch(ctx, app, patch))
	must(t, eventually(30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "expenses"}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the NetworkPolicy is still there (%v)", err)
		}
		return nil
	}))
}

// A change of the spec that does not touch the database (replicas here) sends it no SQL: the app's login
// and its grants to every tenant are redone only when its connection string changes.
func TestExpenseAppReconciler_specChangeSendsNoSQL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("quiet", "quiet.example.com")))
	f.waitReady("quiet")
	f.waitUsage("quiet")
	app := f.waitApp("counting its tenant", func(a *tenantryv1.ExpenseApp) bool { return a.Status.Tenants == 1 })
	key := types.NamespacedName{Namespace: f.ns, Name: "expenses"}
	stmts := databases.Statements(key)
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Replicas = ptr.To(int32(3))
	must(t, k8s.Patch(ctx, app, patch))
	f.markRolledOut() // the new replicas: the generation is observed once they are
	f.waitApp("the new generation observed", func(a *tenantryv1.ExpenseApp) bool { return a.Status.ObservedGeneration == a.Generation })
	if got := databases.Statements(key); got != stmts {
		t.Fatalf("changing replicas sent %d SQL statements, want 0", got-stmts)
	}
}

// A status write (the operator's own, or anyone's) starts no reconcile of the ExpenseApp; a change of its
// spec, its annotations or labels does, and so does its deletion.
func TestExpenseAppReconciler_statusWritesStartNoReconcile(t *testing.T) {
	old := &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "n", Generation: 3,
		Annotations: map[string]string{"a": "1"}, Labels: map[string]string{"l": "1"}}}
	changed := func(change func(*tenantryv1.ExpenseApp)) bool {
		updated := old.DeepCopy()
		change(updated)
		return appChanged.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: updated})
	}
	for what, c := range map[string]struct {
		change func(*tenantryv1.ExpenseApp)
		want   bool
	}{
		"a status write": {func(a *tenantryv1.ExpenseApp) {
			a.Status.Migration = "734/1000"
			a.Status.TenantsAtTarget = 734
			meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: tenantryv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Succeeded"})
		}, false},
		"a resync (nothing changed)": {func(*tenantryv1.ExpenseApp) {}, false},
		"a spec change":              {func(a *tenantryv1.ExpenseApp) { a.Generation++ }, true},
		"an annotation":              {func(a *tenantryv1.ExpenseApp) { a.Annotations["a"] = "2" }, true},
		"a label":                    {func(a *tenantryv1.ExpenseApp) { a.Labels["l"] = "2" }, true},
	} {
		if got := changed(c.change); got != c.want {
			t.Errorf("%s: reconcile = %v, want %v", what, got, c.want)
		}
	}
	if !appChanged.Delete(event.DeleteEvent{Object: old}) || !appChanged.Create(event.CreateEvent{Object: old}) {
		t.Error("a created or deleted ExpenseApp is not reconciled")
	}
}

// A tenant's version table changed by hand (a row written into it by its own login, say) disagrees with
// its registry row: the release's rollout counts it as a failure, in plain words, and goes on with the
// others; it never retries it in a loop (which held the whole app's rollout, canaries one at a time).
func TestFleetMigration_versionTableChangedByHand(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	names := []string{"va", "vb"}
	f.fleetAtV1(names...)
	_, err := f.db.Exec(ctx, `INSERT INTO `+f.q("vb")+`.goose_db_version (version_id, is_applied) VALUES (9999, true)`)
	must(t, err)
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nALTER TABLE expenses ADD COLUMN memo text;\n")))
	f.setImage("tenantry:v2")
	f.stallExpected = true
	pokeAll(t, f, names)
	f.waitApp("the rollout to count vb as failed", func(a *tenantryv1.ExpenseApp) bool {
		return slices.Contains(a.Status.FailedTenants, "vb")
	})
	// The tenant is Stalled saying so: by the rollout's failure, or by its own reconcile, which finds the
	// version table ahead of its registry row.
	must(t, eventually(20*time.Second, func() error {
		c := findCondition(f.get("vb"), tenantryv1.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "version table") {
			return fmt.Errorf("Stalled: %+v, want it True, naming the version table", c)
		}
		return nil
	}))
}
