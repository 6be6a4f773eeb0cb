package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Labels on every object the operator creates for a Tenant.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tenantry"
	LabelTenant    = "tenantry.dev/tenant"
)

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
	// UsageFirstDelay bounds how long after becoming Ready a tenant is first measured (randomly within
	// it, so that a thousand tenants onboarded at once are not measured at once); 0 is a minute.
	UsageFirstDelay time.Duration
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

	ctx, cancel := withDeadline(ctx, r.ReconcileTimeout)
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
type tenantStep func(ctx context.Context, run *tenantRun) error

// reconcileTenant runs the steps in order, stopping at the first that fails or waits.
func (r *TenantReconciler) reconcileTenant(ctx context.Context, t *tenantryv1.Tenant) (ctrl.Result, error) {
	run := &tenantRun{t: t, wasReady: readyAtGeneration(t)}
	defer run.release()
	for _, step := range []tenantStep{r.reconcileApp, r.reconcileRegistration, r.reconcileMove, r.reconcileSchema, r.reconcileAdmin,
		r.reconcileState, r.reconcileRoute, r.reconcileNode, r.reconcileUsage} {
		if err := step(ctx, run); err != nil {
			return ctrl.Result{}, err
		}
	}
	return run.result, nil
}

// reconcileUsage measures what the tenant uses (tenantdb.Usage: one statement) into status.usage, every
// UsageInterval. Onboarding never waits for it: a tenant is first measured on a reconcile after the
// one that made it Ready, a moment later. A failed measurement keeps the last one and is tried again
// at the next interval; it never makes the tenant less Ready.
func (r *TenantReconciler) reconcileUsage(ctx context.Context, run *tenantRun) error {
	t := run.t
	if r.UsageInterval <= 0 {
		return nil
	}
	if !run.wasReady {
		first := r.UsageFirstDelay
		if first <= 0 {
			first = time.Minute
		}
		run.result.RequeueAfter = time.Second + jitter(first) // measured once the Ready status is written
		return nil
	}
	if u := t.Status.Usage; u != nil {
		if due := u.MeasuredAt.Add(r.UsageInterval); time.Now().Before(due) {
			run.result.RequeueAfter = time.Until(due) + jitter(r.UsageInterval/10)
			return nil
		}
	}
	run.result.RequeueAfter = r.UsageInterval + jitter(r.UsageInterval/10)
	loc, err := r.locate(ctx, run)
	if err != nil {
		if errors.Is(err, ErrDatabaseBusy) {
			run.result.RequeueAfter = time.Second + jitter(time.Second) // measured when a place is free
		}
		return nil // the database's absence shows in the conditions of the steps that need it
	}
	if err := locateNode(ctx, run.t, loc); err != nil {
		logf.FromContext(ctx).Info("cannot find the tenant's Citus worker; keeping the last one", "error", err.Error())
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	var u tenantdb.Usage
	if err == nil {
		u, err = session.Usage(ctx)
	}
	if err != nil {
		logf.FromContext(ctx).Info("cannot measure the tenant's usage; keeping the last measurement", "error", err.Error())
		return nil
	}
	t.Status.Usage = &tenantryv1.TenantUsage{Users: u.Users, ActiveUsers: u.ActiveUsers, Expenses: u.Expenses,
		SchemaBytes: u.SchemaBytes, MeasuredAt: metav1.Now()}
	return nil
}

// jitter is a random duration up to d, which spreads thousands of tenants' periodic work over time.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

// reconcileApp finds the tenant's ExpenseApp and admin Secret, from the cache.
func (r *TenantReconciler) reconcileApp(ctx context.Context, run *tenantRun) error {
	t := run.t
	run.app = &tenantryv1.ExpenseApp{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, run.app); err != nil {
		if apierrors.IsNotFound(err) {
			return waitErr(tenantryv1.ReasonAppNotFound, time.Minute,
				"ExpenseApp %q (spec.appRef) does not exist in namespace %s", t.Spec.AppRef.Name, t.Namespace)
		}
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	var err error
	if run.adminSecret, err = r.adminSecret(ctx, t); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	return nil
}

// readyAtGeneration: the tenant was Ready for this very spec.
func readyAtGeneration(t *tenantryv1.Tenant) bool {
	return t.Status.ObservedGeneration == t.Generation &&
		meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady)
}

// rolloutPoll is how often a tenant waiting for its app's rollout looks at it again. It is told when
// the rollout ends, so this is only a safety net, kept slow: thousands of tenants polling would take
// the CPU the migration needs.
const rolloutPoll = 15 * time.Second

// followRollout reflects what the app's rollout did to a tenant whose schema was at version from: the
// new version once it is migrated, a stall with the error once its migration failed, and, while it
// waits its turn, a pending outcome for a Ready tenant (no condition changes) or a wait for another.
func (r *TenantReconciler) followRollout(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp, from int64) error {
	target := r.Release.Target()
	version, failure, _ := r.Rollouts.Tenant(types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, t.Name)
	version = max(version, from)
	switch {
	case version >= target:
		t.Status.SchemaVersion = version
		setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
			fmt.Sprintf("Schema at version %d", version))
		return nil
	case failure != nil:
		msg := fmt.Sprintf("%s; the schema stays at version %d. Fix the migration and the operator retries", failure, version)
		setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionFalse, tenantryv1.ReasonMigrationFailed, msg)
		return stallErr(tenantryv1.ReasonMigrationFailed, 2*time.Minute, errors.New(msg))
	case readyAtGeneration(t):
		return pendingErr(rolloutPoll, "waiting for ExpenseApp %s's rollout to schema version %d", app.Name, target)
	default:
		return waitErr(tenantryv1.ReasonMigrationQueued, rolloutPoll,
			"waiting for ExpenseApp %s's rollout to migrate the schema to version %d", app.Name, target)
	}
}

