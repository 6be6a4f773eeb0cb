package controller

import (
	"cmp"
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// App container settings the Deployment and Service agree on.
const (
	appPort        = 8080
	appMetricsPort = 9090
	// MetricsPortName is the app's Prometheus port, on its pods and its Service.
	MetricsPortName = "metrics"
	// AnnotationSchemaVersion on the app's pod template records the schema version its image needs.
	AnnotationSchemaVersion = "tenantry.dev/schema-version"
	// AnnotationAppSecretHash on the app's pod template is a hash of the app's database Secret: when the
	// Secret changes (a new server, port or password), the template changes and the Deployment rolls, so
	// no pod keeps a connection string that no longer works.
	AnnotationAppSecretHash = "tenantry.dev/app-db-hash"
	// appSecretRecheck is how often a Ready ExpenseApp re-reads its database Secret, so that a rotated
	// connection string reaches the app's login and pods without anyone touching the ExpenseApp.
	appSecretRecheck = time.Minute
)

// ExpenseAppReconciler runs one installation of the app: its least-privilege database login, the
// Deployment serving every tenant, its Service and PodDisruptionBudget, and the fleet's status. It rolls
// a new image only once every tenant's schema is at the version that image needs.
type ExpenseAppReconciler struct {
	client.Client
	Scheme    *runtime.Scheme
	Databases *Databases
	Release   *Release
	Rollouts  *Rollouts
	// DriftPasses compare the fleet with the release every DriftInterval (0: never).
	DriftPasses   *DriftPasses
	DriftInterval time.Duration
	// Nodes follows the Citus workers of the tenants' schemas.
	Nodes *Nodes
	// DefaultImage is the app image of an ExpenseApp without spec.image (--default-app-image).
	DefaultImage string
	Recorder     events.EventRecorder
	// MaxConcurrentReconciles bounds the ExpenseApps reconciled at once: more than one, so that an app
	// whose database hangs does not hold up every other.
	MaxConcurrentReconciles int
	// ReconcileTimeout bounds the work of one reconcile (0: DefaultReconcileTimeout).
	ReconcileTimeout time.Duration
	// RoutePolicy is what of an ExpenseApp's routing reaches its tenants' routes (nil: all of it).
	RoutePolicy *RoutePolicy
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps/finalizers,verbs=update
// +kubebuilder:rbac:groups=tenantry.dev,resources=clusterdatabases,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete

// Reconcile brings one ExpenseApp to its desired state.
func (r *ExpenseAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	app := &tenantryv1.ExpenseApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := app.DeepCopy()
	patchCtx := ctx // the steps below get a deadline; the status patch does not
	defer func() {
		if before.Status.Image != "" && app.Status.Image != before.Status.Image && r.Recorder != nil {
			r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, "ImageRolled", "Rollout",
				"Every tenant is at schema version %d: rolling the app from %s to %s", app.Status.TargetSchemaVersion,
				before.Status.Image, app.Status.Image)
		}
		result, retErr = summarize(patchCtx, r.Client, r.Recorder, summary{
			obj: app, before: before, conditions: &app.Status.Conditions, beforeConditions: before.Status.Conditions,
			observed: &app.Status.ObservedGeneration, oldStatus: before.Status, status: func() any { return app.Status },
			finalizer: tenantryv1.ExpenseAppFinalizer, readyEvents: true,
			readyMsg: func() string {
				return fmt.Sprintf("Serving %d tenant(s) with %d ready replica(s) at schema version %d", app.Status.Tenants,
					app.Status.ReadyReplicas, app.Status.TargetSchemaVersion)
			},
		}, result, retErr)
	}()

	ctx, cancel := withDeadline(ctx, r.ReconcileTimeout)
	defer cancel()
	target := r.Release.Target()
	tenants, err := r.tenants(ctx, app)
	if err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	if !app.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, app, tenants)
	}
	if !controllerutil.ContainsFinalizer(app, tenantryv1.ExpenseAppFinalizer) {
		patch := client.MergeFrom(app.DeepCopy())
		controllerutil.AddFinalizer(app, tenantryv1.ExpenseAppFinalizer)
		if err := r.Patch(ctx, app, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}
	run := &appRun{app: app, tenants: tenants, target: target}
	// Each step returns its verdict, and the first that fails or waits ends the reconcile, with two
	// exceptions: the fleet's and the shards' verdicts (a rollout under way, a shard away) hold only the
	// rollout's end. The Deployment and Service are kept in place meanwhile (the app serves with the image
	// it runs), and the held verdict, the fleet's first, is given once they are. The NetworkPolicy comes
	// before the Deployment: pods start fenced in.
	var held error
	for _, s := range []struct {
		step  appStep
		holds bool
	}{{r.reconcileDatabase, false}, {r.reconcileCitus, false}, {r.reconcileFleet, true}, {r.reconcileShards, true}, {r.reconcileDriftPass, true},
		{r.reconcileNetworkPolicy, false}, {r.reconcileDeployment, false}, {r.reconcileService, false}} {
		err := s.step(ctx, run)
		switch {
		case err == nil:
		case s.holds:
			held = cmp.Or(held, err)
		default:
			return ctrl.Result{}, err
		}
	}
	if held != nil {
		return ctrl.Result{}, held
	}
	// Last, what the route policy left out of the tenants' routes: all else is done and reported.
	for _, step := range []appStep{r.rolloutDone, r.reconcileRoutePolicy} {
		if err := step(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	return run.result, nil
}

// appRun is one reconcile of an ExpenseApp: what its steps find and share.
type appRun struct {
	app     *tenantryv1.ExpenseApp
	tenants []tenantryv1.Tenant
	target  int64
	secret  *corev1.Secret // the app's database Secret, as reconcileDatabase left it
	// requeue, when set, bounds the wait until the next reconcile of a Ready app.
	requeue time.Duration
	result  ctrl.Result
}

// appStep is one step of an ExpenseApp's reconcile. Each checks for itself whether it has anything to do.
// Each lives in a file named after it: expenseapp_database.go, citus.go, expenseapp_fleet.go (with the
// rollout, rollout.go), expenseapp_shards.go, expenseapp_drift.go (with the passes, drift_pass.go), expenseapp_networkpolicy.go, expenseapp_deployment.go
// (with the rollout's end) and expenseapp_service.go; deletion is expenseapp_delete.go.
type appStep func(ctx context.Context, run *appRun) error

func (r *ExpenseAppReconciler) tenants(ctx context.Context, app *tenantryv1.ExpenseApp) ([]tenantryv1.Tenant, error) {
	var list tenantryv1.TenantList
	err := r.List(ctx, &list, client.InNamespace(app.Namespace), client.MatchingFields{indexAppRef: app.Name},
		client.UnsafeDisableDeepCopy)
	return list.Items, err
}

func appLabels(app *tenantryv1.ExpenseApp) map[string]string {
	return map[string]string{"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name,
		LabelManagedBy: ManagedBy}
}

func setAppCondition(app *tenantryv1.ExpenseApp, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: app.Generation,
	})
}

