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

// registryState is the state the app should see for the tenant.
func registryState(t *tenantryv1.Tenant, version int64) string {
	switch {
	case version == 0:
		return registry.StateProvisioning
	case t.Spec.Suspend:
		return registry.StateSuspended
	default:
		return registry.StateActive
	}
}

// reconcileRegistration claims the tenant's schema name and hosts in the registry and writes its
// display name, branding and settings, once per generation; a new tenant is first placed on a shard
// (Placement), and registered in that shard's registry too. It runs before any DDL, so a tenant that
// conflicts with another creates nothing, and it resolves where the tenant lives for the steps after.
func (r *TenantReconciler) reconcileRegistration(ctx context.Context, run *tenantRun) error {
	t := run.t
	if t.Status.ObservedGeneration == t.Generation && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionRegistered) {
		return nil
	}
	home, _, registered, err := r.lookUp(ctx, run)
	if err != nil {
		return err
	}
	name := registry.TenantName(home.Database(), t.Namespace, t.Name)
	reg := registration(t, name, name)
	// The namespace's UID: a schema retained for a namespace of this name that was deleted since goes
	// to no Tenant of this one, unless the platform team labelled it that namespace's successor.
	ns := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: t.Namespace}, ns); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("reading namespace %s: %w", t.Namespace, err))
	}
	reg.NamespaceUID = string(ns.UID)
	if from, ok := ns.Labels[LabelAdoptRetainedFrom]; ok {
		reg.Successor = &from
	}
	if !registered { // where it goes; a registered tenant keeps its shard
		shard, err := r.Placement.Choose(ctx, r.Client, t, run.app)
		if err != nil {
			return err
		}
		reg.Shard = registry.ShardColumn(shard)
	}
	id, err := home.Register(ctx, reg)
	var hc *tenantdb.HostConflictError
	var sc *tenantdb.SchemaConflictError
	var re *tenantdb.RetainedElsewhereError
	switch {
	case errors.As(err, &hc):
		return hostConflict(t, hc)
	case errors.As(err, &sc):
		return r.schemaConflict(t, sc)
	case errors.As(err, &re):
		return r.schemaConflict(t, re)
	case err != nil:
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if run.loc, err = r.openShard(ctx, run, home, id, true); err != nil {
		return err
	}
	setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Registered with hosts %v", t.Spec.Hosts))
	return nil
}

// registration is the registry row of a tenant, with the schema and role names given.
func registration(t *tenantryv1.Tenant, schema, role string) tenantdb.Registration {
	return tenantdb.Registration{
		Schema:        schema,
		Role:          role,
		Namespace:     t.Namespace,
		Name:          t.Name,
		UID:           string(t.UID),
		DisplayName:   t.DisplayNameOrName(),
		Branding:      t.Spec.Branding,
		Settings:      t.Spec.Settings,
		State:         registryState(t, t.Status.SchemaVersion),
		SchemaVersion: t.Status.SchemaVersion,
		Hosts:         t.Spec.Hosts,
		App:           t.Spec.AppRef.Name,
	}
}

// schemaConflict stalls a tenant whose schema or role belongs to someone else.
func (r *TenantReconciler) schemaConflict(t *tenantryv1.Tenant, err error) error {
	setCondition(t, tenantryv1.ConditionRegistered, metav1.ConditionFalse, tenantryv1.ReasonSchemaConflict, err.Error())
	return stallErr(tenantryv1.ReasonSchemaConflict, 5*time.Minute, fmt.Errorf("%w; give this Tenant another name", err))
}