// registryState is the state the app should see for the tenant.
func registryState(t *tenantryv1.Tenant, version int64) string {
	switch {
	case version == 0:
		return registry.StateProvisioning
	case t.Spec.Suspend:
		return registry.StateSuspended
	default:
		return registry.StateActive
	}
}

// reconcileRegistration claims the tenant's schema name and hosts in the registry and writes its
// display name, branding and settings, once per generation; a new tenant is first placed on a shard
// (Placement), and registered in that shard's registry too. It runs before any DDL, so a tenant that
// conflicts with another creates nothing, and it resolves where the tenant lives for the steps after.
func (r *TenantReconciler) reconcileRegistration(ctx context.Context, run *tenantRun) error {
	t := run.t
	if t.Status.ObservedGeneration == t.Generation && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionRegistered) {
		return nil
	}
	home, _, registered, err := r.lookUp(ctx, run)
	if err != nil {
		return err
	}
	name := registry.TenantName(home.Database(), t.Namespace, t.Name)
	reg := registration(t, name, name)
	if !registered { // where it goes; a registered tenant keeps its shard
		shard, err := r.Placement.Choose(ctx, r.Client, t, run.app)
		if err != nil {
			return err
		}
		reg.Shard = registry.ShardColumn(shard)
	}
	id, err := home.Register(ctx, reg)
	var hc *tenantdb.HostConflictError
	var sc *tenantdb.SchemaConflictError
	switch {
	case errors.As(err, &hc):
		setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionFalse, tenantryv1.ReasonHostConflict,
			hc.Error()+"; choose another host or remove it from that tenant")
		return stallErr(tenantryv1.ReasonHostConflict, 5*time.Minute,
			fmt.Errorf("%s; choose another host or remove it from that tenant", hc.Error()))
	case errors.As(err, &sc):
		return r.schemaConflict(t, sc)
	case err != nil:
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if run.loc, err = r.openShard(ctx, run, home, id, true); err != nil {
		return err
	}
	setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Registered with hosts %v", t.Spec.Hosts))
	return nil
}

