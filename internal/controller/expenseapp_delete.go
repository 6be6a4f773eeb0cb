package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

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
	if err := r.retireAppLogin(ctx, app); err != nil {
		return err
	}
	r.Rollouts.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	r.DriftPasses.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	r.Databases.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	forgetAppMetrics(app.Namespace, app.Name)
	patch := client.MergeFrom(app.DeepCopy())
	controllerutil.RemoveFinalizer(app, tenantryv1.ExpenseAppFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, app, patch))
}

// retireAppLogin closes the app's login on each of its databases (tenantdb.RetireAppRole): a namespace
// of the same name created later, by someone else, must find nothing of it working, since the
// registry's row-level security knows namespaces by name. A database the operator may no longer use
// for the app (its declaration taken back or gone) is passed over, and said so in an event: the
// deletion does not wait on the platform.
func (r *ExpenseAppReconciler) retireAppLogin(ctx context.Context, app *tenantryv1.ExpenseApp) error {
	for _, shard := range appShards(app, nil) {
		db, err := r.Databases.Shard(ctx, app, shard)
		if se := asStepError(err, ""); err != nil && (se.kind == stall || se.kind == wait) {
			r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, "LoginLeft", "Delete",
				"The app's login on shard %s was left as it is: %v", shard, err)
			continue
		} else if err != nil {
			return err
		}
		if err := db.RetireAppRole(ctx, app.Namespace, app.Name); err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", shard, err))
		}
	}
	return nil
}
