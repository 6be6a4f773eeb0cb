package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"slices"
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
	"tenantry.dev/tenantry/internal/backup"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// BackupReconciler takes each Backup once: a snapshot of its Tenant's schema, read on the tenant's
// session and written to its ExpenseApp's object store (backup.Take). A Backup ends Completed or
// Failed, and is never taken again; deleting it deletes what it wrote.
type BackupReconciler struct {
	client.Client
	Databases *Databases
	Release   *Release
	Recorder  events.EventRecorder
	// APIReader reads the object store's credentials Secret, which the manager's cache does not hold
	// (it holds only the operator's own Secrets).
	APIReader client.Reader
	// ObjectStores are the stores an ExpenseApp may name.
	ObjectStores *ObjectStorePolicy
	// MaxConcurrentReconciles bounds the Backups taken at once.
	MaxConcurrentReconciles int
	// Timeout bounds one backup (0: tenantdb.BulkTimeout).
	Timeout time.Duration
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=backups,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=tenantry.dev,resources=backups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=backups/finalizers,verbs=update

// Reconcile takes a Backup, or deletes what it wrote.
func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	b := &tenantryv1.Backup{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := b.DeepCopy()
	patchCtx := ctx
	defer func() {
		result, retErr = summarize(patchCtx, r.Client, r.Recorder, summary{
			obj: b, before: before, conditions: &b.Status.Conditions, beforeConditions: before.Status.Conditions,
			observed: &b.Status.ObservedGeneration, oldStatus: before.Status, status: func() any { return b.Status },
			finalizer: tenantryv1.BackupFinalizer, readyEvents: true,
			readyMsg: func() string {
				return fmt.Sprintf("Backup complete: %d rows in %d tables at schema version %d, %d bytes at %s",
					b.Status.Rows, b.Status.Tables, b.Status.SchemaVersion, b.Status.Size, b.Status.DestinationPath)
			},
		}, result, retErr)
	}()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = tenantdb.BulkTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if !b.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, b)
	}
	switch b.Status.Phase {
	case tenantryv1.BackupCompleted:
		return r.expire(ctx, b)
	case tenantryv1.BackupFailed:
		return ctrl.Result{}, stallErr(tenantryv1.ReasonBackupFailed, time.Hour, errors.New(b.Status.Error))
	}
	// The finalizer, and the tenant's label, by which a tenant's backups are listed (and purged) at once.
	if !controllerutil.ContainsFinalizer(b, tenantryv1.BackupFinalizer) || b.Labels[LabelTenant] != labelValue(b.Spec.Tenant.Name) {
		patch := client.MergeFrom(b.DeepCopy())
		controllerutil.AddFinalizer(b, tenantryv1.BackupFinalizer)
		b.Labels = mergeMaps(b.Labels, map[string]string{LabelTenant: labelValue(b.Spec.Tenant.Name)})
		if err := r.Patch(ctx, b, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}
	if err := r.take(ctx, b); err != nil {
		return ctrl.Result{}, err
	}
	return r.expire(ctx, b)
}

// expire deletes a completed Backup whose spec.keepFor has passed (its files go with it: the
// finalizer), or looks again when it will have.
func (r *BackupReconciler) expire(ctx context.Context, b *tenantryv1.Backup) (ctrl.Result, error) {
	if b.Spec.KeepFor == nil || b.Status.StoppedAt == nil {
		return ctrl.Result{}, nil
	}
	at := metav1.NewTime(b.Status.StoppedAt.Add(b.Spec.KeepFor.Duration))
	b.Status.ExpiresAt = &at
	if wait := time.Until(at.Time); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	return ctrl.Result{}, nil
}