// registration is the registry row of a tenant, with the schema and role names given.
func registration(t *tenantryv1.Tenant, schema, role string) tenantdb.Registration {
	return tenantdb.Registration{
		Schema:        schema,
		Role:          role,
		Namespace:     t.Namespace,
		Name:          t.Name,
		UID:           string(t.UID),
		DisplayName:   t.DisplayNameOrName(),
		Branding:      t.Spec.Branding,
		Settings:      t.Spec.Settings,
		State:         registryState(t, t.Status.SchemaVersion),
		SchemaVersion: t.Status.SchemaVersion,
		Hosts:         t.Spec.Hosts,
	}
}

// schemaConflict stalls a tenant whose schema or role belongs to someone else.
func (r *TenantReconciler) schemaConflict(t *tenantryv1.Tenant, err error) error {
	setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionFalse, tenantryv1.ReasonSchemaConflict, err.Error())
	return stallErr(tenantryv1.ReasonSchemaConflict, 5*time.Minute, fmt.Errorf("%w; give this Tenant another name", err))
}

// reconcileSchema creates the role and schema and applies pending migrations. A Ready tenant behind a
// new release follows its ExpenseApp's rollout, without SQL and without leaving Ready.
func (r *TenantReconciler) reconcileSchema(ctx context.Context, run *tenantRun) error {
	t, app := run.t, run.app
	fsys, target := r.Release.Get()
	if t.Status.SchemaVersion >= target && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionMigrationsApplied) &&
		meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSchemaReady) {
		return nil
	}
	if readyAtGeneration(t) && run.adminSecret != nil && t.Status.SchemaVersion > 0 {
		return r.followRollout(t, app, t.Status.SchemaVersion)
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	db, id := loc.db, loc.id
	if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSchemaReady) {
		if err := r.ensureSchema(ctx, t, app, loc.homeDatabase(), db, id.Identity, false); err != nil {
			return err
		}
	}
	// An existing tenant moves to a new release with its app's rollout; a new one migrates here.
	if id.Version > 0 {
		return r.migrateExisting(ctx, t, app, db, id)
	}
	start := time.Now()
	session, err := db.Session(ctx, id.Identity)
	var version int64
	if err == nil {
		version, err = session.Migrate(ctx, fsys, string(t.UID))
	}
	migrationSeconds.Observe(time.Since(start).Seconds())
	if version > t.Status.SchemaVersion || (err == nil && version != t.Status.SchemaVersion) {
		t.Status.SchemaVersion = version
	}
	var me *tenantdb.MigrationError
	if errors.As(err, &me) {
		migrationFailures.Inc()
		msg := fmt.Sprintf("%s; the schema stays at version %d. Fix the migration and the operator retries", me.Error(), version)
		setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionFalse, tenantryv1.ReasonMigrationFailed, msg)
		return stallErr(tenantryv1.ReasonMigrationFailed, 2*time.Minute, errors.New(msg))
	}
	if err != nil {
		setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionFalse, tenantryv1.ReasonDatabaseError, err.Error())
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Schema at version %d", version))
	return nil
}

// migrateExisting brings a tenant whose schema was migrated before to the release's version: it follows
// its app's rollout, or, when no rollout has the tenant (one that came back from Retain after its app's
// rollout, say), migrates it here the way the rollout does.
func (r *TenantReconciler) migrateExisting(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp,
	db *tenantdb.DB, id tenantdb.FleetMember) error {
	target := r.Release.Target()
	if _, _, known := r.Rollouts.Tenant(types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, t.Name); known || id.Version >= target {
		return r.followRollout(t, app, id.Version)
	}
	began := time.Now()
	session, err := db.Session(ctx, id.Identity)
	version := id.Version
	if err == nil {
		version, err = session.ApplyPlan(ctx, id.Version, r.Release.Plan().From(id.Version))
	}
	migrationSeconds.Observe(time.Since(began).Seconds())
	var me *tenantdb.MigrationError
	switch {
	case errors.As(err, &me):
		migrationFailures.Inc()
		msg := fmt.Sprintf("%s; the schema stays at version %d. Fix the migration and the operator retries", me.Error(), id.Version)
		setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionFalse, tenantryv1.ReasonMigrationFailed, msg)
		return stallErr(tenantryv1.ReasonMigrationFailed, 2*time.Minute, errors.New(msg))
	case err != nil: // the database away, or the schema moved meanwhile: look again
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	t.Status.SchemaVersion = version
	setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Schema at version %d", version))
	return nil
}

