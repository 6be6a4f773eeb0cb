package controller

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// migrationFailed reports whether the tenant's last migration attempt failed.
func migrationFailed(t *tenantryv1.Tenant) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMigrationsApplied)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == tenantryv1.ReasonMigrationFailed
}
