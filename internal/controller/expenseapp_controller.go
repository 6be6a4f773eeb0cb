package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
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
	"tenantry.dev/tenantry/internal/password"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
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
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=expenseapps/finalizers,verbs=update
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
	}{{r.reconcileDatabase, false}, {r.reconcileCitus, false}, {r.reconcileFleet, true}, {r.reconcileShards, true},
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
	if err := r.rolloutDone(ctx, run); err != nil {
		return ctrl.Result{}, err
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
type appStep func(ctx context.Context, run *appRun) error

func (r *ExpenseAppReconciler) tenants(ctx context.Context, app *tenantryv1.ExpenseApp) ([]tenantryv1.Tenant, error) {
	var list tenantryv1.TenantList
	err := r.List(ctx, &list, client.InNamespace(app.Namespace), client.MatchingFields{indexAppRef: app.Name},
		client.UnsafeDisableDeepCopy)
	return list.Items, err
}

// reconcileFleet moves the app's tenants to the release's schema version and counts them into its
// status. Tenants behind the release are migrated by a rollout from the database (see Rollouts), which
// this starts when needed; a fleet already at the target sends no SQL. It returns nil once every tenant
// is at the target, a wait while the fleet is on its way (the status is patched about once a second),
// and a stall when the rollout halted.
func (r *ExpenseAppReconciler) reconcileFleet(ctx context.Context, run *appRun) error {
	app, tenants, target := run.app, run.tenants, run.target
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	view, ran := r.Rollouts.View(key, r.Release.Plan())
	behind := false
	names := make([]string, 0, len(tenants))
	for _, t := range tenants {
		names = append(names, t.Name)
		behind = behind || (t.Status.SchemaVersion > 0 && t.Status.SchemaVersion < target)
	}
	if behind || ran {
		// Every shard that holds tenants takes part, each with its own pool of maxConcurrent connections.
		dbs := map[string]*tenantdb.DB{}
		for shard := range tenantsByShard(tenants) {
			db, err := r.Databases.Shard(ctx, app, shard)
			if err != nil {
				return err
			}
			dbs[shard] = db
		}
		view = r.Rollouts.Ensure(app, dbs, r.Release.Plan(), names)
	}
	atTarget, failed := fleetStatus(tenants, view, target)
	ready := 0
	for _, t := range tenants {
		if meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) {
			ready++
		}
	}
	app.Status.Tenants, app.Status.ReadyTenants, app.Status.TenantsAtTarget = int32(len(tenants)), int32(ready), int32(atTarget)
	app.Status.TargetSchemaVersion = target
	app.Status.Migration = fmt.Sprintf("%d/%d", atTarget, len(tenants))
	app.Status.FailedTenants = nil
	if len(failed) > 0 {
		app.Status.FailedTenants = failed[:min(len(failed), 20)]
	}
	for state, n := range map[string]int{"total": len(tenants), "ready": ready, "at_target": atTarget, "failed": len(failed)} {
		tenantsByState.WithLabelValues(app.Namespace, app.Name, state).Set(float64(n))
	}
	halted := view.halted || len(failed) > int(app.Spec.Migrations.MaxFailures)
	haltedValue := 0.0
	if halted {
		haltedValue = 1
	}
	rolloutHalted.WithLabelValues(app.Namespace, app.Name).Set(haltedValue)
	switch {
	case view.err != nil:
		msg := fmt.Sprintf("the fleet rollout stopped, and starts again: %v", view.err)
		setAppCondition(app, tenantryv1.ConditionFleetMigrated, metav1.ConditionFalse, tenantryv1.ReasonDatabaseError, msg)
		return retryErr(tenantryv1.ReasonDatabaseError, errors.New(msg))
	case halted:
		msg := haltMessage(app, target, failed)
		setAppCondition(app, tenantryv1.ConditionFleetMigrated, metav1.ConditionFalse, tenantryv1.ReasonRolloutHalted, msg)
		return stallErr(tenantryv1.ReasonRolloutHalted, 30*time.Second, errors.New(msg))
	case atTarget < len(tenants):
		msg := fmt.Sprintf("%s tenants at schema version %d", app.Status.Migration, target)
		setAppCondition(app, tenantryv1.ConditionFleetMigrated, metav1.ConditionFalse, tenantryv1.ReasonProgressing, msg)
		after := 5 * time.Second // tenants still onboarding: their own events bring this back sooner
		if view.running {
			after = time.Second
		}
		return waitErr(tenantryv1.ReasonProgressing, after, "%s", msg)
	}
	setAppCondition(app, tenantryv1.ConditionFleetMigrated, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Every tenant is at schema version %d", target))
	return nil
}

// appSecretSuffix names the Secret holding the app's own connection string: <app>-app-db.
const appSecretSuffix = "-app-db"

// appSecretName is the Secret holding the app's own connection string.
func appSecretName(app *tenantryv1.ExpenseApp) string { return app.Name + appSecretSuffix }

// reconcileDatabase gives the app a login role of its own and a Secret with its connection string, so the
// admin connection string never reaches the app's pods. The Secret's connection string follows the
// admin one (the same server, port and database; the app's own user and password). It sends SQL only
// when the Secret is new or out of date, or the spec changed. It returns the Secret as it now is.
func (r *ExpenseAppReconciler) reconcileDatabase(ctx context.Context, run *appRun) error {
	var err error
	run.secret, err = r.ensureAppLogin(ctx, run.app, run.tenants)
	return err
}

// ensureAppLogin is reconcileDatabase's work; it returns the Secret as it now is. The login has the
// same name and password on every shard, and a connection string for each: key "uri" for the home
// database, key "shards" for the others (a JSON object of shard name to connection string).
func (r *ExpenseAppReconciler) ensureAppLogin(ctx context.Context, app *tenantryv1.ExpenseApp,
	tenants []tenantryv1.Tenant) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: appSecretName(app)}, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading Secret %s: %w", appSecretName(app), err))
	}
	exists := err == nil
	fail := func(err error) (*corev1.Secret, error) {
		se := asStepError(err, tenantryv1.ReasonDatabaseError)
		setAppCondition(app, tenantryv1.ConditionDatabaseReady, metav1.ConditionFalse, se.reason, se.Error())
		return nil, err
	}
	home, err := r.Databases.For(ctx, app)
	if err != nil {
		return fail(err)
	}
	role := appRole(home.Database(), app)
	pass := string(secret.Data["password"])
	if pass == "" {
		pass = password.Generate(32)
	}
	shards := appShards(app, tenants)
	want := make(map[string]string, len(shards))
	for _, shard := range shards {
		adminURI, err := r.Databases.URI(ctx, app, shard)
		if err != nil {
			return fail(err)
		}
		if want[shard], err = withUser(adminURI, role.Name, pass); err != nil {
			return fail(stallErr(tenantryv1.ReasonInvalidDatabase, time.Minute, fmt.Errorf("shard %s: %w", shard, err)))
		}
	}
	// Only the connection strings (servers, databases, login name) decide the login: another change of
	// the spec (replicas, maxConcurrent) must not re-grant thousands of tenants.
	have := appLoginURIs(secret)
	ready := exists && meta.IsStatusConditionTrue(app.Status.Conditions, tenantryv1.ConditionDatabaseReady)
	if ready && maps.Equal(have, want) {
		return secret, nil
	}
	if app.Status.Citus, err = home.Citus(ctx); err != nil {
		return fail(retryErr(tenantryv1.ReasonDatabaseError, err))
	}
	placed := tenantsByShard(tenants)
	for _, shard := range shards {
		if ready && have[shard] == want[shard] {
			continue
		}
		if err := r.ensureLoginOn(ctx, app, shard, role, pass, placed[shard]); err != nil {
			return fail(err)
		}
	}
	others := maps.Clone(want)
	delete(others, tenantryv1.HomeShard)
	shardURIs, err := json.Marshal(others)
	if err != nil {
		return fail(err)
	}
	secret.ObjectMeta = metav1.ObjectMeta{Name: appSecretName(app), Namespace: app.Namespace,
		ResourceVersion: secret.ResourceVersion, Labels: map[string]string{LabelManagedBy: ManagedBy}}
	secret.Data = map[string][]byte{"uri": []byte(want[tenantryv1.HomeShard]), appShardsKey: shardURIs,
		"username": []byte(role.Name), "password": []byte(pass)}
	if err := controllerutil.SetControllerReference(app, secret, r.Scheme); err != nil {
		return fail(err)
	}
	if exists {
		err = r.Update(ctx, secret)
	} else {
		err = r.Create(ctx, secret)
	}
	if err != nil {
		return fail(retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing Secret %s: %w", secret.Name, err)))
	}
	waitForCache(ctx, r.Client, secret)
	r.Databases.Reread(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	msg := fmt.Sprintf("The app logs in as %q (Secret %s)", role.Name, secret.Name)
	if len(shards) > 1 {
		msg += fmt.Sprintf(" on %d shards", len(shards))
	}
	setAppCondition(app, tenantryv1.ConditionDatabaseReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded, msg)
	return secret, nil
}

// ensureLoginOn creates or updates the app's login on one shard and lets it act as the tenants placed
// there (names): what a new or renamed login needs for the tenants it serves.
func (r *ExpenseAppReconciler) ensureLoginOn(ctx context.Context, app *tenantryv1.ExpenseApp, shard string,
	role tenantdb.Role, pass string, names []string) error {
	db, err := r.Databases.Shard(ctx, app, shard)
	if err != nil {
		return err
	}
	var ownership *tenantdb.OwnershipError
	if err := db.EnsureAppRole(ctx, role, pass); errors.As(err, &ownership) {
		return stallErr(tenantryv1.ReasonRoleConflict, 5*time.Minute,
			fmt.Errorf("shard %s: %w: give the ExpenseApp another name, or point it at another database", shard, err))
	} else if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
	}
	if err := db.GrantTenants(ctx, app.Namespace, names, role.Name); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
	}
	return nil
}