// ensureSchema creates the tenant's role and schema on the shard db and lets the app's login role act
// as the tenant; for a move's target (moveTarget), only the operator's tenant login, until the cut-over
// (grantApp): nobody who holds the app's login can plant anything in the copy that the subscription's
// apply worker, which runs as the subscription's owner, would run. Names and ownership marks derive
// from the identity in the home database (home), wherever the schema is.
func (r *TenantReconciler) ensureSchema(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp,
	home string, db *tenantdb.DB, id tenantdb.Identity, moveTarget bool) error {
	role := tenantdb.Role{Name: id.Role, Mark: tenantdb.OwnerMark("tenant", home, t.Namespace, t.Name),
		// A role named before names were derived from the whole identity is taken because the registry
		// records it for this very tenant.
		Legacy: id.Role != registry.TenantName(home, t.Namespace, t.Name)}
	var ownership *tenantdb.OwnershipError
	if err := db.EnsureSchema(ctx, id.Schema, role); errors.As(err, &ownership) {
		setCondition(t, tenantryv1.ConditionSchemaReady, metav1.ConditionFalse, tenantryv1.ReasonSchemaConflict, err.Error())
		return r.schemaConflict(t, err)
	} else if err != nil {
		setCondition(t, tenantryv1.ConditionSchemaReady, metav1.ConditionFalse, tenantryv1.ReasonDatabaseError, err.Error())
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if moveTarget {
		if err := db.GrantWorker(ctx, id.Role); err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, err)
		}
	} else if err := grantApp(ctx, db, home, app, id.Role); err != nil {
		return err
	}
	setCondition(t, tenantryv1.ConditionSchemaReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Schema %q owned by role %q", id.Schema, id.Role))
	return nil
}

// grantApp lets the app's login role act as the tenant; the app's login acts only as the tenants of its
// ExpenseApp.
func grantApp(ctx context.Context, db *tenantdb.DB, home string, app *tenantryv1.ExpenseApp, tenantRole string) error {
	appRole := appRole(home, app)
	var ownership *tenantdb.OwnershipError
	if err := db.EnsureAppRoleOnce(ctx, appRole); errors.As(err, &ownership) {
		return stallErr(tenantryv1.ReasonRoleConflict, 5*time.Minute, err)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if err := db.GrantTenant(ctx, tenantRole, appRole.Name); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	return nil
}

// adminSecret returns the tenant's admin Secret from the cache, or nil when there is none.
func (r *TenantReconciler) adminSecret(ctx context.Context, t *tenantryv1.Tenant) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Name + tenantryv1.AdminSecretSuffix}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the admin Secret: %w", err)
	}
	return s, nil
}

// generatedPasswordLength is the length of a first admin's generated password (about 116 random bits).
const generatedPasswordLength = 20

