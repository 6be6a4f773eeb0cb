package install_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
	"tenantry.dev/tenantry/test/utils/testenv"
)

// prometheusOperator is the Prometheus Operator release whose CRDs (ServiceMonitor, PrometheusRule)
// the monitoring manifests are checked against.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

var (
	restConfig *rest.Config
	k8s        client.Client
	pg         *pgcluster.Throwaway
)

// TestMain starts an API server with no CRDs at all (the chart installs its own) and PostgreSQL.
func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	assets, err := testenv.EnvtestAssets(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	promOp, err := testenv.ModuleDir(prometheusOperator)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	crds := filepath.Join(promOp, "example", "prometheus-operator-crd")
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ErrorIfCRDPathMissing: true, CRDInstallOptions: envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(crds, "monitoring.coreos.com_servicemonitors.yaml"),
			filepath.Join(crds, "monitoring.coreos.com_prometheusrules.yaml")}}}
	if restConfig, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if pg, err = pgcluster.StartThrowaway(); err != nil {
		fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
		return 1
	}
	defer pg.Close()
	if k8s, err = client.New(restConfig, client.Options{Scheme: controller.NewScheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ensureNamespaces creates namespaces that do not exist yet.
func ensureNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// installCRDs applies the chart's CRDs for real and waits until the API serves them.
func installCRDs(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	crds := manifests.Select(objs, "CustomResourceDefinition")
	must(t, manifests.Apply(context.Background(), k8s, "helm", crds))
	must(t, eventually(30*time.Second, func() error {
		for _, c := range crds {
			if _, err := k8s.RESTMapper().RESTMapping(schemaKind(c)); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Every manifest the chart renders with every option on, and every one kustomize builds (the installer,
// the monitoring and the network policies), passes a server-side dry-run against a real API server:
// each is valid for its kind's schema, including the Prometheus Operator's.
func TestManifests_serverSideDryRun(t *testing.T) {
	ctx := context.Background()
	ensureNamespaces(t, releaseNamespace, "team-a", "team-b")
	chart := render(t, everything("team-a", "team-b"))
	installCRDs(t, chart)
	sets := map[string][]*unstructured.Unstructured{"the chart": chart}
	for _, dir := range []string{"default", "prometheus", "grafana", "network-policy"} {
		objs, err := manifests.Kustomize(filepath.Join(root, "config", dir))
		must(t, err)
		for _, o := range objs {
			if o.GetNamespace() == "system" { // set by config/default's namespace when included there
				o.SetNamespace(releaseNamespace)
			}
		}
		sets["config/"+dir] = objs
	}
	kinds := map[string]bool{}
	for name, objs := range sets {
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "Namespace" {
				continue
			}
			kinds[o.GetKind()] = true
			o = o.DeepCopy()
			if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("dry-run"), client.ForceOwnership, client.DryRunAll); err != nil {
				t.Errorf("%s: %s: %v", name, key(o), err)
			}
		}
	}
	for _, want := range []string{"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role", "RoleBinding",
		"ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"} {
		if !kinds[want] {
			t.Errorf("no %s was dry-run", want)
		}
	}
}

// Installed with watchNamespaces, the operator runs as the chart's ServiceAccount with nothing but the
// chart's Roles: it onboards a tenant in a watched namespace, leaves one elsewhere alone, and is
// refused what lies outside its namespaces.
func TestChart_namespaceScopedOperator(t *testing.T) {
	ctx := context.Background()
	watched, other := "scoped-a", "scoped-b"
	ensureNamespaces(t, releaseNamespace, watched, other)
	objs := render(t, map[string]any{"watchNamespaces": []any{watched}})
	installCRDs(t, objs)
	// Metrics authentication, and reading the watched Namespace objects by name.
	if len(manifests.Select(objs, "ClusterRoleBinding")) != 2 {
		t.Fatalf("namespace-scoped chart binds %d ClusterRoles, want 2 (metrics auth, the watched namespaces)", len(manifests.Select(objs, "ClusterRoleBinding")))
	}
	asOperator := startOperator(t, objs, watched)

	url, err := pg.NewDatabase(ctx, "scoped")
	must(t, err)
	must(t, manifests.DeclareDatabase(ctx, k8s, releaseNamespace, "scoped", url, watched, other))
	for _, ns := range []string{watched, other} {
		onboard(t, ns, "scoped")
	}
	waitReady(t, watched, "acme")
	dep := &unstructured.Unstructured{}
	dep.SetAPIVersion("apps/v1")
	dep.SetKind("Deployment")
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: watched, Name: "expenses"}, dep))
	if image, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers"); len(image) == 0 ||
		image[0].(map[string]any)["image"] != "tenantry:test" {
		t.Errorf("an ExpenseApp without spec.image runs %v, want the default app image", image)
	}

	tenant := &tenantryv1.Tenant{}
	must(t, k8s.Get(ctx, client.ObjectKey{Namespace: other, Name: "acme"}, tenant))
	if len(tenant.Status.Conditions) > 0 || len(tenant.Finalizers) > 0 {
		t.Errorf("the operator touched a Tenant outside its namespaces: %+v", tenant.Status)
	}
	c, err := client.New(asOperator, client.Options{Scheme: controller.NewScheme()})
	must(t, err)
	for what, err := range map[string]error{
		"read Secrets in " + other: c.List(ctx, &corev1.SecretList{}, client.InNamespace(other)),
		"list Tenants everywhere":  c.List(ctx, &tenantryv1.TenantList{}),
		"list Secrets everywhere":  c.List(ctx, &corev1.SecretList{}),
		"read Namespace " + other:  c.Get(ctx, client.ObjectKey{Name: other}, &corev1.Namespace{}),
		"list Namespaces":          c.List(ctx, &corev1.NamespaceList{}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the namespace-scoped operator may %s: %v, want Forbidden", what, err)
		}
	}
}

// onboard gives namespace ns an ExpenseApp "expenses" on the ClusterDatabase named database (no
// spec.image: the operator's default) and a Tenant "acme" at acme.<ns>.example.com.
func onboard(t *testing.T, ns, database string) {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "expenses", Namespace: ns},
		Spec: tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{ClusterDatabase: database}}}))
	must(t, k8s.Create(ctx, &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: ns},
		Spec: tenantryv1.TenantSpec{AppRef: tenantryv1.AppRef{Name: "expenses"}, Hosts: []string{"acme." + ns + ".example.com"},
			DisplayName: "Acme in " + ns, Admin: tenantryv1.Admin{Email: "admin@acme.example.com"}}}))
}

