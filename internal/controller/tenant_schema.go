package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
)

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
	// The migration lock's occasion: the tenant's onboarding, or a repair (never a key used before).
	occasion := string(t.UID)
	// An existing tenant moves to a new release with its app's rollout; a new one migrates here, and so
	// does one whose schema is not where its registry row says (dropped and made anew, restored, changed
	// by hand): from what the schema itself holds.
	if id.Version > 0 {
		held, err := r.schemaVersion(ctx, t, db, id)
		if err != nil {
			return err
		}
		if held.Version == id.Version {
			return r.migrateExisting(ctx, t, app, db, id)
		}
		// Dropped since it was made (its SchemaReady says otherwise): made again first, since a migration
		// into a schema that is not there would create its tables in pg_temp, next on the search_path.
		if !held.Exists {
			if err := r.ensureSchema(ctx, t, app, loc.homeDatabase(), db, id.Identity, false); err != nil {
				return err
			}
		}
		// A schema made anew holds no users: its first admin is written again, from its Secret.
		if held.Version == 0 && held.Tables == 0 {
			meta.RemoveStatusCondition(&t.Status.Conditions, tenantryv1.ConditionAdminReady)
		}
		occasion = fmt.Sprintf("%s/repair/%d/%d", t.UID, held.Version, id.Version)
	}
	start := time.Now()
	session, err := db.Session(ctx, id.Identity)
	var version int64
	if err == nil {
		version, err = session.Migrate(ctx, fsys, occasion)
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

// schemaVersion reads what a registered tenant's schema holds from the schema itself (tenantdb
// SchemaVersion): the truth, whatever the registry row records. A schema that holds tables without a
// version table is reported in plain words: which migrations it holds, nobody can tell.
func (r *TenantReconciler) schemaVersion(ctx context.Context, t *tenantryv1.Tenant, db *tenantdb.DB,
	id tenantdb.FleetMember) (tenantdb.SchemaVersion, error) {
	session, err := db.Session(ctx, id.Identity)
	var held tenantdb.SchemaVersion
	if err == nil {
		held, err = session.Version(ctx)
	}
	switch {
	case err != nil:
		return held, retryErr(tenantryv1.ReasonDatabaseError, err)
	case !held.VersionTable && held.Tables > 0:
		return held, r.versionUnknown(t, fmt.Sprintf("schema %s holds %d table(s) but no version table (%s), so which "+
			"migrations it holds cannot be told: it was changed by hand. Restore it (or its %s table) from a backup; or, "+
			"if its data may go, drop the schema, and the operator makes it anew", id.Schema, held.Tables,
			tenantdb.VersionTable, tenantdb.VersionTable))
	case held.Version > id.Version && held.Version > r.Release.Target():
		// Ahead of the registry is no harm in itself (a migration run here is recorded there at the
		// state step; a rollout may have moved on since the registry was read): ahead of every
		// migration the release knows is.
		return held, r.versionUnknown(t, fmt.Sprintf("schema %s's version table (%s) says version %d, which neither "+
			"this release's migrations (up to %d) nor its registry row (%d) know: it was changed by hand. Compare it "+
			"with the release's migrations and correct it; the operator goes on once they agree", id.Schema,
			tenantdb.VersionTable, held.Version, r.Release.Target(), id.Version))
	case held.Version != id.Version:
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, "SchemaVersionMismatch", "Migrate",
			"Schema %s is at version %d, its registry row says %d: migrating it from what it holds", id.Schema, held.Version, id.Version)
	}
	return held, nil
}

// versionUnknown reports, in msg's plain words, a schema whose migrations cannot be told.
func (r *TenantReconciler) versionUnknown(t *tenantryv1.Tenant, msg string) error {
	setCondition(t, tenantryv1.ConditionMigrationsApplied, metav1.ConditionFalse, tenantryv1.ReasonSchemaVersionUnknown, msg)
	return stallErr(tenantryv1.ReasonSchemaVersionUnknown, 2*time.Minute, errors.New(msg))
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