// reconcileAdmin makes sure the first admin exists and its Secret holds a working login. A missing
// Secret gets a new password, and the admin user in the schema is set to it: deleting the Secret is how
// a lost admin password is reset. Once the admin is confirmed (AdminReady), the password is theirs.
func (r *TenantReconciler) reconcileAdmin(ctx context.Context, run *tenantRun) error {
	t, app, secret := run.t, run.app, run.adminSecret
	name := t.Name + tenantryv1.AdminSecretSuffix
	if secret != nil && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionAdminReady) {
		t.Status.AdminSecretName = name
		return nil
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	email := t.Spec.Admin.Email
	plain := password.Generate(generatedPasswordLength)
	if secret != nil {
		if p := string(secret.Data["password"]); p != "" {
			plain = p
		}
		if e := string(secret.Data["email"]); e != "" {
			email = e
		}
	}
	// Only a password generated right here is hashed cheaply: one in an existing Secret may be a person's.
	hashFn := password.Hash
	if secret == nil {
		hashFn = password.HashGenerated
	}
	hash, err := hashFn(plain)
	if err != nil {
		return retryErr(tenantryv1.ReasonAdminFailed, err)
	}
	// Until the admin is confirmed, the Secret's password is the one that counts, also when a Secret
	// turns out to exist already (created by an earlier attempt that the cache had not shown yet).
	session, err := loc.db.Session(ctx, loc.id.Identity)
	if err == nil {
		_, err = session.EnsureAdmin(ctx, email, hash)
	}
	if err != nil {
		setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionFalse, tenantryv1.ReasonAdminFailed, err.Error())
		return retryErr(tenantryv1.ReasonAdminFailed, err)
	}
	if secret == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace, Labels: ownedLabels(t)},
			Type:       corev1.SecretTypeOpaque,
			StringData: map[string]string{"email": email, "password": plain, "url": tenantURL(t, app)},
		}
		if err := controllerutil.SetControllerReference(t, s, r.Scheme); err != nil {
			return retryErr(tenantryv1.ReasonAdminFailed, err)
		}
		if err := r.Create(ctx, s); err != nil {
			setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionFalse, tenantryv1.ReasonAdminFailed, err.Error())
			return retryErr(tenantryv1.ReasonAdminFailed, fmt.Errorf("creating Secret %s: %w", name, err))
		}
		waitForCache(ctx, r.Client, s)
	}
	t.Status.AdminSecretName = name
	setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Admin %s; login in Secret %s", email, name))
	return nil
}

// reconcileState tells the app the tenant is live (or suspended) at its schema version. A tenant Ready at
// this generation told it already (a rollout records new versions itself).
func (r *TenantReconciler) reconcileState(ctx context.Context, run *tenantRun) error {
	t := run.t
	if readyAtGeneration(t) {
		return nil
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	// The shard's registry first (its versions), then the home database's (routing).
	for _, db := range uniqueDBs(loc.db, loc.home) {
		if err := db.SetState(ctx, loc.id.Schema, registryState(t, t.Status.SchemaVersion), t.Status.SchemaVersion); err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, err)
		}
	}
	return locateNode(ctx, t, loc)
}

