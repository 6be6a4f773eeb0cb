package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientfeatures "k8s.io/client-go/features"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
)

// NewScheme returns a scheme with the built-in kinds and Tenantry's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tenantryv1.AddToScheme(s))
	utilruntime.Must(gwapiv1.Install(s))
	return s
}

// CacheOptions keeps the operator's informers to what it needs: only the namespaces given (all when
// none), of Secrets only those it created itself (the database Secrets are read uncached, when due), so
// memory does not grow with every Secret of the cluster; and no object's managedFields.
func CacheOptions(namespaces ...string) cache.Options {
	var only map[string]cache.Config
	if len(namespaces) > 0 {
		only = map[string]cache.Config{}
		for _, ns := range namespaces {
			only[ns] = cache.Config{}
		}
	}
	return cache.Options{
		DefaultNamespaces: only,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
		},
		// managedFields are often the largest part of an object, and nothing here reads them.
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

// MetricsOptions serves the operator's metrics on addr. Secure, as kubebuilder scaffolds it: over HTTPS,
// and only to callers the API server authenticates (TokenReview) and authorizes for get on the
// non-resource URL /metrics (SubjectAccessReview); the metrics-reader ClusterRole grants that.
func MetricsOptions(addr string, secure bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}

// Config is what the operator's controllers need to be set up.
type Config struct {
	MaxConcurrentReconciles int
	// MaxConcurrentBackups bounds the Backups taken at once (at least one).
	MaxConcurrentBackups int
	// ObjectStoreEndpoints are the object stores (host or host:port) ExpenseApps may name besides AWS S3.
	ObjectStoreEndpoints []string
	// Migrations replaces the embedded tenant migrations (app/migrations), e.g. to try a release's
	// migrations on a staging fleet before building it. Nil uses the embedded ones.
	Migrations fs.FS
	// DefaultAppImage is the app image of an ExpenseApp without spec.image.
	DefaultAppImage string
	// UsageInterval is how often each Ready tenant's usage is measured into its status (0: never), and
	// DriftInterval how often its schema is compared with the release's (0: never). FirstCheckDelay
	// bounds the wait for a new tenant's first measurement and comparison (0: a minute).
	UsageInterval, DriftInterval, FirstCheckDelay time.Duration
	// MaxConcurrentAppReconciles bounds the ExpenseApps reconciled at once (0: 4).
	MaxConcurrentAppReconciles int
	// ReconcileTimeout bounds each reconcile's work (0: DefaultReconcileTimeout).
	ReconcileTimeout time.Duration
	// StatementTimeout and LockTimeout bound every database statement (0: tenantdb's defaults).
	StatementTimeout, LockTimeout time.Duration
	// RoutePolicy is what of an ExpenseApp's routing reaches its tenants' routes (nil: all of it).
	RoutePolicy *RoutePolicy
	// PlatformNamespace is the operator's own namespace, which holds the Secrets ClusterDatabases name.
	PlatformNamespace string
	// NamespacedDatabaseSecrets lets ExpenseApps name their databases by Secrets of their own
	// namespaces: only for single-team installs.
	NamespacedDatabaseSecrets bool
}

// Setup registers every controller of the operator with mgr and returns the databases they share,
// which the caller closes when the manager stops.
func Setup(mgr ctrl.Manager, cfg Config) (*Operator, error) {
	fsys := cfg.Migrations
	if fsys == nil {
		fsys = migrations.FS()
	}
	release, err := NewRelease(fsys)
	if err != nil {
		return nil, err
	}
	// A database that hangs holds no more than three quarters of the Tenant workers: the others serve
	// the tenants of other databases.
	dbs := &Databases{Reader: mgr.GetAPIReader(), Declarations: mgr.GetClient(), PlatformNamespace: cfg.PlatformNamespace,
		NamespacedSecrets: cfg.NamespacedDatabaseSecrets, StatementTimeout: cfg.StatementTimeout, LockTimeout: cfg.LockTimeout,
		PerDatabase: max(1, cfg.MaxConcurrentReconciles*3/4)}
	appWorkers := cfg.MaxConcurrentAppReconciles
	if appWorkers <= 0 {
		appWorkers = 4
	}
	rollouts, driftPasses := NewRollouts(), NewDriftPasses()
	nodes := NewNodes()
	if err := metrics.Registry.Register(statementsCollector{dbs}); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
	}
	stores := &ObjectStorePolicy{Endpoints: cfg.ObjectStoreEndpoints}
	tenants := &TenantReconciler{
		Client:                  mgr.GetClient(),
		Scheme:                  mgr.GetScheme(),
		Databases:               dbs,
		Release:                 release,
		MaxConcurrentReconciles: cfg.MaxConcurrentReconciles,
		UsageInterval:           cfg.UsageInterval,
		DriftInterval:           cfg.DriftInterval,
		DriftPasses:             driftPasses,
		FirstCheckDelay:         cfg.FirstCheckDelay,
		Rollouts:                rollouts,
		Placement:               &Placement{},
		Nodes:                   nodes,
		Recorder:                mgr.GetEventRecorder("tenantry-tenant"),
		ReconcileTimeout:        cfg.ReconcileTimeout,
		RoutePolicy:             cfg.RoutePolicy,
		APIReader:               mgr.GetAPIReader(),
		ObjectStores:            stores,
	}
	if err := tenants.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Tenant controller: %w", err)
	}
	apps := &ExpenseAppReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Databases: dbs, Release: release,
		Rollouts: rollouts, DriftPasses: driftPasses, DriftInterval: cfg.DriftInterval, Nodes: nodes, DefaultImage: cfg.DefaultAppImage, Recorder: mgr.GetEventRecorder("tenantry-expenseapp"),
		MaxConcurrentReconciles: appWorkers, ReconcileTimeout: cfg.ReconcileTimeout, RoutePolicy: cfg.RoutePolicy}
	if err := apps.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the ExpenseApp controller: %w", err)
	}
	backups := &BackupReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), ObjectStores: stores, Databases: dbs, Release: release,
		Recorder: mgr.GetEventRecorder("tenantry-backup"), MaxConcurrentReconciles: cfg.MaxConcurrentBackups}
	if err := backups.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Backup controller: %w", err)
	}
	restores := &RestoreReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), ObjectStores: stores, Databases: dbs, Release: release,
		Recorder: mgr.GetEventRecorder("tenantry-restore")}
	if err := restores.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Restore controller: %w", err)
	}
	schedules := &ScheduledBackupReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("tenantry-scheduledbackup")}
	if err := schedules.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the ScheduledBackup controller: %w", err)
	}
	// Every informer starts with the cache, all at once. Otherwise the Tenant informer (which the field
	// indexes create before the start) is listed and synced first, and the controllers start theirs only
	// then: with 10,000 tenants, one list after the other costs the start about a second.
	informers := []client.Object{&tenantryv1.ExpenseApp{}, &tenantryv1.HostClaim{}, &tenantryv1.ClusterDatabase{}, &corev1.Secret{}, &networkingv1.Ingress{},
		&appsv1.Deployment{}, &corev1.Service{}, &networkingv1.NetworkPolicy{}}
	if tenants.GatewayAPI {
		informers = append(informers, &gwapiv1.HTTPRoute{})
	}
	for _, obj := range informers {
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj); err != nil {
			return nil, fmt.Errorf("starting the informer of %T: %w", obj, err)
		}
	}
	return &Operator{Databases: dbs, Release: release}, nil
}