// reconcileShards reports every shard in status.shards: its tenants, the lowest schema version among
// them and, when the app has shards besides home, whether the operator reaches it. A shard removed
// from spec.shards while tenants remain on it keeps being served, and the app is Stalled until they
// have moved; an unreachable shard leaves the app not Ready (its tenants get 503s, the others are served).
// Its verdict (a stall for a shard removed in use, a retry for one away) holds only the rollout's end.
func (r *ExpenseAppReconciler) reconcileShards(ctx context.Context, run *appRun) error {
	app := run.app
	placed := tenantsByShard(run.tenants)
	minVersion := map[string]int64{}
	for i := range run.tenants {
		t := &run.tenants[i]
		if shard := placedShard(t); shard != "" && t.Status.SchemaVersion > 0 &&
			(minVersion[shard] == 0 || t.Status.SchemaVersion < minVersion[shard]) {
			minVersion[shard] = t.Status.SchemaVersion
		}
	}
	inSpec := map[string]bool{tenantryv1.HomeShard: true}
	for _, s := range app.Spec.Shards {
		inSpec[s.Name] = true
	}
	var statuses []tenantryv1.ShardStatus
	var problems []string
	var verdict error
	for _, shard := range appShards(app, run.tenants) {
		ref, _ := shardRef(app, shard)
		st := tenantryv1.ShardStatus{Name: shard, Tenants: int32(len(placed[shard])), SchemaVersion: minVersion[shard],
			Reachable: meta.IsStatusConditionTrue(app.Status.Conditions, tenantryv1.ConditionDatabaseReady)}
		if shard != tenantryv1.HomeShard {
			st.SecretRef = &ref
			st.Reachable, st.Message = true, ""
			if err := r.pingShard(ctx, app, shard); err != nil {
				st.Reachable, st.Message = false, err.Error()
				problems = append(problems, fmt.Sprintf("shard %s: %s", shard, err.Error()))
			}
		}
		if !inSpec[shard] {
			st.Message = fmt.Sprintf("removed from spec.shards but still holds %d tenant(s) (%s): set their spec.shard "+
				"to another shard, and remove it once they have moved", len(placed[shard]), strings.Join(firstNames(placed[shard], 5), ", "))
			verdict = stallErr(tenantryv1.ReasonShardInUse, time.Minute, fmt.Errorf("shard %s %s", shard, st.Message))
		}
		statuses = append(statuses, st)
	}
	// A shard that was listed and is no longer (removed, and empty) has its connections closed.
	listed := map[string]bool{}
	for _, st := range statuses {
		listed[st.Name] = true
	}
	for _, s := range app.Status.Shards {
		if !listed[s.Name] {
			r.Databases.ForgetShard(types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, s.Name)
		}
	}
	app.Status.Shards = statuses
	switch {
	case verdict != nil:
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionFalse, tenantryv1.ReasonShardInUse, verdict.Error())
	case len(problems) > 0:
		msg := strings.Join(problems, "; ")
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionFalse, tenantryv1.ReasonShardUnreachable, msg)
		verdict = retryErr(tenantryv1.ReasonShardUnreachable, errors.New(msg))
	case len(statuses) > 1:
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
			fmt.Sprintf("%d shards reachable", len(statuses)))
	default:
		meta.RemoveStatusCondition(&app.Status.Conditions, tenantryv1.ConditionShardsReady)
	}
	return verdict
}

