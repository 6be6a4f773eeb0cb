package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/backup"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// swapLockTimeout bounds how long an in-place restore's swap waits for the tenant's writes in flight;
// swapAttempts is how often it tries before the restore fails (and leaves the tenant as it was).
const (
	swapLockTimeout = 5 * time.Second
	swapAttempts    = 3
)

// RestoreReconciler runs each Restore once: it restores the Backup into a staging schema beside the
// tenant's, on the tenant's session (backup.Restore), migrates it to the release's version, and swaps it
// in for the tenant's schema (tenantdb.SwapSchema). It keeps the replaced schema for spec.keepPrevious,
// then drops it.
type RestoreReconciler struct {
	client.Client
	// APIReader reads the object store's credentials Secret (see BackupReconciler).
	APIReader client.Reader
	// ObjectStores are the stores an ExpenseApp may name.
	ObjectStores *ObjectStorePolicy
	Databases    *Databases
	Release      *Release
	Recorder     events.EventRecorder
	// Timeout bounds one restore (0: tenantdb.BulkTimeout).
	Timeout time.Duration
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=restores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=restores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=restores/finalizers,verbs=update

// Reconcile runs a Restore, drops what it kept once its time is up, or lets it go.
func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	rs := &tenantryv1.Restore{}
	if err := r.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := rs.DeepCopy()
	patchCtx := ctx
	defer func() {
		result, retErr = summarize(patchCtx, r.Client, r.Recorder, summary{
			obj: rs, before: before, conditions: &rs.Status.Conditions, beforeConditions: before.Status.Conditions,
			observed: &rs.Status.ObservedGeneration, oldStatus: before.Status, status: func() any { return rs.Status },
			finalizer: tenantryv1.RestoreFinalizer, readyEvents: true,
			readyMsg: func() string {
				if rs.Status.Phase != tenantryv1.RestoreCompleted || rs.Status.WritesPaused == nil || rs.Status.KeepUntil == nil {
					return "" // not Ready: the message is not used
				}
				msg := fmt.Sprintf("Tenant %s serves Backup %s's data (%d rows); its writes were paused for %s", rs.Spec.Tenant.Name,
					rs.Spec.Backup.Name, rs.Status.Rows, rs.Status.WritesPaused.Duration)
				if rs.Status.PreviousDropped {
					return msg + "; the schema it replaced was dropped"
				}
				return msg + fmt.Sprintf("; the schema it replaced is kept as %s until %s", rs.Status.PreviousSchema,
					rs.Status.KeepUntil.UTC().Format(time.RFC3339))
			},
		}, result, retErr)
	}()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = tenantdb.BulkTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if !rs.DeletionTimestamp.IsZero() {
		if err := r.dropPrevious(ctx, rs); err != nil {
			return ctrl.Result{}, err
		}
		patch := client.MergeFrom(rs.DeepCopy())
		controllerutil.RemoveFinalizer(rs, tenantryv1.RestoreFinalizer)
		if err := r.Patch(ctx, rs, patch); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("removing finalizer: %w", err)
		}
		return ctrl.Result{}, nil
	}
	switch rs.Status.Phase {
	case tenantryv1.RestoreCompleted:
		if rs.Status.PreviousDropped || rs.Status.KeepUntil == nil {
			return ctrl.Result{}, nil
		}
		if wait := time.Until(rs.Status.KeepUntil.Time); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		return ctrl.Result{}, r.dropPrevious(ctx, rs)
	case tenantryv1.RestoreFailed:
		return ctrl.Result{}, stallErr(tenantryv1.ReasonSourceFailed, time.Hour, errors.New(rs.Status.Error))
	}
	if !controllerutil.ContainsFinalizer(rs, tenantryv1.RestoreFinalizer) || rs.Labels[LabelTenant] != labelValue(rs.Spec.Tenant.Name) {
		patch := client.MergeFrom(rs.DeepCopy())
		controllerutil.AddFinalizer(rs, tenantryv1.RestoreFinalizer)
		rs.Labels = mergeMaps(rs.Labels, map[string]string{LabelTenant: labelValue(rs.Spec.Tenant.Name)})
		if err := r.Patch(ctx, rs, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}
	res, err := r.restore(ctx, rs)
	return res, err
}