// locateNode records in status.node the Citus worker that holds the tenant's schema, when its database
// is a Citus coordinator.
func locateNode(ctx context.Context, t *tenantryv1.Tenant, loc *location) error {
	citus, err := loc.db.Citus(ctx)
	if err != nil || !citus {
		return err
	}
	node, err := loc.db.SchemaNode(ctx, loc.id.Schema)
	if err != nil && !errors.Is(err, tenantdb.ErrNotDistributed) {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	t.Status.Node = node
	return nil
}

// reconcileRoute routes the tenant's hosts to the app's Service: through an Ingress (one rule per host,
// TLS as the app's spec.ingress asks), or, when the app sets spec.gateway, through a Gateway API
// HTTPRoute on its Gateways. The route of the other kind, if the tenant had one, goes.
func (r *TenantReconciler) reconcileRoute(ctx context.Context, run *tenantRun) error {
	t, app := run.t, run.app
	if app.Spec.Gateway == nil {
		if err := r.reconcileIngress(ctx, t, app); err != nil {
			return err
		}
		if r.GatewayAPI {
			return r.deleteOwned(ctx, t, &gwapiv1.HTTPRoute{})
		}
		return nil
	}
	if !r.GatewayAPI {
		msg := fmt.Sprintf("ExpenseApp %s routes through the Gateway API (spec.gateway), but the operator found no "+
			"HTTPRoute kind (gateway.networking.k8s.io/v1) when it started: install the Gateway API CRDs, then restart the operator", app.Name)
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonGatewayAPIMissing, msg)
		return stallErr(tenantryv1.ReasonGatewayAPIMissing, 5*time.Minute, errors.New(msg))
	}
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, route, func() error {
		desired := desiredHTTPRoute(t, app)
		route.Labels = mergeMaps(route.Labels, desired.Labels)
		route.Spec = desired.Spec
		return controllerutil.SetControllerReference(t, route, r.Scheme)
	})
	if err != nil {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonRouteFailed, err.Error())
		return retryErr(tenantryv1.ReasonRouteFailed, fmt.Errorf("writing HTTPRoute %s: %w", t.Name, err))
	}
	if op != controllerutil.OperationResultNone {
		waitForCache(ctx, r.Client, route)
	}
	if err := r.deleteOwned(ctx, t, &networkingv1.Ingress{}); err != nil {
		return err
	}
	t.Status.URL = tenantURL(t, app)
	if refused := routeRefusal(route); refused != "" {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonRouteNotAccepted, refused)
		return waitErr(tenantryv1.ReasonRouteNotAccepted, time.Minute, "%s", refused)
	}
	gateways := make([]string, 0, len(app.Spec.Gateway.ParentRefs))
	for _, p := range app.Spec.Gateway.ParentRefs {
		gateways = append(gateways, p.Name)
	}
	setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("HTTPRoute %s attaches %d host(s) to Gateway %s for Service %s", t.Name, len(t.Spec.Hosts),
			strings.Join(gateways, ", "), app.Name))
	return nil
}

// reconcileIngress keeps the tenant's Ingress: one rule per host to the app's Service.
func (r *TenantReconciler) reconcileIngress(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) error {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, ing, func() error {
		desired := desiredIngress(t, app)
		ing.Labels = mergeMaps(ing.Labels, desired.Labels)
		ing.Annotations = mergeMaps(ing.Annotations, desired.Annotations)
		ing.Spec = desired.Spec
		return controllerutil.SetControllerReference(t, ing, r.Scheme)
	})
	if err != nil {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonIngressFailed, err.Error())
		return retryErr(tenantryv1.ReasonIngressFailed, fmt.Errorf("writing Ingress %s: %w", t.Name, err))
	}
	if op != controllerutil.OperationResultNone {
		waitForCache(ctx, r.Client, ing)
	}
	t.Status.URL = tenantURL(t, app)
	setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Ingress %s routes %d host(s) to Service %s", t.Name, len(t.Spec.Hosts), app.Name))
	return nil
}

// deleteOwned deletes the tenant's object of obj's kind (named after the tenant), if the cache holds
// one and the tenant controls it: never someone else's object of the same name.
func (r *TenantReconciler) deleteOwned(ctx context.Context, t *tenantryv1.Tenant, obj client.Object) error {
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, t) {
		return nil
	}
	if err := client.IgnoreNotFound(r.Delete(ctx, obj)); err != nil {
		return retryErr(tenantryv1.ReasonRouteFailed, fmt.Errorf("deleting the tenant's former route %s: %w", t.Name, err))
	}
	return nil
}

// reconcileDelete takes the tenant out of the registry's service and every app login's reach, and with
// deletionPolicy Delete drops its schema and role, then lets the Tenant go. With Retain the registry
// keeps recording who owns the schema and role. Its Ingress and admin Secret go by garbage collection.
func (r *TenantReconciler) reconcileDelete(ctx context.Context, t *tenantryv1.Tenant) error {
	if !controllerutil.ContainsFinalizer(t, tenantryv1.TenantFinalizer) {
		return nil
	}
	app := &tenantryv1.ExpenseApp{}
	err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, app)
	switch {
	case apierrors.IsNotFound(err):
		// No app, no database to reach: the registry and schema went, or stay, with it.
		logf.FromContext(ctx).Info("ExpenseApp is gone; nothing to clean up in the database", "app", t.Spec.AppRef.Name)
	case err != nil:
		return retryErr(tenantryv1.ReasonDeletionBlocked, fmt.Errorf("reading ExpenseApp %s: %w", t.Spec.AppRef.Name, err))
	default:
		if err := r.deleteFromDatabase(ctx, t, app); err != nil {
			return err
		}
	}
	patch := client.MergeFrom(t.DeepCopy())
	controllerutil.RemoveFinalizer(t, tenantryv1.TenantFinalizer)
	if err := r.Patch(ctx, t, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.Nodes.Forget(types.NamespacedName{Namespace: t.Namespace, Name: t.Name})
	return nil
}