// pingShard checks that the operator reaches a shard, within a few seconds.
func (r *ExpenseAppReconciler) pingShard(ctx context.Context, app *tenantryv1.ExpenseApp, shard string) error {
	db, err := r.Databases.Shard(ctx, app, shard)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return db.Ping(ctx)
}

// firstNames is at most n of names, and how many more there are.
func firstNames(names []string, n int) []string {
	if len(names) <= n {
		return names
	}
	return append(names[:n:n], fmt.Sprintf("and %d more", len(names)-n))
}

// SecretHash is a short hash of a Secret's data, for a pod template annotation.
func SecretHash(s *corev1.Secret) string {
	h := sha256.New()
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", k, len(s.Data[k])) // a hash's Write never fails
		h.Write(s.Data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// appRole is the app's login role of an ExpenseApp: its name derived from the ExpenseApp's identity,
// and the mark that says it is this ExpenseApp's.
// database is the home database's name: the same login serves every shard.
func appRole(database string, app *tenantryv1.ExpenseApp) tenantdb.Role {
	return tenantdb.Role{Name: registry.AppRoleName(database, app.Namespace, app.Name),
		Mark: tenantdb.OwnerMark("app", database, app.Namespace, app.Name)}
}

// workerRole is the operator's own login for the tenant sessions of an ExpenseApp's tenants on one of
// its databases (named after it).
func workerRole(database string, app *tenantryv1.ExpenseApp) tenantdb.Role {
	return tenantdb.Role{Name: registry.WorkerRoleName(database, app.Namespace, app.Name),
		Mark: tenantdb.OwnerMark("operator", database, app.Namespace, app.Name)}
}

// withUser returns a postgres:// URL with its user and password replaced. Credentials given as query
// parameters are dropped too: the admin's must never reach the app's Secret.
func withUser(uri, user, pass string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("the database connection string must be a postgres:// URL to derive the app's login from it")
	}
	q := u.Query()
	for key := range q {
		switch strings.ToLower(key) {
		case "user", "password", "passfile", "sslpassword":
			q.Del(key)
		}
	}
	u.RawQuery = q.Encode()
	u.User = url.UserPassword(user, pass)
	return u.String(), nil
}

func appLabels(app *tenantryv1.ExpenseApp) map[string]string {
	return map[string]string{"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name,
		LabelManagedBy: ManagedBy}
}

// reconcileDeployment keeps the app's Deployment. The image moves to spec.image only when every tenant
// is at the schema version this release needs; until then the running image stays, and tenants already
// migrated keep being served by it.
func (r *ExpenseAppReconciler) reconcileDeployment(ctx context.Context, run *appRun) error {
	app, target, secretHash := run.app, run.target, SecretHash(run.secret)
	image := r.image(app)
	if image == "" {
		err := errors.New("spec.image is empty and the operator has no --default-app-image: set the app's image " +
			"(the Tenantry image holds it as /app)")
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonNoImage, err.Error())
		return stallErr(tenantryv1.ReasonNoImage, time.Minute, err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, dep, func() error {
		if running := currentImage(dep); running != "" && running != image && app.Status.TenantsAtTarget < app.Status.Tenants {
			image = running // not yet: the new image needs every tenant at the target version
		}
		labels := appLabels(app)
		dep.Labels = mergeMaps(dep.Labels, labels)
		dep.Spec.Replicas = app.Spec.Replicas
		dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{
			"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name}}
		dep.Spec.Template.Labels = labels
		dep.Spec.Template.Annotations = mergeMaps(dep.Spec.Template.Annotations,
			map[string]string{AnnotationSchemaVersion: fmt.Sprint(target), AnnotationAppSecretHash: secretHash})
		dep.Spec.Template.Spec = appPodSpec(app, image)
		return controllerutil.SetControllerReference(app, dep, r.Scheme)
	})
	if err != nil {
		err = fmt.Errorf("writing Deployment %s: %w", app.Name, err)
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonAPIServerError, err.Error())
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	app.Status.Image = currentImage(dep)
	app.Status.ReadyReplicas = dep.Status.ReadyReplicas
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, pdb, func() error {
		pdb.Labels = mergeMaps(pdb.Labels, appLabels(app))
		pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
		pdb.Spec.Selector = dep.Spec.Selector
		return controllerutil.SetControllerReference(app, pdb, r.Scheme)
	}); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing PodDisruptionBudget %s: %w", app.Name, err))
	}
	return nil
}

