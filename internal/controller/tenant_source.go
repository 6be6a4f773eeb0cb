package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/backup"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// restoring says the Tenant's spec.source has yet to fill its schema: its reconcile may take as long as
// a backup's restore (tenantdb.BulkTimeout) rather than a reconcile's.
func restoring(t *tenantryv1.Tenant) bool {
	return t.Spec.Source != nil && !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionRestored)
}

// reconcileSource fills a new tenant's schema from its spec.source, once, before its migrations run to
// the release's version and before its first admin is written: the schema is made at the backup's
// schema version, filled in one transaction on the tenant's session (backup.Restore), and the schema
// step migrates it forward. A schema that holds rows already, data retained from an earlier Tenant of
// the same name, is not overwritten.
func (r *TenantReconciler) reconcileSource(ctx context.Context, run *tenantRun) error {
	t := run.t
	if !restoring(t) {
		return nil
	}
	name := t.Spec.Source.Backup.Name
	fail := func(reason string, after time.Duration, kind errorKind, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		setCondition(t, tenantryv1.ConditionRestored, metav1.ConditionFalse, reason, msg)
		return &stepError{kind: kind, reason: reason, err: errors.New(msg), after: after}
	}

	b := &tenantryv1.Backup{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: name}, b); apierrors.IsNotFound(err) {
		return fail(tenantryv1.ReasonBackupNotFound, time.Minute, wait, "Backup %q (spec.source.backup) does not exist in namespace %s", name, t.Namespace)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	switch b.Status.Phase {
	case tenantryv1.BackupCompleted:
	case tenantryv1.BackupFailed:
		return fail(tenantryv1.ReasonBackupNotReady, 10*time.Minute, stall, "Backup %s failed, and has nothing to restore: %s", name, b.Status.Error)
	default:
		return fail(tenantryv1.ReasonBackupNotReady, 15*time.Second, wait, "waiting for Backup %s to complete (it is %s)", name, phaseOrPending(b.Status.Phase))
	}
	_, store, err := appStore(ctx, r.Client, r.APIReader, t)
	if err != nil {
		return err
	}
	// Where the backup is follows from the Backup's identity, never from its status.
	dir := backup.Dir(b.Namespace, b.Spec.Tenant.Name, b.Name, string(b.UID))
	m, err := backup.ReadManifest(ctx, store, dir)
	switch {
	case errors.Is(err, backup.ErrNotFound):
		return fail(tenantryv1.ReasonBackupNotFound, 5*time.Minute, stall, "Backup %s's files are not at %s in ExpenseApp %s's object store: "+
			"a Tenant restores from its own ExpenseApp's store", name, store.URL(dir), t.Spec.AppRef.Name)
	case err != nil:
		return fail(tenantryv1.ReasonObjectStoreError, 0, retry, "reading Backup %s's manifest: %v", name, err)
	case m.Backup.UID != string(b.UID) || m.Tenant.Namespace != t.Namespace:
		return fail(tenantryv1.ReasonRestoreFailed, 10*time.Minute, stall, "the manifest at %s is not Backup %s's of namespace %s", store.URL(dir), name, t.Namespace)
	case m.SchemaVersion > r.Release.Target():
		return fail(tenantryv1.ReasonRestoreFailed, 10*time.Minute, stall, "Backup %s is at schema version %d, newer than this release's migrations "+
			"(up to %d): restore it with a release that has its migrations", name, m.SchemaVersion, r.Release.Target())
	}

	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSchemaReady) {
		if err := r.ensureSchema(ctx, t, run.app, loc.homeDatabase(), loc.db, loc.id.Identity, false); err != nil {
			return err
		}
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	held, err := session.Version(ctx)
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	// started: an earlier reconcile of this tenant began the restore, and may have committed it before
	// its status was written.
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionRestored)
	started := c != nil && c.Reason == tenantryv1.ReasonProgressing
	switch {
	case held.Version == 0 && held.Tables == 0:
		fsys, _ := r.Release.Get()
		var me *tenantdb.MigrationError
		if _, err := session.MigrateTo(ctx, fsys, string(t.UID)+"/restore", m.SchemaVersion); errors.As(err, &me) {
			return fail(tenantryv1.ReasonMigrationFailed, 2*time.Minute, stall, "making the schema at Backup %s's version %d: %v", name, m.SchemaVersion, err)
		} else if err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, err)
		}
	case held.Version != m.SchemaVersion && started:
		return r.restored(t, name, "the schema was filled and migrated by an earlier reconcile")
	case held.Version != m.SchemaVersion:
		return fail(tenantryv1.ReasonRestoreFailed, 10*time.Minute, stall, "schema %s already exists at version %d (data retained from an earlier "+
			"Tenant %s, or made by hand), and a restore fills only a new one: delete this Tenant, and the retained schema with a Tenant "+
			"of deletionPolicy Delete, or restore under another name", loc.id.Schema, held.Version, t.Name)
	}

	before := t.DeepCopy()
	setCondition(t, tenantryv1.ConditionRestored, metav1.ConditionFalse, tenantryv1.ReasonProgressing,
		fmt.Sprintf("Restoring Backup %s: %d rows in %d tables at schema version %d", name, m.Rows(), len(m.Tables), m.SchemaVersion))
	if err := r.Status().Patch(ctx, t, client.MergeFrom(before)); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	res, err := backup.Restore(ctx, session, store, dir, m, nil)
	var ce *backup.ChecksumError
	switch {
	case errors.Is(err, tenantdb.ErrNotEmpty) && started:
		return r.restored(t, name, "the schema was filled by an earlier reconcile")
	case errors.Is(err, tenantdb.ErrNotEmpty):
		return fail(tenantryv1.ReasonRestoreFailed, 10*time.Minute, stall, "schema %s already holds rows, and a restore fills only an empty schema: %v", loc.id.Schema, err)
	case errors.As(err, &ce):
		restoresTotal.WithLabelValues("failed").Inc()
		return fail(tenantryv1.ReasonRestoreFailed, 10*time.Minute, stall, "Backup %s is damaged, and nothing of it was kept: %v", name, err)
	case errors.Is(err, backup.ErrNotFound):
		restoresTotal.WithLabelValues("failed").Inc()
		return fail(tenantryv1.ReasonBackupNotFound, 5*time.Minute, stall, "Backup %s is missing a file, and nothing of it was kept: %v", name, err)
	case err != nil:
		restoresTotal.WithLabelValues("failed").Inc()
		return fail(tenantryv1.ReasonRestoreFailed, 0, retry, "restoring Backup %s failed, and nothing of it was kept; trying again: %v", name, err)
	}
	restoresTotal.WithLabelValues("completed").Inc()
	msg := fmt.Sprintf("%d rows in %d tables, taken %s at schema version %d", res.Rows, len(m.Tables), m.StartedAt.Format(time.RFC3339), m.SchemaVersion)
	if len(res.Skipped) > 0 {
		msg += "; left out, as the release's schema has no such table: " + strings.Join(res.Skipped, ", ")
	}
	return r.restored(t, name, msg)
}

// restored records a restore that is done.
func (r *TenantReconciler) restored(t *tenantryv1.Tenant, backupName, what string) error {
	setCondition(t, tenantryv1.ConditionRestored, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Restored from Backup %s: %s", backupName, what))
	return nil
}

func phaseOrPending(p tenantryv1.BackupPhase) tenantryv1.BackupPhase {
	if p == "" {
		return tenantryv1.BackupPending
	}
	return p
}
