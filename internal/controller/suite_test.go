package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
	"tenantry.dev/tenantry/test/utils/testenv"
)

// The suite runs the operator against a real API server (envtest) and a real PostgreSQL cluster.
var (
	k8s        client.Client // uncached, so tests see what the API server has
	pg         *pgcluster.Throwaway
	databases  *Databases
	release    *Release     // the operator's migrations: a test may stage a new release
	restConfig *rest.Config // the API server's admin
	metricsURL string       // the suite's operator's /metrics (plain HTTP)
	asOperator *rest.Config // the API server as the operator's ServiceAccount
	platformNS string       // the operator's namespace, which holds the ClusterDatabases' Secrets
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) (code int) {
	if os.Getenv("TENANTRY_TEST_VERBOSE") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	}
	assets, err := testenv.EnvtestAssets(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The Gateway API's CRDs too, from the module whose Go types the operator uses.
	gatewayAPI, err := testenv.ModuleDir(testenv.GatewayAPI)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gwCRDs := filepath.Join(gatewayAPI, "config", "crd", "standard")
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases"),
			filepath.Join(gwCRDs, "gateway.networking.k8s.io_gatewayclasses.yaml"),
			filepath.Join(gwCRDs, "gateway.networking.k8s.io_gateways.yaml"),
			filepath.Join(gwCRDs, "gateway.networking.k8s.io_httproutes.yaml")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	restConfig = cfg
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()

	if pg, err = pgcluster.StartThrowaway(); err != nil {
		fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
		return 1
	}
	defer pg.Close()

	// The operator runs as the ServiceAccount config/default gives it, bound to exactly the Roles that
	// ship: a permission it lacks fails these tests, as it would fail in a cluster.
	if k8s, err = client.New(cfg, client.Options{Scheme: NewScheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	asOperator, platformNS, err = operatorIdentity(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "giving the operator its identity:", err)
		return 1
	}
	metricsPort, err := pgcluster.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", metricsPort)
	metricsURL = "http://" + metricsAddr + "/metrics"
	mgr, err := ctrl.NewManager(asOperator, ctrl.Options{
		Scheme:                 NewScheme(),
		Cache:                  CacheOptions(),
		Metrics:                MetricsOptions(metricsAddr, false),
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the manager:", err)
		return 1
	}
	// The operator's own route policy, which also lets routes attach to the Gateways of "gateways"; its
	// databases only from ClusterDatabases, as the chart's default is.
	op, err := Setup(mgr, Config{MaxConcurrentReconciles: 4, UsageInterval: time.Hour, DriftInterval: time.Hour, FirstCheckDelay: time.Second,
		RoutePolicy:       &RoutePolicy{DeniedAnnotations: DefaultDeniedAnnotations, GatewayNamespaces: []string{"gateways"}},
		PlatformNamespace: platformNS, ObjectStoreEndpoints: []string{"127.0.0.1"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer op.Close()
	databases, release = op.Databases, op.Release
	// Every statement of every admin session is checked: none may reach inside a tenant schema.
	databases.AdminTracer = adminStatements.record
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: the manager stopped with", err)
			code = 1
		}
	}()
	defer func() {
		if otherServer.pg != nil {
			otherServer.pg.Close()
		}
		if citusServers.cluster != nil {
			citusServers.cluster.Close()
		}
	}()
	defer removePluginBuild()
	defer stopObjectStore()
	code = m.Run()
	if report := adminStatements.report(); report != "" {
		fmt.Fprintln(os.Stderr, "FAIL: the admin session reached inside tenant schemas (see docs/security.md):\n"+report)
		return 1
	}
	return code
}

// operatorIdentity applies the operator's namespace, ServiceAccount and RBAC as config/default renders
// them, and returns cfg acting as that ServiceAccount, and its namespace.
func operatorIdentity(cfg *rest.Config) (*rest.Config, string, error) {
	objs, err := manifests.Kustomize(filepath.Join("..", "..", "config", "default"))
	if err != nil {
		return nil, "", err
	}
	id, err := manifests.ApplyIdentity(context.Background(), k8s, objs)
	if err != nil {
		return nil, "", err
	}
	return id.Impersonate(cfg), id.Namespace, nil
}

// fixture is one test's namespace with an ExpenseApp on a database of its own, which the platform
// declared for that namespace alone (ClusterDatabase <namespace>-db).
type fixture struct {
	t        *testing.T
	ns       string
	app      *tenantryv1.ExpenseApp
	url      string
	database string
	db       *pgxpool.Pool // superuser connection to the app's database, to look at what the operator did
	// stallExpected: the test stalls the fixture's ExpenseApp on purpose (newFixtureOn checks it is not
	// stalled at the end otherwise).
	stallExpected bool
}

// schema is the schema (and role) name a tenant of this fixture derives.
func (f *fixture) schema(tenant string) string {
	return registry.TenantName(f.database, f.ns, tenant)
}

// q is that name quoted, to write it into SQL.
func (f *fixture) q(tenant string) string { return pgx.Identifier{f.schema(tenant)}.Sanitize() }

var nsSeq atomic.Int64

// newFixture creates a namespace, a database, its declaration and an ExpenseApp "expenses".
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, "")
}

// newFixtureOn is newFixture on the database of a superuser connection string; "" creates one.
func newFixtureOn(t *testing.T, url string) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ns: fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "_", "-")))}
	if len(f.ns) > 60 {
		f.ns = f.ns[:60]
	}
	f.ns = strings.Trim(strings.ReplaceAll(f.ns, "/", "-"), "-")
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}))
	t.Cleanup(f.dropTenants)
	var err error
	f.url = url
	if f.url == "" {
		if f.url, err = pg.NewDatabase(ctx, "op"); err != nil {
			t.Fatal(err)
		}
	}
	if f.db, err = pgxpool.New(ctx, f.url); err != nil {
		t.Fatal(err)
	}
	f.database = f.db.Config().ConnConfig.Database
	t.Cleanup(f.db.Close)
	f.declare("db", f.url)
	// With an image, as every real ExpenseApp has one (without, it stalls with NoImage); its Deployment
	// is written, and never rolls out, since envtest runs no kubelet (markRolledOut plays one).
	f.app = &tenantryv1.ExpenseApp{
		ObjectMeta: metav1.ObjectMeta{Name: "expenses", Namespace: f.ns},
		Spec: tenantryv1.ExpenseAppSpec{Image: "tenantry:test",
			Database: tenantryv1.DatabaseSpec{ClusterDatabase: f.declared("db")}},
	}
	must(t, k8s.Create(ctx, f.app))
	// A test whose ExpenseApp stalled where the test did not mean it to proves less than it says: it
	// fails, unless the test set the stall off itself (f.stallExpected).
	t.Cleanup(func() {
		app := &tenantryv1.ExpenseApp{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: "expenses"}, app); err != nil {
			return // deleted by the test
		}
		if c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionStalled); c != nil &&
			c.Status == metav1.ConditionTrue && !f.stallExpected {
			t.Errorf("the fixture's ExpenseApp ended the test stalled: %s: %s", c.Reason, c.Message)
		}
	})
	return f
}