// restore waits for the Tenant (Ready, not moving) and the Backup (Completed, of that Tenant), then runs.
// Once it has begun, the Restore ends Completed or Failed.
func (r *RestoreReconciler) restore(ctx context.Context, rs *tenantryv1.Restore) (ctrl.Result, error) {
	if rs.Status.Phase == "" {
		rs.Status.Phase = tenantryv1.RestorePending
	}
	t := &tenantryv1.Tenant{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: rs.Spec.Tenant.Name}, t); apierrors.IsNotFound(err) {
		return ctrl.Result{}, waitErr(tenantryv1.ReasonSourceNotFound, time.Minute, "Tenant %q (spec.tenant) does not exist in namespace %s", rs.Spec.Tenant.Name, rs.Namespace)
	} else if err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) || meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil {
		return ctrl.Result{}, waitErr(tenantryv1.ReasonProgressing, 15*time.Second, "waiting for Tenant %s to be Ready, and not moving", t.Name)
	}
	b := &tenantryv1.Backup{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: rs.Spec.Backup.Name}, b); apierrors.IsNotFound(err) {
		return ctrl.Result{}, waitErr(tenantryv1.ReasonSourceNotFound, time.Minute, "Backup %q (spec.backup) does not exist in namespace %s", rs.Spec.Backup.Name, rs.Namespace)
	} else if err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	switch {
	case b.Spec.Tenant.Name != t.Name:
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("backup %s is of Tenant %s, not of %s: a restore in place puts a tenant back to one of its own backups "+
			"(a new Tenant with spec.source.backup restores any)", b.Name, b.Spec.Tenant.Name, t.Name))
	case b.Status.Phase == tenantryv1.BackupFailed:
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("backup %s failed, and has nothing to restore: %s", b.Name, b.Status.Error))
	case b.Status.Phase != tenantryv1.BackupCompleted:
		return ctrl.Result{}, waitErr(tenantryv1.ReasonSourceNotReady, 15*time.Second, "waiting for Backup %s to complete", b.Name)
	}
	app, store, err := appStore(ctx, r.Client, r.APIReader, r.ObjectStores, t)
	if err != nil {
		return ctrl.Result{}, err
	}
	dir := backup.Dir(b.Namespace, b.Spec.Tenant.Name, b.Name, string(b.UID))
	m, err := backup.ReadManifest(ctx, store, dir)
	switch {
	case errors.Is(err, backup.ErrNotFound):
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("backup %s's files are not at %s: %w", b.Name, store.URL(dir), err))
	case err != nil:
		return ctrl.Result{}, retryErr(tenantryv1.ReasonObjectStoreError, err)
	case m.Backup.UID != string(b.UID) || m.Tenant.Namespace != t.Namespace:
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("the manifest at %s is not Backup %s's of namespace %s", store.URL(dir), b.Name, t.Namespace))
	case m.SchemaVersion > r.Release.Target():
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("backup %s is at schema version %d, newer than this release's migrations (up to %d)",
			b.Name, m.SchemaVersion, r.Release.Target()))
	}
	db, id, err := registeredLocation(ctx, r.Databases, app, t.Namespace, t.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if citus, err := db.Citus(ctx); err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonDatabaseError, err)
	} else if citus {
		return ctrl.Result{}, r.fail(rs, fmt.Errorf("a restore in place is not supported on a Citus coordinator: restore Backup %s "+
			"into a new Tenant (spec.source.backup) instead", b.Name))
	}
	staging, previous := tenantdb.RestoreSchemas(id.Schema, string(rs.UID))
	// A restore whose swap happened, and whose status was not written (the operator stopped): done.
	if swapped, err := db.KeptSchemaExists(ctx, previous, id.Role); err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonDatabaseError, err)
	} else if swapped {
		return r.completed(rs, t, b, previous, 0, 0), nil
	}

	// From here it runs, and says so.
	before := rs.DeepCopy()
	now := metav1.Now()
	rs.Status.Phase, rs.Status.StartedAt, rs.Status.SchemaVersion = tenantryv1.RestoreRunning, &now, m.SchemaVersion
	meta.SetStatusCondition(&rs.Status.Conditions, metav1.Condition{Type: tenantryv1.ConditionReconciling, Status: metav1.ConditionTrue,
		Reason: tenantryv1.ReasonProgressing, ObservedGeneration: rs.Generation,
		Message: fmt.Sprintf("Restoring %d rows beside the tenant's schema; the tenant is served as it was meanwhile", m.Rows())})
	if err := r.Status().Patch(ctx, rs, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	rows, paused, err := r.run(ctx, rs, db, id, store, dir, m, staging, previous)
	stopped := metav1.Now()
	rs.Status.StoppedAt = &stopped
	if err != nil {
		if derr := db.DropKeptSchema(context.WithoutCancel(ctx), staging, id.Role); derr != nil {
			err = fmt.Errorf("%w (and dropping the staging schema %s: %v)", err, staging, derr)
		}
		restoresTotal.WithLabelValues("failed").Inc()
		r.Recorder.Eventf(t, rs, corev1.EventTypeWarning, "RestoreFailed", "Restore", "Restore %s of Backup %s failed; the tenant is as it was: %v", rs.Name, b.Name, err)
		return ctrl.Result{}, r.fail(rs, err)
	}
	restoresTotal.WithLabelValues("completed").Inc()
	return r.completed(rs, t, b, previous, rows, paused), nil
}