// Operator is what Setup wired: the databases the controllers share (to Close when the manager stops)
// and the release of migrations they apply.
type Operator struct {
	Databases *Databases
	Release   *Release
}

// Close closes every database connection.
func (o *Operator) Close() { o.Databases.Close() }

// ListInPages makes the operator's informers fill by listing in pages, as client-go did before 1.35,
// instead of by a watch that streams every object as an event of its own (client-go's WatchListClient).
// Tenants are custom resources, which the API server sends only as JSON, and each streamed event is read
// three times over (the event, its kind, the object), where a page of 500 is read as a whole: with
// 10,000 Tenants the stream took 1.9 s of the operator's CPU and the pages 0.7 s, on the path of every
// release. KUBE_FEATURE_WatchListClient, when set, still decides.
func ListInPages() {
	if _, set := os.LookupEnv("KUBE_FEATURE_" + string(clientfeatures.WatchListClient)); set {
		return
	}
	if gates, ok := clientfeatures.FeatureGates().(interface {
		Set(clientfeatures.Feature, bool) error
	}); ok {
		_ = gates.Set(clientfeatures.WatchListClient, false)
	}
}

// TuneRESTConfig raises the client's default rate limits, which throttle an operator of thousands of
// tenants long before the API server would.
func TuneRESTConfig(cfg *rest.Config, qps float32, burst int) {
	cfg.QPS = qps
	cfg.Burst = burst
}