// image is the app image an ExpenseApp asks for: its spec.image, else the operator's default.
func (r *ExpenseAppReconciler) image(app *tenantryv1.ExpenseApp) string {
	if app.Spec.Image != "" {
		return app.Spec.Image
	}
	return r.DefaultImage
}

func currentImage(dep *appsv1.Deployment) string {
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "app" {
			return c.Image
		}
	}
	return ""
}

func appPodSpec(app *tenantryv1.ExpenseApp, image string) corev1.PodSpec {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(ServicePortName)}}, PeriodSeconds: 10}
	}
	return corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name:    "app",
			Image:   image,
			Command: []string{"/app"},
			Args:    []string{fmt.Sprintf("--http-addr=:%d", appPort), fmt.Sprintf("--metrics-addr=:%d", appMetricsPort)},
			Env: []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: "uri"}}},
				{Name: "SHARD_DATABASE_URLS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: appShardsKey,
					Optional: ptr.To(true)}}},
				{Name: "CITUS_ROUTING", Value: citusRouting(app)}},
			Ports: []corev1.ContainerPort{{Name: ServicePortName, ContainerPort: appPort},
				{Name: MetricsPortName, ContainerPort: appMetricsPort}},
			Resources:      app.Spec.Resources,
			LivenessProbe:  probe("/healthz"),
			ReadinessProbe: probe("/readyz"),
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
				RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
	}
}