// completed records a restore whose swap is done, and when the schema it replaced goes.
func (r *RestoreReconciler) completed(rs *tenantryv1.Restore, t *tenantryv1.Tenant, b *tenantryv1.Backup, previous string,
	rows int64, paused time.Duration) ctrl.Result {
	keep := 7 * 24 * time.Hour
	if rs.Spec.KeepPrevious != nil {
		keep = rs.Spec.KeepPrevious.Duration
	}
	stopped := metav1.Now()
	if rs.Status.StoppedAt == nil {
		rs.Status.StoppedAt = &stopped
	}
	until := metav1.NewTime(rs.Status.StoppedAt.Add(keep))
	rs.Status.Phase, rs.Status.Rows, rs.Status.WritesPaused = tenantryv1.RestoreCompleted, rows, &metav1.Duration{Duration: paused.Round(time.Millisecond)}
	rs.Status.PreviousSchema, rs.Status.KeepUntil = previous, &until
	r.Recorder.Eventf(t, rs, corev1.EventTypeNormal, "Restored", "Restore", "Restore %s put the tenant back to Backup %s: %d rows",
		rs.Name, b.Name, rows)
	return ctrl.Result{RequeueAfter: keep}
}

// run fills the staging schema, on the tenant's session acting on it, migrates it to the release's
// version, and swaps it in.
func (r *RestoreReconciler) run(ctx context.Context, rs *tenantryv1.Restore, db *tenantdb.DB, id tenantdb.Identity, store *backup.Store,
	dir string, m backup.Manifest, staging, previous string) (int64, time.Duration, error) {
	if err := db.PrepareStaging(ctx, staging, id.Role); err != nil {
		return 0, 0, err
	}
	session, err := db.Session(ctx, tenantdb.Identity{Schema: staging, Role: id.Role})
	if err != nil {
		return 0, 0, err
	}
	fsys, _ := r.Release.Get()
	occasion := string(rs.UID) + "/restore"
	if _, err := session.MigrateTo(ctx, fsys, occasion, m.SchemaVersion); err != nil {
		return 0, 0, err
	}
	// Every session ends; passwords, deactivations and revoked API tokens stay as they are now.
	res, err := backup.Restore(ctx, session, store, dir, m, migrations.SessionTables, nil)
	if err != nil {
		return 0, 0, err
	}
	if err := session.CarryForward(ctx, id.Schema, migrations.CarryForward); err != nil {
		return 0, 0, err
	}
	if _, err := session.Migrate(ctx, fsys, occasion); err != nil {
		return 0, 0, err
	}
	// A move that began meanwhile would carry the schema swapped out: the tenant must still be where it
	// was, and not moving.
	t := &tenantryv1.Tenant{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: rs.Spec.Tenant.Name}, t); err != nil {
		return 0, 0, err
	}
	if meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil || (t.Spec.Shard != "" && t.Spec.Shard != t.Status.Shard) {
		return 0, 0, fmt.Errorf("tenant %s began to move between shards during the restore; restore it again once it has moved", t.Name)
	}
	for attempt := 1; ; attempt++ {
		paused, err := db.SwapSchema(ctx, id.Schema, staging, previous, id.Role, swapLockTimeout)
		if err == nil || attempt == swapAttempts {
			return res.Rows, paused, err
		}
	}
}

// fail ends the Restore Failed, with why.
func (r *RestoreReconciler) fail(rs *tenantryv1.Restore, err error) error {
	rs.Status.Phase, rs.Status.Error = tenantryv1.RestoreFailed, err.Error()
	return stallErr(tenantryv1.ReasonSourceFailed, time.Hour, err)
}

// dropPrevious drops the schema the Restore kept, if it kept one and it is still there.
func (r *RestoreReconciler) dropPrevious(ctx context.Context, rs *tenantryv1.Restore) error {
	if rs.Status.PreviousSchema == "" || rs.Status.PreviousDropped {
		return nil
	}
	t := &tenantryv1.Tenant{}
	err := r.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: rs.Spec.Tenant.Name}, t)
	if apierrors.IsNotFound(err) {
		// The tenant went; with deletionPolicy Delete the kept schema went with its data, with Retain
		// it stays with the retained schema.
		rs.Status.PreviousDropped = true
		return nil
	} else if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	app := &tenantryv1.ExpenseApp{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, app); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	db, id, err := registeredLocation(ctx, r.Databases, app, t.Namespace, t.Name)
	if err != nil {
		return err
	}
	// The name follows from the tenant's schema and the Restore's UID, never from status.
	_, previous := tenantdb.RestoreSchemas(id.Schema, string(rs.UID))
	if err := db.DropKeptSchema(ctx, previous, id.Role); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	rs.Status.PreviousDropped = true
	return nil
}

// SetupWithManager registers the controller. A Restore's own status patches start no reconcile.
func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tenantryv1.Restore{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("restore").
		Complete(r)
}
