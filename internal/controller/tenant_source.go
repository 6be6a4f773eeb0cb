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
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/backup"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// copyingSource says the Tenant's spec.source has yet to fill its schema: its reconcile may take as
// long as a backup's restore or a clone (tenantdb.BulkTimeout) rather than a reconcile's.
func copyingSource(t *tenantryv1.Tenant) bool {
	return t.Spec.Source != nil && !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSourceCopied)
}

// sourceFailure sets SourceCopied False with a message, and returns the step error of that kind.
func sourceFailure(t *tenantryv1.Tenant, reason string, after time.Duration, kind errorKind, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	setCondition(t, tenantryv1.ConditionSourceCopied, metav1.ConditionFalse, reason, msg)
	return &stepError{kind: kind, reason: reason, err: errors.New(msg), after: after}
}

// reconcileSource fills a new tenant's schema from its spec.source, once, before its migrations run to
// the release's version and before its first admin is written: from a backup (restoreBackup) or from
// another tenant (cloneTenant). Either fills the schema in one transaction on the new tenant's session,
// and the schema step migrates it forward. A schema that holds anything already (data retained from
// an earlier Tenant of the same name) is never overwritten.
func (r *TenantReconciler) reconcileSource(ctx context.Context, run *tenantRun) error {
	if !copyingSource(run.t) {
		return nil
	}
	if run.t.Spec.Source.Backup != nil {
		return r.restoreBackup(ctx, run)
	}
	return r.cloneTenant(ctx, run)
}

// sourceTarget is the new tenant's schema, to be filled: where it is, the session to fill it on, and
// what it holds.
type sourceTarget struct {
	session *tenantdb.TenantSession
	loc     *location
	held    tenantdb.SchemaVersion
	// started: an earlier reconcile of this tenant began the copy, and may have committed it before
	// its status was written.
	started bool
}

// fresh says the schema holds nothing yet: no migration, no table.
func (s *sourceTarget) fresh() bool { return s.held.Version == 0 && s.held.Tables == 0 }

// notNew is the stall of a tenant whose schema held something before its copy began.
func (s *sourceTarget) notNew(t *tenantryv1.Tenant) error {
	return sourceFailure(t, tenantryv1.ReasonSourceFailed, 10*time.Minute, stall, "schema %s already exists at version %d "+
		"(data retained from an earlier Tenant %s, or made by hand), and spec.source fills only a new one: delete this Tenant, "+
		"and the retained schema with a Tenant of deletionPolicy Delete, or use another name", s.loc.id.Schema, s.held.Version, t.Name)
}

// target makes the new tenant's schema (and role) if need be, and reads what it holds.
func (r *TenantReconciler) target(ctx context.Context, run *tenantRun) (*sourceTarget, error) {
	t := run.t
	loc, err := r.locate(ctx, run)
	if err != nil {
		return nil, err
	}
	if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSchemaReady) {
		if err := r.ensureSchema(ctx, t, run.app, loc.homeDatabase(), loc.db, loc.id.Identity, false); err != nil {
			return nil, err
		}
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	if err != nil {
		return nil, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	held, err := session.Version(ctx)
	if err != nil {
		return nil, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionSourceCopied)
	return &sourceTarget{session: session, loc: loc, held: held, started: c != nil && c.Reason == tenantryv1.ReasonProgressing}, nil
}

// copyFailed is the outcome of a copy that failed after it began, and is tried again: SourceCopied
// keeps saying it began (Progressing), so that the next attempt takes up the schema the first made.
func copyFailed(t *tenantryv1.Tenant, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	setCondition(t, tenantryv1.ConditionSourceCopied, metav1.ConditionFalse, tenantryv1.ReasonProgressing, msg)
	return &stepError{kind: retry, reason: tenantryv1.ReasonSourceFailed, err: errors.New(msg)}
}

// copyStarted records, before the copy, that it began, and says so in status at once: the copy may
// take a while.
func (r *TenantReconciler) copyStarted(ctx context.Context, t *tenantryv1.Tenant, format string, args ...any) error {
	before := t.DeepCopy()
	setCondition(t, tenantryv1.ConditionSourceCopied, metav1.ConditionFalse, tenantryv1.ReasonProgressing, fmt.Sprintf(format, args...))
	if err := r.Status().Patch(ctx, t, client.MergeFrom(before)); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	return nil
}

// sourceCopied records a copy that is done.
func sourceCopied(t *tenantryv1.Tenant, format string, args ...any) {
	setCondition(t, tenantryv1.ConditionSourceCopied, metav1.ConditionTrue, tenantryv1.ReasonSucceeded, fmt.Sprintf(format, args...))
}

// copiedAt records the version the copy left the schema at: at the release's, the schema step has
// nothing to migrate, and sends no SQL to find that out.
func (r *TenantReconciler) copiedAt(t *tenantryv1.Tenant, version int64) {
	if version != r.Release.Target() {
		return
	}
	t.Status.SchemaVersion = version
	setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionTrue, tenantryv1.ReasonSucceeded, fmt.Sprintf("Schema at version %d", version))
}