// take takes the backup: it waits for the Tenant to be Ready and its app to name an object store, then
// reads the snapshot and writes it. Once it has begun, the Backup ends Completed or Failed.
func (r *BackupReconciler) take(ctx context.Context, b *tenantryv1.Backup) error {
	if b.Status.Phase == "" {
		b.Status.Phase = tenantryv1.BackupPending
	}
	t := &tenantryv1.Tenant{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Tenant.Name}, t); apierrors.IsNotFound(err) {
		return waitErr(tenantryv1.ReasonBackupFailed, time.Minute, "Tenant %q (spec.tenant) does not exist in namespace %s", b.Spec.Tenant.Name, b.Namespace)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	app, store, err := appStore(ctx, r.Client, r.APIReader, r.ObjectStores, t)
	if err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) || t.Status.SchemaVersion == 0 {
		return waitErr(tenantryv1.ReasonProgressing, 30*time.Second, "waiting for Tenant %s to be Ready", t.Name)
	}
	db, id, err := registeredLocation(ctx, r.Databases, app, t.Namespace, t.Name)
	if err != nil {
		return err
	}
	session, err := db.Session(ctx, id)
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}

	// From here the backup runs: say so before the copy, which may take a while.
	before := b.DeepCopy()
	now := metav1.Now()
	dir := backup.Dir(b.Namespace, t.Name, b.Name, string(b.UID))
	b.Status.Phase, b.Status.StartedAt, b.Status.TenantUID = tenantryv1.BackupRunning, &now, string(t.UID)
	b.Status.DestinationPath = store.URL(dir)
	meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: tenantryv1.ConditionReconciling,
		Status: metav1.ConditionTrue, Reason: tenantryv1.ReasonProgressing, Message: "Copying the tenant's tables", ObservedGeneration: b.Generation})
	if err := r.Status().Patch(ctx, b, client.MergeFrom(before)); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}

	_, target := r.Release.Get()
	m, err := backup.Take(ctx, session, store, dir, backup.Manifest{
		Tenant: backup.Tenant{Namespace: t.Namespace, Name: t.Name, UID: string(t.UID), App: app.Name,
			Database: db.Database(), Shard: t.Status.Shard, Schema: id.Schema},
		Backup:  backup.Object{Name: b.Name, UID: string(b.UID)},
		Release: backup.Release{Operator: operatorVersion(), Image: app.Status.Image, SchemaVersion: target},
	}, nil)
	stopped := metav1.Now()
	b.Status.StoppedAt = &stopped
	b.Status.Duration = &metav1.Duration{Duration: stopped.Sub(now.Time).Round(time.Millisecond)}
	if err != nil {
		// What was written goes; the Backup stays, Failed, to say why.
		if _, rerr := store.RemoveAll(context.WithoutCancel(ctx), dir); rerr != nil {
			err = fmt.Errorf("%w (and removing what was written: %v)", err, rerr)
		}
		b.Status.Phase, b.Status.Error = tenantryv1.BackupFailed, err.Error()
		backupsTotal.WithLabelValues("failed").Inc()
		return stallErr(tenantryv1.ReasonBackupFailed, time.Hour, err)
	}
	b.Status.Phase = tenantryv1.BackupCompleted
	b.Status.SchemaVersion, b.Status.Tables, b.Status.Rows, b.Status.Size = m.SchemaVersion, int32(len(m.Tables)), m.Rows(), m.StoredBytes()
	backupsTotal.WithLabelValues("completed").Inc()
	backupSeconds.Observe(b.Status.Duration.Seconds())
	return nil
}

