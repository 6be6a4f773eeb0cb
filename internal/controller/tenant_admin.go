package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/password"
)

// generatedPasswordLength is the length of a first admin's generated password (about 116 random bits).
const generatedPasswordLength = 20

// reconcileAdmin makes sure the first admin exists and its Secret holds a working login. A missing
// Secret gets a new password, and the admin user in the schema is set to it: deleting the Secret is how
// a lost admin password is reset. Once the admin is confirmed (AdminReady), the password is theirs.
func (r *TenantReconciler) reconcileAdmin(ctx context.Context, run *tenantRun) error {
	t, app, secret := run.t, run.app, run.adminSecret
	name := t.Name + tenantryv1.AdminSecretSuffix
	if secret != nil && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionAdminReady) {
		t.Status.AdminSecretName = name
		return nil
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	email := t.Spec.Admin.Email
	plain := password.Generate(generatedPasswordLength)
	if secret != nil {
		if p := string(secret.Data["password"]); p != "" {
			plain = p
		}
		if e := string(secret.Data["email"]); e != "" {
			email = e
		}
	}
	// Only a password generated right here is hashed cheaply: one in an existing Secret may be a person's.
	hashFn := password.Hash
	if secret == nil {
		hashFn = password.HashGenerated
	}
	hash, err := hashFn(plain)
	if err != nil {
		return retryErr(tenantryv1.ReasonAdminFailed, err)
	}
	// Until the admin is confirmed, the Secret's password is the one that counts, also when a Secret
	// turns out to exist already (created by an earlier attempt that the cache had not shown yet).
	session, err := loc.db.Session(ctx, loc.id.Identity)
	if err == nil {
		_, err = session.EnsureAdmin(ctx, email, hash)
	}
	if err != nil {
		setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionFalse, tenantryv1.ReasonAdminFailed, err.Error())
		return retryErr(tenantryv1.ReasonAdminFailed, err)
	}
	if secret == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace, Labels: ownedLabels(t)},
			Type:       corev1.SecretTypeOpaque,
			StringData: map[string]string{"email": email, "password": plain, "url": tenantURL(t, app)},
		}
		if err := controllerutil.SetControllerReference(t, s, r.Scheme); err != nil {
			return retryErr(tenantryv1.ReasonAdminFailed, err)
		}
		if err := r.Create(ctx, s); err != nil {
			setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionFalse, tenantryv1.ReasonAdminFailed, err.Error())
			return retryErr(tenantryv1.ReasonAdminFailed, fmt.Errorf("creating Secret %s: %w", name, err))
		}
		waitForCache(ctx, r.Client, s)
	}
	t.Status.AdminSecretName = name
	setCondition(t, tenantryv1.ConditionAdminReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Admin %s; login in Secret %s", email, name))
	return nil
}
