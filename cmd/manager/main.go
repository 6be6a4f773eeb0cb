// Command manager runs the Tenantry operator: the Tenant and ExpenseApp controllers.
package main

import (
	"flag"
	"io/fs"
	"os"
	"strings"
	"time"

	"k8s.io/utils/ptr"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/internal/tenantdb"
)

func main() {
	var (
		metricsAddr, probeAddr string
		leaderElect            bool
		concurrency            int
		backupConcurrency      int
		objectStoreEndpoints   string
		qps                    float64
		burst                  int
		migrationsDir          string
		defaultAppImage        string
		usageInterval          time.Duration
		driftInterval          time.Duration
		pprofAddr              string
		secureMetrics          bool
		watchNamespaces        string
		leaseNamespace         string
		leaseDuration          time.Duration
		appConcurrency         int
		reconcileTimeout       time.Duration
		statementTimeout       time.Duration
		lockTimeout            time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, to callers the API server authenticates "+
		"and authorizes (get on the non-resource URL /metrics); false serves plain HTTP to anyone who can reach it.")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch; empty watches every "+
		"namespace. With a list, RoleBindings in those namespaces are all the operator needs.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so only one of several replicas reconciles (and migrates).")
	flag.StringVar(&leaseNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease; in a cluster, "+
		"the operator's own namespace by default.")
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a leader's Lease lasts "+
		"without renewal; a successor takes over after it. Renewal is due at two thirds of it.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 8, "Tenants reconciled at once; at most three quarters of them work on one database.")
	flag.IntVar(&backupConcurrency, "max-concurrent-backups", 2, "Backups taken at once.")
	flag.StringVar(&objectStoreEndpoints, "object-store-endpoints", "", "Comma-separated object stores (host, or host:port) that "+
		"ExpenseApps may name in spec.backup.objectStore.endpointURL, besides AWS S3; empty: AWS S3 only.")
	flag.IntVar(&appConcurrency, "max-concurrent-app-reconciles", 4, "ExpenseApps reconciled at once.")
	flag.DurationVar(&reconcileTimeout, "reconcile-timeout", controller.DefaultReconcileTimeout, "How long one reconcile of a Tenant or an ExpenseApp may work before it is cut short and tried again.")
	flag.DurationVar(&statementTimeout, "db-statement-timeout", tenantdb.DefaultStatementTimeout, "statement_timeout of every operator session on every database (migrations included).")
	flag.DurationVar(&lockTimeout, "db-lock-timeout", tenantdb.DefaultLockTimeout, "lock_timeout of every operator session on every database: how long a statement waits for a lock another login holds.")
	flag.Float64Var(&qps, "kube-api-qps", 200, "Queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", 400, "Burst of queries to the API server.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "Address of Go's pprof profiles; 0 disables them.")
	flag.StringVar(&defaultAppImage, "default-app-image", "", "The app image of an ExpenseApp that sets no spec.image (the chart sets the operator's own image, which holds the app).")
	flag.DurationVar(&usageInterval, "usage-interval", 30*time.Minute, "How often each Ready tenant's usage (users, expenses, schema size) is measured into its status; 0 never.")
	flag.DurationVar(&driftInterval, "drift-interval", time.Hour, "How often each Ready tenant's schema is compared with "+
		"the one the release's migrations make (status.drift, the SchemaDrift condition); 0 never. Also after every migration.")
	flag.StringVar(&migrationsDir, "migrations-dir", "", "Read tenant migrations from this directory instead of the embedded ones.")
	var platformNamespace string
	var namespacedSecrets bool
	flag.StringVar(&platformNamespace, "platform-namespace", ownNamespace(), "Namespace of the Secrets that ClusterDatabases "+
		"name: the operator's own ($POD_NAMESPACE, or its ServiceAccount's) by default.")
	flag.BoolVar(&namespacedSecrets, "namespaced-database-secrets", false, "Let an ExpenseApp name its databases by Secrets of "+
		"its own namespace (spec.database.secretRef), as well as by ClusterDatabases. Only for a single-team install: whoever "+
		"reads Secrets in one namespace then owns every tenant of that database, of every namespace.")
	var deniedAnnotations, allowedAnnotations, gatewayNamespaces string
	flag.StringVar(&deniedAnnotations, "denied-ingress-annotations", strings.Join(controller.DefaultDeniedAnnotations, ","),
		"Comma-separated patterns ('*' matches anything) of the ExpenseApp Ingress annotations never copied onto tenant Ingresses: "+
			"by default configuration snippets and authentication overrides.")
	flag.StringVar(&allowedAnnotations, "allowed-ingress-annotations", "", "Comma-separated patterns of the only ExpenseApp Ingress "+
		"annotations copied onto tenant Ingresses (the denied ones still not); empty allows every one not denied.")
	flag.StringVar(&gatewayNamespaces, "gateway-namespaces", "", "Comma-separated namespaces, besides an ExpenseApp's own, whose "+
		"Gateways its tenants' HTTPRoutes may attach to; \"*\" allows every namespace.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	controller.ListInPages()
	cfg := ctrl.GetConfigOrDie()
	controller.TuneRESTConfig(cfg, float32(qps), burst)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  controller.NewScheme(),
		Cache:                   controller.CacheOptions(splitList(watchNamespaces)...),
		Metrics:                 controller.MetricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "tenantry.dev",
		LeaderElectionNamespace: leaseNamespace,
		LeaseDuration:           &leaseDuration,
		RenewDeadline:           ptr.To(leaseDuration * 2 / 3),
		RetryPeriod:             ptr.To(leaseDuration / 5),
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}
	var migrations fs.FS
	if migrationsDir != "" {
		migrations = os.DirFS(migrationsDir)
	}
	dbs, err := controller.Setup(mgr, controller.Config{MaxConcurrentReconciles: concurrency, MaxConcurrentBackups: backupConcurrency, ObjectStoreEndpoints: splitList(objectStoreEndpoints), Migrations: migrations,
		DefaultAppImage: defaultAppImage, UsageInterval: usageInterval, DriftInterval: driftInterval, MaxConcurrentAppReconciles: appConcurrency,
		ReconcileTimeout: reconcileTimeout, StatementTimeout: statementTimeout, LockTimeout: lockTimeout,
		RoutePolicy: &controller.RoutePolicy{DeniedAnnotations: splitList(deniedAnnotations),
			AllowedAnnotations: splitList(allowedAnnotations), GatewayNamespaces: splitList(gatewayNamespaces)},
		PlatformNamespace: platformNamespace, NamespacedDatabaseSecrets: namespacedSecrets})
	if err != nil {
		log.Error(err, "setting up controllers")
		os.Exit(1)
	}
	err = mgr.AddHealthzCheck("healthz", healthz.Ping)
	if err == nil {
		err = mgr.AddReadyzCheck("readyz", healthz.Ping)
	}
	if err == nil {
		log.Info("starting the manager")
		err = mgr.Start(ctrl.SetupSignalHandler())
	}
	dbs.Close()
	if err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ownNamespace is the namespace the operator runs in: $POD_NAMESPACE (the manifests set it from the
// pod's own), else its ServiceAccount's, else "" (out of a cluster).
func ownNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
