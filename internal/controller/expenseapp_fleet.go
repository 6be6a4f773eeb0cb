package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// reconcileFleet moves the app's tenants to the release's schema version and counts them into its
// status. Tenants behind the release are migrated by a rollout from the database (see Rollouts), which
// this starts when needed; a fleet already at the target sends no SQL. It returns nil once every tenant
// is at the target, a wait while the fleet is on its way (the status is patched about once a second),
// and a stall when the rollout halted.
func (r *ExpenseAppReconciler) reconcileFleet(ctx context.Context, run *appRun) error {
	app, tenants, target := run.app, run.tenants, run.target
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	view, ran := r.Rollouts.View(key, r.Release.Plan())
	names := make([]string, 0, len(tenants))
	for _, t := range tenants {
		names = append(names, t.Name)
	}
	if behindRelease(tenants, target) || ran {
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
	ready, drifted, planted, uncompared := 0, 0, 0, 0
	for _, t := range tenants {
		if meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) {
			ready++
		}
		if c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionSchemaDrift); c != nil && c.Status == metav1.ConditionUnknown {
			uncompared++
		}
		if meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionSchemaDrift) {
			drifted++
			if t.Status.Drift != nil && t.Status.Drift.Planted > 0 {
				planted++
			}
		}
	}
	app.Status.Tenants, app.Status.ReadyTenants, app.Status.TenantsAtTarget = int32(len(tenants)), int32(ready), int32(atTarget)
	app.Status.DriftedTenants, app.Status.PlantedTenants = int32(drifted), int32(planted)
	app.Status.TargetSchemaVersion = target
	app.Status.Migration = fmt.Sprintf("%d/%d", atTarget, len(tenants))
	app.Status.FailedTenants = nil
	if len(failed) > 0 {
		app.Status.FailedTenants = failed[:min(len(failed), 20)]
	}
	for state, n := range map[string]int{"total": len(tenants), "ready": ready, "at_target": atTarget, "failed": len(failed),
		"drifted": drifted, "planted": planted, "uncompared": uncompared} {
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

// behindRelease says some of the tenants were provisioned at a version below the release's: a rollout
// is due. (A tenant at version 0 is not provisioned yet, or stalled before: its own reconcile migrates it.)
func behindRelease(tenants []tenantryv1.Tenant, target int64) bool {
	for _, t := range tenants {
		if t.Status.SchemaVersion > 0 && t.Status.SchemaVersion < target {
			return true
		}
	}
	return false
}

// migrationFailed reports whether the tenant's last migration attempt failed.
func migrationFailed(t *tenantryv1.Tenant) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMigrationsApplied)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == tenantryv1.ReasonMigrationFailed
}
