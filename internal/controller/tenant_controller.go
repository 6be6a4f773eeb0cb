package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Labels on every object the operator creates for a Tenant.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tenantry"
	LabelTenant    = "tenantry.dev/tenant"
)

// LabelAdoptRetainedFrom is the label that, on a Namespace, names the UID of an earlier namespace of
// the same name (tenantdb.RetainedLegacy: one from before UIDs were recorded) whose retained tenants
// the Tenants of this one take back. The platform team sets it: rights in a namespace do not reach its
// labels.
const LabelAdoptRetainedFrom = "tenantry.dev/adopt-retained-from"

// Index keys of the manager's cache.
const (
	indexAppRef       = "spec.appRef.name"
	indexHostConflict = "status.hostConflict"
)

// TenantReconciler turns a Tenant into a live, isolated schema with its migrations applied, a role, a
// registry row the app routes by, an Ingress and a first admin.
type TenantReconciler struct {
	client.Client
	Scheme    *runtime.Scheme
	Databases *Databases
	// Release holds the tenant schema migrations and the version they end at.
	Release *Release
	// MaxConcurrentReconciles bounds the Tenants reconciled at once.
	MaxConcurrentReconciles int
	// GatewayAPI says the cluster serves the Gateway API's HTTPRoute kind (found at setup).
	GatewayAPI bool
	// UsageInterval is how often a Ready tenant's usage is measured into its status; 0 never.
	UsageInterval time.Duration
	// DriftInterval is how often its ExpenseApp compares a Ready tenant's schema with the release's
	// (DriftPasses, which hand it what changed); 0 never. The tenant compares itself when first Ready,
	// after a migration and when asked to repair.
	DriftInterval time.Duration
	DriftPasses   *DriftPasses
	// FirstCheckDelay bounds how long after becoming Ready a tenant is first measured and compared
	// (randomly within it, so that a thousand tenants onboarded at once are not read at once); 0 is a
	// minute.
	FirstCheckDelay time.Duration
	// Rollouts migrate existing tenants to a new release; a Tenant follows what its app's rollout did.
	Rollouts *Rollouts
	// Placement chooses the shard of each new tenant.
	Placement *Placement
	// Nodes says which Citus worker holds each tenant's schema, as its ExpenseApp last read.
	Nodes *Nodes
	// Recorder emits events.
	Recorder events.EventRecorder
	// ReconcileTimeout bounds the work of one reconcile (0: DefaultReconcileTimeout).
	ReconcileTimeout time.Duration
	// RoutePolicy is what of an ExpenseApp's routing reaches its tenants' routes (nil: all of it).
	RoutePolicy *RoutePolicy
	// APIReader reads from the API server, not the cache: a tenant's Namespace (its UID), which the
	// operator does not watch, and an object store's credentials.
	APIReader client.Reader
	// ObjectStores are the stores an ExpenseApp may name, for a Tenant restored from a backup.
	ObjectStores *ObjectStorePolicy
}

// DefaultReconcileTimeout bounds a reconcile's work when no other bound is set.
const DefaultReconcileTimeout = 2 * time.Minute

// withDeadline is ctx with the deadline of one reconcile's steps.
func withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultReconcileTimeout
	}
	return context.WithTimeout(ctx, d)
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=tenants,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=tenants/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=tenants/finalizers,verbs=update
// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// Reconcile brings one Tenant to its desired state.
func (r *TenantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	t := &tenantryv1.Tenant{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := t.DeepCopy()
	patchCtx := ctx // the steps below get a deadline; the status patch does not
	defer func() {
		result, retErr = summarize(patchCtx, r.Client, r.Recorder, summary{
			obj: t, before: before, conditions: &t.Status.Conditions, beforeConditions: before.Status.Conditions,
			observed: &t.Status.ObservedGeneration, oldStatus: before.Status, status: func() any { return t.Status },
			finalizer: tenantryv1.TenantFinalizer, readyEvents: false,
			readyMsg: func() string {
				return fmt.Sprintf("Tenant is live at %s (schema %s, version %d)", t.Status.URL, t.Status.Schema, t.Status.SchemaVersion)
			},
		}, result, retErr)
	}()

	timeout := r.ReconcileTimeout
	if copyingSource(t) {
		timeout = tenantdb.BulkTimeout
	}
	ctx, cancel := withDeadline(ctx, timeout)
	defer cancel()
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, t)
	}
	if !controllerutil.ContainsFinalizer(t, tenantryv1.TenantFinalizer) {
		patch := client.MergeFrom(t.DeepCopy())
		controllerutil.AddFinalizer(t, tenantryv1.TenantFinalizer)
		if err := r.Patch(ctx, t, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}
	return r.reconcileTenant(ctx, t)
}

// tenantRun is one reconcile of a Tenant: what its steps find and share.
type tenantRun struct {
	t           *tenantryv1.Tenant
	app         *tenantryv1.ExpenseApp
	adminSecret *corev1.Secret // nil when there is none
	// loc is where the tenant lives (locate), resolved the first time a step needs the database, never
	// before: a Ready tenant whose spec has not changed sends no SQL at all.
	loc *location
	// wasReady: the tenant was Ready, at its generation, when this reconcile began.
	wasReady bool
	result   ctrl.Result
	// held are the places this reconcile holds on its databases (Databases.Hold), given back at its end.
	held map[*tenantdb.DB]func()
}