// SetupWithManager registers the reconciler: it follows its own objects and its Tenants.
// appChanged says which changes of an ExpenseApp call for a reconcile: its spec (a new generation), its
// deletion, its annotations (a manual nudge) and labels; not its status, which the operator itself
// writes. Following status patches, each count a rollout patched started the next reconcile at once, a
// pass over every tenant and another patch: with 10,000 tenants, 425 reconciles of the app in one
// release instead of 51, and the release 9 s slower.
var appChanged = predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
	predicate.LabelChangedPredicate{})

// SetupWithManager registers the ExpenseApp controller: its kind (appChanged), what it owns, its
// Tenants, the ClusterDatabases it names, and the ends of fleet rollouts.
func (r *ExpenseAppReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tenantryv1.ExpenseApp{}, builder.WithPredicates(appChanged)).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&corev1.Secret{}).
		Watches(&tenantryv1.Tenant{}, tenantsToApp{}).
		Watches(&tenantryv1.ClusterDatabase{}, handler.EnqueueRequestsFromMapFunc(r.appsOnDatabase)).
		WatchesRawSource(source.Channel(r.Rollouts.Ended, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Channel(r.DriftPasses.Ended, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Complete(r)
}

// tenantsToApp enqueues a Tenant's ExpenseApp a second after the Tenant changes: during a fleet
// migration every Tenant changes, and the app's counts need not follow each one.
type tenantsToApp struct{}

const appRecountDelay = time.Second

func (tenantsToApp) add(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(),
		Name: o.(*tenantryv1.Tenant).Spec.AppRef.Name}}, appRecountDelay)
}

func (h tenantsToApp) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.add(e.Object, q)
}

func (h tenantsToApp) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.add(e.ObjectNew, q)
}

func (h tenantsToApp) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.add(e.Object, q)
}

func (h tenantsToApp) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.add(e.Object, q)
}

// appsOnDatabase enqueues the ExpenseApps that name a ClusterDatabase, for home or a shard, when the
// platform team declares, changes or removes it, and has their databases looked up again: an app
// waiting for it starts, and one it no longer allows stops at once (Stalled).
func (r *ExpenseAppReconciler) appsOnDatabase(ctx context.Context, o client.Object) []reconcile.Request {
	var apps tenantryv1.ExpenseAppList
	if err := r.List(ctx, &apps); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range apps.Items {
		app := &apps.Items[i]
		for _, shard := range appShards(app, nil) {
			if ref, _ := shardRef(app, shard); ref.cluster == o.GetName() {
				r.Databases.Reread(client.ObjectKeyFromObject(app))
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(app)})
				break
			}
		}
	}
	return out
}