// restoreBackup restores a Backup into the new tenant: its schema is made at the backup's version and
// filled (backup.Restore), every table checked against the manifest before the one transaction commits.
func (r *TenantReconciler) restoreBackup(ctx context.Context, run *tenantRun) error {
	t := run.t
	name := t.Spec.Source.Backup.Name
	b := &tenantryv1.Backup{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: name}, b); apierrors.IsNotFound(err) {
		return sourceFailure(t, tenantryv1.ReasonSourceNotFound, time.Minute, wait, "Backup %q (spec.source.backup) does not exist in namespace %s", name, t.Namespace)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	switch b.Status.Phase {
	case tenantryv1.BackupCompleted:
	case tenantryv1.BackupFailed:
		return sourceFailure(t, tenantryv1.ReasonSourceNotReady, 10*time.Minute, stall, "Backup %s failed, and has nothing to restore: %s", name, b.Status.Error)
	default:
		return sourceFailure(t, tenantryv1.ReasonSourceNotReady, 15*time.Second, wait, "waiting for Backup %s to complete (it is %s)", name, phaseOrPending(b.Status.Phase))
	}
	_, store, err := appStore(ctx, r.Client, r.APIReader, r.ObjectStores, t)
	if err != nil {
		return err
	}
	// Where the backup is follows from the Backup's identity, never from its status.
	dir := backup.Dir(b.Namespace, b.Spec.Tenant.Name, b.Name, string(b.UID))
	m, err := backup.ReadManifest(ctx, store, dir)
	switch {
	case errors.Is(err, backup.ErrNotFound):
		return sourceFailure(t, tenantryv1.ReasonSourceNotFound, 5*time.Minute, stall, "Backup %s's files are not at %s in ExpenseApp %s's object store: "+
			"a Tenant restores from its own ExpenseApp's store", name, store.URL(dir), t.Spec.AppRef.Name)
	case err != nil:
		return sourceFailure(t, tenantryv1.ReasonObjectStoreError, 0, retry, "reading Backup %s's manifest: %v", name, err)
	case m.Backup.UID != string(b.UID) || m.Tenant.Namespace != t.Namespace:
		return sourceFailure(t, tenantryv1.ReasonSourceFailed, 10*time.Minute, stall, "the manifest at %s is not Backup %s's of namespace %s", store.URL(dir), name, t.Namespace)
	case m.SchemaVersion > r.Release.Target():
		return sourceFailure(t, tenantryv1.ReasonSourceFailed, 10*time.Minute, stall, "Backup %s is at schema version %d, newer than this release's migrations "+
			"(up to %d): restore it with a release that has its migrations", name, m.SchemaVersion, r.Release.Target())
	}

	tg, err := r.target(ctx, run)
	switch {
	case err != nil:
		return err
	case !tg.fresh() && tg.held.Version != m.SchemaVersion && tg.started: // filled, and migrated on
		sourceCopied(t, "Restored from Backup %s by an earlier reconcile", name)
		return nil
	case !tg.fresh() && tg.held.Version != m.SchemaVersion:
		return tg.notNew(t)
	}
	session := tg.session
	fsys, _ := r.Release.Get()
	var me *tenantdb.MigrationError
	if _, err := session.MigrateTo(ctx, fsys, string(t.UID)+"/source", m.SchemaVersion); errors.As(err, &me) {
		return sourceFailure(t, tenantryv1.ReasonMigrationFailed, 2*time.Minute, stall, "making the schema at Backup %s's version %d: %v", name, m.SchemaVersion, err)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if err := r.copyStarted(ctx, t, "Restoring Backup %s: %d rows in %d tables at schema version %d", name, m.Rows(), len(m.Tables), m.SchemaVersion); err != nil {
		return err
	}
	// No session or API token of the backup's tenant opens this one.
	res, err := backup.Restore(ctx, session, store, dir, m, migrations.CredentialTables, nil)
	var ce *backup.ChecksumError
	switch {
	case errors.Is(err, tenantdb.ErrNotEmpty) && tg.started:
		sourceCopied(t, "Restored from Backup %s by an earlier reconcile", name)
		return nil
	case errors.Is(err, tenantdb.ErrNotEmpty):
		return tg.notNew(t)
	case errors.As(err, &ce):
		restoresTotal.WithLabelValues("failed").Inc()
		return sourceFailure(t, tenantryv1.ReasonSourceFailed, 10*time.Minute, stall, "Backup %s is damaged, and nothing of it was kept: %v", name, err)
	case errors.Is(err, backup.ErrNotFound):
		restoresTotal.WithLabelValues("failed").Inc()
		return sourceFailure(t, tenantryv1.ReasonSourceNotFound, 5*time.Minute, stall, "Backup %s is missing a file, and nothing of it was kept: %v", name, err)
	case err != nil:
		restoresTotal.WithLabelValues("failed").Inc()
		return copyFailed(t, "restoring Backup %s failed, and nothing of it was kept; trying again: %v", name, err)
	}
	restoresTotal.WithLabelValues("completed").Inc()
	msg := fmt.Sprintf("%d rows in %d tables, taken %s at schema version %d", res.Rows, len(m.Tables), m.StartedAt.Format(time.RFC3339), m.SchemaVersion)
	if len(res.Skipped) > 0 {
		msg += "; left out, as the release's schema has no such table: " + strings.Join(res.Skipped, ", ")
	}
	sourceCopied(t, "Restored from Backup %s: %s", name, msg)
	r.copiedAt(t, m.SchemaVersion)
	return nil
}

// cloneTenant fills the new tenant from one snapshot of another Tenant of its namespace (tenantdb.Clone),
// read on the source's session and written on the new tenant's: the tables spec.source.tenant asks
// for, never its people (migrations.PeopleTables) nor what refers to them.
func (r *TenantReconciler) cloneTenant(ctx context.Context, run *tenantRun) error {
	t := run.t
	spec := t.Spec.Source.Tenant
	src := &tenantryv1.Tenant{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: spec.Name}, src); apierrors.IsNotFound(err) {
		return sourceFailure(t, tenantryv1.ReasonSourceNotFound, time.Minute, wait, "Tenant %q (spec.source.tenant) does not exist in namespace %s", spec.Name, t.Namespace)
	} else if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	if src.UID == t.UID || !meta.IsStatusConditionTrue(src.Status.Conditions, tenantryv1.ConditionReady) || src.Status.SchemaVersion == 0 {
		return sourceFailure(t, tenantryv1.ReasonSourceNotReady, 15*time.Second, wait, "waiting for Tenant %s (spec.source.tenant) to be Ready", spec.Name)
	}
	srcApp := run.app
	if src.Spec.AppRef.Name != run.app.Name {
		srcApp = &tenantryv1.ExpenseApp{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: src.Spec.AppRef.Name}, srcApp); err != nil {
			return retryErr(tenantryv1.ReasonAPIServerError, err)
		}
	}
	srcDB, srcID, err := registeredLocation(ctx, r.Databases, srcApp, src.Namespace, src.Name)
	if err != nil {
		return err
	}
	from, err := srcDB.Session(ctx, srcID)
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	// A schema that is not fresh (an earlier attempt's, or retained data) is filled only if it holds no
	// rows: the load finds out (tenantdb.ErrNotEmpty).
	tg, err := r.target(ctx, run)
	if err != nil {
		return err
	}
	if err := r.copyStarted(ctx, t, "Cloning Tenant %s", spec.Name); err != nil {
		return err
	}
	fsys, _ := r.Release.Get()
	var copied []string
	version, res, err := tenantdb.Clone(ctx, from, tg.session, fsys, string(t.UID)+"/source", func(all []tenantdb.CopyTable) ([]tenantdb.CopyTable, error) {
		if spec.SchemaOnly {
			return nil, nil
		}
		tables, err := tenantdb.CloneTables(all, migrations.PeopleTables, spec.Tables)
		for _, tb := range tables {
			copied = append(copied, tb.Name)
		}
		return tables, err
	})
	var ce *tenantdb.CloneError
	var me *tenantdb.MigrationError
	switch {
	case errors.Is(err, tenantdb.ErrNotEmpty) && tg.started:
		sourceCopied(t, "Cloned from Tenant %s by an earlier reconcile", spec.Name)
	case errors.Is(err, tenantdb.ErrNotEmpty):
		return tg.notNew(t)
	case errors.As(err, &ce):
		return sourceFailure(t, tenantryv1.ReasonSourceFailed, 10*time.Minute, stall, "spec.source.tenant.tables: %v", err)
	case errors.As(err, &me):
		return sourceFailure(t, tenantryv1.ReasonMigrationFailed, 2*time.Minute, stall, "making the clone's schema at version %d: %v", version, err)
	case err != nil:
		return copyFailed(t, "cloning Tenant %s failed, and nothing of it was kept; trying again: %v", spec.Name, err)
	case spec.SchemaOnly:
		sourceCopied(t, "Cloned Tenant %s's schema (version %d), without rows", spec.Name, version)
		r.copiedAt(t, version)
	default:
		sourceCopied(t, "Cloned from Tenant %s: %d rows of %s, at schema version %d", spec.Name, res.Rows, strings.Join(copied, ", "), version)
		r.copiedAt(t, version)
	}
	return nil
}

func phaseOrPending(p tenantryv1.BackupPhase) tenantryv1.BackupPhase {
	if p == "" {
		return tenantryv1.BackupPending
	}
	return p
}
