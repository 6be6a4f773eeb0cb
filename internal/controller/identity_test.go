package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The suite's operator really runs as its ServiceAccount, not as envtest's admin: what config/rbac does
// not grant is refused to it (and every other test of the package passes with what it does grant).
func TestOperatorIdentity_leastPrivilege(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(asOperator, client.Options{Scheme: NewScheme()})
	must(t, err)
	denied := map[string]error{
		"list namespaces":        c.List(ctx, &corev1.NamespaceList{}),
		"list pods":              c.List(ctx, &corev1.PodList{}),
		"create a namespace":     c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "operator-made"}}),
		"list cluster roles":     c.List(ctx, &rbacv1.ClusterRoleList{}),
		"create a ConfigMap":     c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}}),
		"delete ServiceAccounts": c.DeleteAllOf(ctx, &corev1.ServiceAccount{}, client.InNamespace("default")),
	}
	for what, err := range denied {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the operator may %s: %v, want Forbidden", what, err)
		}
	}
	if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace("default")); err != nil {
		t.Fatalf("the operator cannot list Secrets, which it needs: %v", err)
	}
}
