package controller

import (
	"context"
	"errors"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

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