// citusRouting is the app's --citus-routing for the ExpenseApp's spec.database.citusRouting.
func citusRouting(app *tenantryv1.ExpenseApp) string {
	if app.Spec.Database.CitusRouting == tenantryv1.CitusRoutingCoordinator {
		return registry.CitusRouteCoordinator
	}
	return registry.CitusRouteWorkers
}

// reconcileService keeps the Service tenant Ingresses point at: named after the app, port "http", and
// port "metrics" for Prometheus (the ServiceMonitor in config/prometheus scrapes it).
func (r *ExpenseAppReconciler) reconcileService(ctx context.Context, run *appRun) error {
	app := run.app
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
		svc.Labels = mergeMaps(svc.Labels, appLabels(app))
		svc.Spec.Selector = map[string]string{"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name}
		svc.Spec.Ports = []corev1.ServicePort{{Name: ServicePortName, Port: appServicePort, TargetPort: intstr.FromString(ServicePortName)},
			{Name: MetricsPortName, Port: appMetricsPort, TargetPort: intstr.FromString(MetricsPortName)}}
		return controllerutil.SetControllerReference(app, svc, r.Scheme)
	})
	if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing Service %s: %w", app.Name, err))
	}
	return nil
}

// rolloutDone, once every other step has passed: Ready once the Deployment runs spec.image with every
// replica updated and available.
func (r *ExpenseAppReconciler) rolloutDone(ctx context.Context, run *appRun) error {
	app := run.app
	dep := &appsv1.Deployment{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, dep); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	want := ptr.Deref(app.Spec.Replicas, 1)
	done := currentImage(dep) == r.image(app) && dep.Status.ObservedGeneration >= dep.Generation &&
		dep.Status.UpdatedReplicas >= want && dep.Status.AvailableReplicas >= want
	if !done {
		msg := fmt.Sprintf("Deployment %s: %d of %d replicas updated and available", dep.Name, dep.Status.AvailableReplicas, want)
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonProgressing, msg)
		return waitErr(tenantryv1.ReasonProgressing, 10*time.Second, "%s", msg)
	}
	setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Deployment %s runs %s on %d replica(s)%s", dep.Name, r.image(app), want, runBy(dep)))
	run.result = ctrl.Result{RequeueAfter: appSecretRecheck}
	if run.requeue > 0 {
		run.result.RequeueAfter = min(run.result.RequeueAfter, run.requeue)
	}
	return nil
}