// tenantStep is one step of a Tenant's reconcile. Each checks for itself whether it has anything to do.
// Each lives in a file named after it: tenant_app.go, tenant_hosts.go, tenant_registration.go (with
// where the tenant lives, tenant_location.go), tenant_move.go, tenant_source.go, tenant_schema.go, tenant_admin.go, tenant_state.go,
// tenant_route.go, citus.go (the node), tenant_usage.go and tenant_drift.go; deletion is tenant_delete.go.
type tenantStep func(ctx context.Context, run *tenantRun) error

// reconcileTenant runs the steps in order, stopping at the first that fails or waits.
func (r *TenantReconciler) reconcileTenant(ctx context.Context, t *tenantryv1.Tenant) (ctrl.Result, error) {
	run := &tenantRun{t: t, wasReady: readyAtGeneration(t)}
	defer run.release()
	for _, step := range []tenantStep{r.reconcileApp, r.reconcileHosts, r.reconcileRegistration, r.reconcileMove, r.reconcileSource, r.reconcileSchema, r.reconcileAdmin,
		r.reconcileState, r.reconcileRoute, r.reconcileReleasedHosts, r.reconcileNode, r.reconcileUsage, r.reconcileDrift} {
		if err := step(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	return run.result, nil
}

// readyAtGeneration: the tenant was Ready for this very spec.
func readyAtGeneration(t *tenantryv1.Tenant) bool {
	return t.Status.ObservedGeneration == t.Generation &&
		meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady)
}

func setCondition(t *tenantryv1.Tenant, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&t.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: t.Generation,
	})
}

func ownedLabels(t *tenantryv1.Tenant) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelTenant: labelValue(t.Name)}
}

// labelValue fits a name into a label value (63 characters at most), keeping long names distinct.
func labelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return strings.TrimRight(name[:52], "-.") + "-" + hex.EncodeToString(sum[:])[:10]
}

func mergeMaps(dst, src map[string]string) map[string]string {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = map[string]string{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// SetupWithManager registers the reconciler, its watches and the cache indexes it lists by.
func (r *TenantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &tenantryv1.Tenant{}, indexAppRef, func(o client.Object) []string {
		return []string{o.(*tenantryv1.Tenant).Spec.AppRef.Name}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &tenantryv1.Tenant{}, indexHostConflict, func(o client.Object) []string {
		c := meta.FindStatusCondition(o.(*tenantryv1.Tenant).Status.Conditions, tenantryv1.ConditionStalled)
		if c != nil && c.Status == metav1.ConditionTrue && c.Reason == tenantryv1.ReasonHostConflict {
			return []string{"true"}
		}
		return nil
	}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		// Spec changes, deletion and annotation changes (a manual nudge) call for a reconcile; the
		// operator's own status patches do not.
		For(&tenantryv1.Tenant{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Owns(&networkingv1.Ingress{}).
		Owns(&corev1.Secret{})
	// The Gateway API is optional: its routes are watched only where its CRDs are installed.
	if _, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gwapiv1.GroupName, Kind: "HTTPRoute"}, gwapiv1.GroupVersion.Version); err == nil {
		r.GatewayAPI = true
		b = b.Owns(&gwapiv1.HTTPRoute{})
	}
	return b.
		// The app's spec (ingress settings) and its appearance matter to its tenants; its status does not,
		// and changes with every tenant: following it would requeue the whole fleet on each change.
		Watches(&tenantryv1.ExpenseApp{}, handler.EnqueueRequestsFromMapFunc(r.tenantsOfApp),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A tenant whose migration in its app's rollout finished, or failed.
		WatchesRawSource(source.Channel(r.Rollouts.Changed, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Channel(r.DriftPasses.Changed, &handler.EnqueueRequestForObject{})).
		// A tenant whose schema a Citus rebalance moved to another worker.
		WatchesRawSource(source.Channel(r.Nodes.Changed, &handler.EnqueueRequestForObject{})).
		// A Tenant that lets go of hosts (deleted, or hosts changed) may unblock one waiting for them.
		Watches(&tenantryv1.Tenant{}, handler.EnqueueRequestsFromMapFunc(r.tenantsWithHostConflicts),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// So may a host claim let go of.
		Watches(&tenantryv1.HostClaim{}, handler.EnqueueRequestsFromMapFunc(r.tenantsWithHostConflicts),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc: func(event.CreateEvent) bool { return false }, UpdateFunc: func(event.UpdateEvent) bool { return false },
				DeleteFunc: func(event.DeleteEvent) bool { return true }, GenericFunc: func(event.GenericEvent) bool { return false }})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

func (r *TenantReconciler) tenantsOfApp(ctx context.Context, o client.Object) []reconcile.Request {
	return r.listRequests(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexAppRef: o.GetName()})
}

func (r *TenantReconciler) tenantsWithHostConflicts(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, req := range r.listRequests(ctx, client.MatchingFields{indexHostConflict: "true"}) {
		if req.Name != o.GetName() || req.Namespace != o.GetNamespace() {
			reqs = append(reqs, req)
		}
	}
	return reqs
}

func (r *TenantReconciler) listRequests(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list tenantryv1.TenantList
	if err := r.List(ctx, &list, opts...); err != nil {
		logf.FromContext(ctx).Error(err, "listing tenants to enqueue")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, t := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
	}
	return reqs
}