func (r *TenantReconciler) deleteFromDatabase(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) error {
	blocked := func(err error) error {
		se := asStepError(err, tenantryv1.ReasonDeletionBlocked)
		return &stepError{kind: se.kind, reason: tenantryv1.ReasonDeletionBlocked, after: 10 * time.Second,
			err: fmt.Errorf("cannot reach the database to remove the tenant: %w", se.err)}
	}
	run := &tenantRun{t: t, app: app}
	defer run.release()
	// What to retire or drop is what the registry records for this identity, never status.schema.
	home, id, registered, err := r.lookUp(ctx, run)
	if err != nil {
		return blocked(err)
	}
	if !registered {
		return nil
	}
	db := home
	if id.Shard != "" {
		if db, err = r.Databases.Shard(ctx, app, id.Shard); err != nil {
			return blocked(err)
		}
		if err := db.EnsureRegistry(ctx); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	// A move under way is undone first: its copy and replication go, and the tenant is where it was.
	if m, err := home.CurrentMove(ctx, t.Namespace, t.Name); err == nil {
		mv, err := r.openMove(ctx, run, &location{home: home, db: db, id: id}, m)
		if err != nil {
			return blocked(err)
		}
		if err := r.abortMove(ctx, run, mv, errors.New("the Tenant is being deleted"), false); err != nil {
			return blocked(err)
		}
	} else if !errors.Is(err, tenantdb.ErrNoMove) {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	// The home database's routing first: no request reaches the tenant while its shard lets go.
	for _, d := range uniqueDBs(home, db) {
		if err := d.Retire(ctx, t.Namespace, t.Name); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	if err := db.RevokeMembers(ctx, id.Role); err != nil {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	if t.Spec.DeletionPolicy != tenantryv1.DeletionPolicyDelete {
		return nil
	}
	if err := db.DropSchema(ctx, id.Schema, id.Role); err != nil {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	// The shard's row last of the shard, the home row last of all: until then it records where the
	// schema was.
	for _, d := range uniqueDBs(db, home) {
		if err := d.Unregister(ctx, t.Namespace, t.Name); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	return nil
}

// uniqueDBs is the databases given, in order, each once.
func uniqueDBs(dbs ...*tenantdb.DB) []*tenantdb.DB {
	var out []*tenantdb.DB
	for _, db := range dbs {
		if db != nil && !slices.Contains(out, db) {
			out = append(out, db)
		}
	}
	return out
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

// tenantURL is the tenant's primary host, over https when the app's Ingresses terminate TLS.
func tenantURL(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) string {
	scheme := "http"
	if app.Spec.Gateway != nil && app.Spec.Gateway.HTTPS || app.Spec.Gateway == nil && app.Spec.Ingress.TLS.Enabled {
		scheme = "https"
	}
	return scheme + "://" + t.Spec.Hosts[0] + "/"
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
		// A tenant whose schema a Citus rebalance moved to another worker.
		WatchesRawSource(source.Channel(r.Nodes.Changed, &handler.EnqueueRequestForObject{})).
		// A Tenant that lets go of hosts (deleted, or hosts changed) may unblock one waiting for them.
		Watches(&tenantryv1.Tenant{}, handler.EnqueueRequestsFromMapFunc(r.tenantsWithHostConflicts),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
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
