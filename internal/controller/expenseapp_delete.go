package controller

import (
	"context"
	"strings"
	"time"

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
	r.Rollouts.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	r.Databases.Forget(types.NamespacedName{Namespace: app.Namespace, Name: app.Name})
	forgetAppMetrics(app.Namespace, app.Name)
	patch := client.MergeFrom(app.DeepCopy())
	controllerutil.RemoveFinalizer(app, tenantryv1.ExpenseAppFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, app, patch))
}
