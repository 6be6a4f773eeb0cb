package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// LabelTenantUID labels a Tenant's HostClaims with its UID, to find them.
const LabelTenantUID = "tenantry.dev/tenant-uid"

// +kubebuilder:rbac:groups=tenantry.dev,resources=hostclaims,verbs=get;list;watch;create;delete

// reconcileHosts claims each of the tenant's hosts cluster-wide, a HostClaim named after it, before
// the registry hears of them: two Tenants of any namespaces and any databases cannot both hold a host,
// and the first claim holds. A host another Tenant holds stalls this one with HostConflict, naming the
// holder only when it is of the same namespace. It reads the cache: a tenant that holds its claims
// costs nothing here, and one from a release before HostClaims gets them at its first reconcile.
func (r *TenantReconciler) reconcileHosts(ctx context.Context, run *tenantRun) error {
	t := run.t
	for _, host := range t.Spec.Hosts {
		if err := r.claimHost(ctx, t, host); err != nil {
			return err
		}
	}
	return nil
}

// claimHost claims one host for the tenant, or finds it claimed by the tenant already. A claim whose
// Tenant is gone (deleted while the operator was away) is taken over.
func (r *TenantReconciler) claimHost(ctx context.Context, t *tenantryv1.Tenant, host string) error {
	uid := string(t.UID)
	key := client.ObjectKey{Name: host}
	held := &tenantryv1.HostClaim{}
	err := r.Get(ctx, key, held) // the cache: a claim the tenant holds costs no API call
	for range 3 {
		switch {
		case apierrors.IsNotFound(err):
			claim := &tenantryv1.HostClaim{
				ObjectMeta: metav1.ObjectMeta{Name: host, Labels: map[string]string{LabelManagedBy: ManagedBy, LabelTenantUID: uid}},
				Spec:       tenantryv1.HostClaimSpec{Tenant: tenantryv1.HostClaimTenant{Namespace: t.Namespace, Name: t.Name, UID: uid}},
			}
			if err = r.Create(ctx, claim); err == nil {
				return nil
			}
			if !apierrors.IsAlreadyExists(err) {
				return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("claiming host %q: %w", host, err))
			}
			err = r.APIReader.Get(ctx, key, held) // claimed a moment ago: by whom?
			continue
		case err != nil:
			return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading the claim of host %q: %w", host, err))
		case held.Spec.Tenant.UID == uid:
			return nil
		}
		stale, serr := r.staleClaim(ctx, held)
		if serr != nil {
			return serr
		}
		if !stale {
			return hostConflict(t, tenantdb.HostHeldBy(host, held.Spec.Tenant.Namespace, held.Spec.Tenant.Name, t.Namespace))
		}
		// Only that very claim goes, and the host is claimed again.
		if derr := r.Delete(ctx, held, client.Preconditions{UID: &held.UID}); derr != nil && !apierrors.IsNotFound(derr) &&
			!apierrors.IsConflict(derr) {
			return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("taking over the stale claim of host %q: %w", host, derr))
		}
		err = apierrors.NewNotFound(tenantryv1.GroupVersion.WithResource("hostclaims").GroupResource(), host)
	}
	return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("claiming host %q: its claim keeps changing", host))
}

// staleClaim says whether a claim's Tenant is gone: not found, or another Tenant of its name. It reads
// the API server, not the cache. A Tenant this operator may not read (another installation's, in a
// namespace it does not watch) is not gone.
func (r *TenantReconciler) staleClaim(ctx context.Context, claim *tenantryv1.HostClaim) (bool, error) {
	holder := &tenantryv1.Tenant{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: claim.Spec.Tenant.Namespace, Name: claim.Spec.Tenant.Name}, holder)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case apierrors.IsForbidden(err):
		return false, nil
	case err != nil:
		return false, retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading the holder of host %q: %w", claim.Name, err))
	}
	return string(holder.UID) != claim.Spec.Tenant.UID, nil
}

// hostConflict stalls a tenant that asks for a host another tenant holds.
func hostConflict(t *tenantryv1.Tenant, hc *tenantdb.HostConflictError) error {
	msg := hc.Error() + "; choose another host or remove it from that tenant"
	setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionFalse, tenantryv1.ReasonHostConflict, msg)
	return stallErr(tenantryv1.ReasonHostConflict, 5*time.Minute, errors.New(msg))
}

// reconcileReleasedHosts lets go of the claims of hosts the tenant no longer lists, once neither the
// registry (the registration step) nor the tenant's route (the route step) has them: until then, no
// other Tenant can be given a host this one still serves. Hosts change only with the spec, so a tenant
// Ready at its generation let go of them already (and a restart lists nothing); it lists from the cache.
func (r *TenantReconciler) reconcileReleasedHosts(ctx context.Context, run *tenantRun) error {
	if run.wasReady {
		return nil
	}
	if err := r.releaseHosts(ctx, r.Client, run.t, run.t.Spec.Hosts); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	return nil
}

// releaseHosts deletes the tenant's claims, as c lists them, of hosts it does not keep (all of them when
// keep is nil).
func (r *TenantReconciler) releaseHosts(ctx context.Context, c client.Reader, t *tenantryv1.Tenant, keep []string) error {
	var claims tenantryv1.HostClaimList
	if err := c.List(ctx, &claims, client.MatchingLabels{LabelTenantUID: string(t.UID)}); err != nil {
		return fmt.Errorf("listing the tenant's host claims: %w", err)
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if slices.Contains(keep, c.Name) || c.Spec.Tenant.UID != string(t.UID) {
			continue
		}
		if err := r.Delete(ctx, c, client.Preconditions{UID: &c.UID}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("releasing host %q: %w", c.Name, err)
		}
	}
	return nil
}