// registeredLocation is where the home registry of app records the tenant namespace/name: the database
// that holds its schema, and the schema and role; never status.schema, which anyone allowed to write
// status could have changed.
func registeredLocation(ctx context.Context, dbs *Databases, app *tenantryv1.ExpenseApp, namespace, name string) (*tenantdb.DB, tenantdb.Identity, error) {
	home, err := dbs.For(ctx, app)
	if err != nil {
		return nil, tenantdb.Identity{}, err
	}
	if err := home.EnsureRegistry(ctx); err != nil {
		return nil, tenantdb.Identity{}, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	id, registered, err := home.Lookup(ctx, namespace, name)
	switch {
	case err != nil:
		return nil, tenantdb.Identity{}, retryErr(tenantryv1.ReasonDatabaseError, err)
	case !registered:
		return nil, tenantdb.Identity{}, waitErr(tenantryv1.ReasonProgressing, 30*time.Second,
			"Tenant %s is not in the registry of database %s yet", name, home.Database())
	case id.Shard == "":
		return home, id.Identity, nil
	}
	db, err := dbs.Shard(ctx, app, id.Shard)
	if err != nil {
		return nil, tenantdb.Identity{}, err
	}
	return db, id.Identity, nil
}

// ObjectStorePolicy is the object stores the platform team lets ExpenseApps name (the operator's
// --object-store-endpoints): AWS S3 (no endpointURL), and the endpoints listed, each a host (any port)
// or host:port. An ExpenseApp names no other: the operator dials nothing a namespace chooses.
type ObjectStorePolicy struct {
	Endpoints []string
}

// allows says whether an ExpenseApp may name endpoint (backup.Endpoint).
func (p *ObjectStorePolicy) allows(endpoint string) bool {
	if endpoint == "" {
		return true
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	return p != nil && (slices.Contains(p.Endpoints, endpoint) || slices.Contains(p.Endpoints, host))
}

// appStore is the ExpenseApp of a Tenant and the object store its spec.backup names, with the
// credentials of its Secret, read with secrets, if the platform's policy allows that store.
func appStore(ctx context.Context, c, secrets client.Reader, policy *ObjectStorePolicy, t *tenantryv1.Tenant) (*tenantryv1.ExpenseApp, *backup.Store, error) {
	app := &tenantryv1.ExpenseApp{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, app); apierrors.IsNotFound(err) {
		return nil, nil, waitErr(tenantryv1.ReasonAppNotFound, time.Minute, "ExpenseApp %q does not exist in namespace %s", t.Spec.AppRef.Name, t.Namespace)
	} else if err != nil {
		return nil, nil, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	if app.Spec.Backup == nil {
		return app, nil, stallErr(tenantryv1.ReasonNoObjectStore, time.Minute, fmt.Errorf(
			"ExpenseApp %s has no spec.backup.objectStore: say there where its tenants' backups go", app.Name))
	}
	spec := app.Spec.Backup.ObjectStore
	if endpoint := backup.Endpoint(spec); !policy.allows(endpoint) {
		return app, nil, stallErr(tenantryv1.ReasonNotAllowed, 10*time.Minute, fmt.Errorf("ExpenseApp %s's spec.backup.objectStore.endpointURL "+
			"names %s, which the operator may not reach: the platform team lists the object stores it may in --object-store-endpoints "+
			"(the chart's backup.objectStoreEndpoints)", app.Name, endpoint))
	}
	secret := &corev1.Secret{}
	if err := secrets.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: spec.Credentials.SecretName}, secret); apierrors.IsNotFound(err) {
		return app, nil, waitErr(tenantryv1.ReasonSecretNotFound, time.Minute, "Secret %q (ExpenseApp %s's spec.backup.objectStore.credentials) does not exist",
			spec.Credentials.SecretName, app.Name)
	} else if err != nil {
		return app, nil, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	creds, err := backup.CredentialsFrom(secret.Data)
	if err != nil {
		return app, nil, stallErr(tenantryv1.ReasonInvalidSecret, time.Minute, fmt.Errorf("the Secret %q: %w", secret.Name, err))
	}
	store, err := backup.NewStore(spec, creds)
	if err != nil {
		return app, nil, stallErr(tenantryv1.ReasonNoObjectStore, time.Minute, err)
	}
	return app, store, nil
}

// reconcileDelete deletes what the Backup wrote to the object store, then lets the Backup go. A Backup
// whose app or store is gone (or never wrote anything) goes at once; an event says what may be left.
func (r *BackupReconciler) reconcileDelete(ctx context.Context, b *tenantryv1.Backup) error {
	if !controllerutil.ContainsFinalizer(b, tenantryv1.BackupFinalizer) {
		return nil
	}
	if b.Status.Phase != tenantryv1.BackupPending && b.Status.Phase != "" {
		t := &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: b.Spec.Tenant.Name}}
		// The Tenant may be gone: its app is found through the manifest's record of it, or any app of
		// the namespace whose store holds the backup. The Tenant's own app is the one to ask first.
		if err := r.Get(ctx, client.ObjectKeyFromObject(t), t); err != nil && !apierrors.IsNotFound(err) {
			return retryErr(tenantryv1.ReasonAPIServerError, err)
		}
		removed, err := r.removeObjects(ctx, b, t)
		if err != nil {
			return err
		}
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "Deleted", "Delete", "Removed %d objects of the backup from %s", removed, b.Status.DestinationPath)
	}
	patch := client.MergeFrom(b.DeepCopy())
	controllerutil.RemoveFinalizer(b, tenantryv1.BackupFinalizer)
	if err := r.Patch(ctx, b, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

// removeObjects removes the backup's directory from the store of the app that took it.
func (r *BackupReconciler) removeObjects(ctx context.Context, b *tenantryv1.Backup, t *tenantryv1.Tenant) (int, error) {
	if t.Spec.AppRef.Name == "" {
		r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, "ObjectsLeft", "Delete",
			"Tenant %s is gone, and with it the name of the ExpenseApp whose store holds the backup: its objects at %s are left there", b.Spec.Tenant.Name, b.Status.DestinationPath)
		return 0, nil
	}
	_, store, err := appStore(ctx, r.Client, r.APIReader, r.ObjectStores, t)
	if err != nil {
		var se *stepError
		if errors.As(err, &se) && se.kind != retry {
			r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, "ObjectsLeft", "Delete",
				"The backup's objects at %s are left there: %s", b.Status.DestinationPath, err.Error())
			return 0, nil
		}
		return 0, err
	}
	n, err := store.RemoveAll(ctx, backup.Dir(b.Namespace, b.Spec.Tenant.Name, b.Name, string(b.UID)))
	if err != nil {
		return 0, retryErr(tenantryv1.ReasonObjectStoreError, err)
	}
	return n, nil
}

// operatorVersion is the operator's build: its module version and VCS revision where the build
// recorded them.
func operatorVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v
}

// SetupWithManager registers the controller. A Backup's own status patches start no reconcile.
func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tenantryv1.Backup{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("backup").
		Complete(r)
}