// AnnotationRunBy on a Deployment names what runs its pods when that is not a kubelet: `make dev`
// runs the app's container on the developer's machine and reports it in the Deployment's status.
const AnnotationRunBy = "tenantry.dev/run-by"

// runBy says who runs the Deployment's pods, when it is not a kubelet.
func runBy(dep *appsv1.Deployment) string {
	if by := dep.Annotations[AnnotationRunBy]; by != "" {
		return ", run by " + by
	}
	return ""
}

// reconcileDelete waits until no Tenant uses the app: a Tenant needs the app's database to clean up
// after itself (and its deletionPolicy decides what happens to its data).
func (r *ExpenseAppReconciler) reconcileDelete(ctx context.Context, app *tenantryv1.ExpenseApp, tenants []tenantryv1.Tenant) error {
	if len(tenants) > 0 {
		names := make([]string, 0, 5)
		for _, t := range tenants[:min(len(tenants), 5)] {
			names = append(names, t.Name)
		}
		return waitErr(tenantryv1.ReasonDeletionBlocked, 10*time.Second,
			"%d Tenant(s) still use this ExpenseApp (%s): delete them first; each one's deletionPolicy decides what "+
				"happens to its data", len(tenants), strings.Join(names, ", "))
	}
	r.Rollouts.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	r.Databases.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	forgetAppMetrics(app.Namespace, app.Name)
	patch := client.MergeFrom(app.DeepCopy())
	controllerutil.RemoveFinalizer(app, tenantryv1.ExpenseAppFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, app, patch))
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
// Tenants, and the ends of fleet rollouts.
func (r *ExpenseAppReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tenantryv1.ExpenseApp{}, builder.WithPredicates(appChanged)).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&corev1.Secret{}).
		Watches(&tenantryv1.Tenant{}, tenantsToApp{}).
		WatchesRawSource(source.Channel(r.Rollouts.Ended, &handler.EnqueueRequestForObject{})).
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
