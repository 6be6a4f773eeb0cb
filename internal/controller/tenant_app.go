package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// reconcileApp finds the tenant's ExpenseApp and admin Secret, from the cache.
func (r *TenantReconciler) reconcileApp(ctx context.Context, run *tenantRun) error {
	t := run.t
	run.app = &tenantryv1.ExpenseApp{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, run.app); err != nil {
		if apierrors.IsNotFound(err) {
			return waitErr(tenantryv1.ReasonAppNotFound, time.Minute,
				"ExpenseApp %q (spec.appRef) does not exist in namespace %s", t.Spec.AppRef.Name, t.Namespace)
		}
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	var err error
	if run.adminSecret, err = r.adminSecret(ctx, t); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	return nil
}

// adminSecret returns the tenant's admin Secret from the cache, or nil when there is none.
func (r *TenantReconciler) adminSecret(ctx context.Context, t *tenantryv1.Tenant) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Name + tenantryv1.AdminSecretSuffix}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the admin Secret: %w", err)
	}
	return s, nil
}