// dropTenants takes the fixture's Tenants away when the test ends, finalizers and all: hosts are
// claimed cluster-wide, and the next test may use the same ones. Their claims are then stale, and the
// next Tenant that asks takes them over. (The test's databases go with it; nothing needs cleaning.)
func (f *fixture) dropTenants() {
	ctx := context.Background()
	var list tenantryv1.TenantList
	if err := k8s.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
		f.t.Logf("listing the fixture's Tenants to drop them: %v", err)
		return
	}
	for i := range list.Items {
		tn := &list.Items[i]
		_ = k8s.Delete(ctx, tn)
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Finalizers = nil
		if err := client.IgnoreNotFound(k8s.Patch(ctx, tn, patch)); err != nil {
			f.t.Logf("dropping Tenant %s: %v", tn.Name, err)
		}
	}
}

// declare declares a database for the fixture's namespace alone, as the platform team does: a
// ClusterDatabase named f.declared(name), whose admin Secret is in the operator's namespace.
func (f *fixture) declare(name, uri string) {
	f.t.Helper()
	must(f.t, manifests.DeclareDatabase(context.Background(), k8s, platformNS, f.declared(name), uri, f.ns))
	f.t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &tenantryv1.ClusterDatabase{ObjectMeta: metav1.ObjectMeta{Name: f.declared(name)}})
	})
}

// declared is the name of the ClusterDatabase that f.declare(name, ...) declares.
func (f *fixture) declared(name string) string { return f.ns + "-" + name }

// tenant returns a valid Tenant of this fixture's namespace.
func (f *fixture) tenant(name string, hosts ...string) *tenantryv1.Tenant {
	threshold := int64(50000)
	return &tenantryv1.Tenant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
		Spec: tenantryv1.TenantSpec{
			AppRef:      tenantryv1.AppRef{Name: "expenses"},
			DisplayName: "Tenant " + name,
			Hosts:       hosts,
			Branding:    tenantryv1.Branding{PrimaryColor: "#0b5fff", LogoURL: "https://acme.com/logo.png"},
			Settings:    tenantryv1.Settings{Currency: "EUR", ApprovalThreshold: &threshold},
			Admin:       tenantryv1.Admin{Email: "finance@" + name + ".example.com"},
		},
	}
}

// get reads a Tenant afresh.
func (f *fixture) get(name string) *tenantryv1.Tenant {
	f.t.Helper()
	t := &tenantryv1.Tenant{}
	must(f.t, k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, t))
	return t
}

// waitCondition waits until a Tenant's condition has the status (and, if given, the reason) at its
// current generation, and returns the Tenant.
func (f *fixture) waitCondition(name, typ string, status metav1.ConditionStatus, reason string) *tenantryv1.Tenant {
	f.t.Helper()
	var last *tenantryv1.Tenant
	err := eventually(20*time.Second, func() error {
		last = f.get(name)
		c := meta.FindStatusCondition(last.Status.Conditions, typ)
		switch {
		case c == nil:
			return fmt.Errorf("no %s condition", typ)
		case c.Status != status || (reason != "" && c.Reason != reason):
			return fmt.Errorf("%s=%s (%s: %s)", typ, c.Status, c.Reason, c.Message)
		case typ == tenantryv1.ConditionReady && status == metav1.ConditionTrue && last.Status.ObservedGeneration != last.Generation:
			return fmt.Errorf("observedGeneration %d, generation %d", last.Status.ObservedGeneration, last.Generation)
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("Tenant %s: waiting for %s=%s %s: %v\nconditions: %+v", name, typ, status, reason, err, last.Status.Conditions)
	}
	return last
}

func (f *fixture) waitReady(name string) *tenantryv1.Tenant {
	f.t.Helper()
	return f.waitCondition(name, tenantryv1.ConditionReady, metav1.ConditionTrue, "")
}

// eventually polls fn until it returns nil or the timeout passes, and returns its last error.
func eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// reconciles is how many times a controller ("tenant", "expenseapp") has finished a reconcile.
func reconciles(t *testing.T, controller string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range families {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var errNotYet = errors.New("not yet")