// waitReady waits for a Tenant to be Ready.
func waitReady(t *testing.T, ns, name string) {
	t.Helper()
	tenant := &tenantryv1.Tenant{}
	must(t, eventually(60*time.Second, func() error {
		must(t, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, tenant))
		if !meta.IsStatusConditionTrue(tenant.Status.Conditions, tenantryv1.ConditionReady) {
			return fmt.Errorf("tenant %s/%s not Ready: %+v", ns, name, tenant.Status.Conditions)
		}
		return nil
	}))
}

// startOperator runs the operator in this process as the ServiceAccount of the rendered chart objs,
// with nothing but their RBAC applied, watching the namespaces given (none: every namespace), with
// leader election in the release's namespace, until the test ends. It returns the operator's identity
// as a client configuration.
func startOperator(t *testing.T, objs []*unstructured.Unstructured, watch ...string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	id, err := manifests.ApplyIdentity(ctx, k8s, objs)
	must(t, err)
	asOperator := id.Impersonate(restConfig)
	mgr, err := ctrl.NewManager(asOperator, ctrl.Options{Scheme: controller.NewScheme(),
		Cache: controller.CacheOptions(watch...), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		LeaderElection: true, LeaderElectionID: "tenantry.dev", LeaderElectionNamespace: id.Namespace,
		LeaderElectionReleaseOnCancel: true,
		// Each test runs an operator of its own in this one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	must(t, err)
	op, err := controller.Setup(mgr, controller.Config{MaxConcurrentReconciles: 2, DefaultAppImage: "tenantry:test",
		PlatformNamespace: id.Namespace})
	must(t, err)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the operator stopped with %v", err)
		}
		op.Close()
	})
	return asOperator
}

func eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// schemaKind is the group and kind a CRD serves.
func schemaKind(crd *unstructured.Unstructured) schema.GroupKind {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	return schema.GroupKind{Group: group, Kind: kind}
}
