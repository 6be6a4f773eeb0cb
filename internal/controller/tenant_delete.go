package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// reconcileDelete takes the tenant out of the registry's service and every app login's reach, and with
// deletionPolicy Delete drops its schema and role, then lets the Tenant go. With Retain the registry
// keeps recording who owns the schema and role. Its host claims go last; its Ingress and admin Secret
// go by garbage collection.
func (r *TenantReconciler) reconcileDelete(ctx context.Context, t *tenantryv1.Tenant) error {
	if !controllerutil.ContainsFinalizer(t, tenantryv1.TenantFinalizer) {
		return nil
	}
	app := &tenantryv1.ExpenseApp{}
	err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}, app)
	switch {
	case apierrors.IsNotFound(err):
		// No app, no database to reach: the registry and schema went, or stay, with it.
		logf.FromContext(ctx).Info("ExpenseApp is gone; nothing to clean up in the database", "app", t.Spec.AppRef.Name)
	case err != nil:
		return retryErr(tenantryv1.ReasonDeletionBlocked, fmt.Errorf("reading ExpenseApp %s: %w", t.Spec.AppRef.Name, err))
	default:
		if err := r.deleteFromDatabase(ctx, t, app); err != nil {
			return err
		}
	}
	// Its hosts, out of every registry now, and out of every route once those are gone (not left to
	// garbage collection, which a deletion that orphans dependents skips), are free for any namespace.
	// The claims are listed from the API server: one made a moment ago is not left behind.
	for _, route := range r.routeKinds() {
		if err := r.deleteRoute(ctx, t, route); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	if err := r.releaseHosts(ctx, r.APIReader, t, nil); err != nil {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	patch := client.MergeFrom(t.DeepCopy())
	controllerutil.RemoveFinalizer(t, tenantryv1.TenantFinalizer)
	if err := r.Patch(ctx, t, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.Nodes.Forget(types.NamespacedName{Namespace: t.Namespace, Name: t.Name})
	return nil
}

func (r *TenantReconciler) deleteFromDatabase(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) error {
	blocked := func(err error) error {
		se := asStepError(err, tenantryv1.ReasonDeletionBlocked)
		return &stepError{kind: se.kind, reason: tenantryv1.ReasonDeletionBlocked, after: 10 * time.Second,
			err: fmt.Errorf("cannot reach the database to remove the tenant: %w", se.err)}
	}
	run := &tenantRun{t: t, app: app}
	defer run.release()
	// What to retire or drop is what the registry records for this identity, never status.schema.
	home, id, registered, err := r.lookUp(ctx, run)
	if err != nil {
		return blocked(err)
	}
	if !registered {
		return nil
	}
	db := home
	if id.Shard != "" {
		if db, err = r.Databases.Shard(ctx, app, id.Shard); err != nil {
			return blocked(err)
		}
		if err := db.EnsureRegistry(ctx); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	// A move under way is undone first: its copy and replication go, and the tenant is where it was.
	if m, err := home.CurrentMove(ctx, t.Namespace, t.Name); err == nil {
		mv, err := r.openMove(ctx, run, &location{home: home, db: db, id: id}, m)
		if err != nil {
			return blocked(err)
		}
		if err := r.abortMove(ctx, run, mv, errors.New("the Tenant is being deleted"), false); err != nil {
			return blocked(err)
		}
	} else if !errors.Is(err, tenantdb.ErrNoMove) {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	// The row kept with Retain records the namespace's UID, if it had none.
	var nsUID string
	ns := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: t.Namespace}, ns); err == nil {
		nsUID = string(ns.UID)
	} else if !apierrors.IsNotFound(err) {
		return retryErr(tenantryv1.ReasonDeletionBlocked, fmt.Errorf("reading namespace %s: %w", t.Namespace, err))
	}
	// The home database's routing first: no request reaches the tenant while its shard lets go.
	for _, d := range uniqueDBs(home, db) {
		if err := d.Retire(ctx, t.Namespace, t.Name, nsUID); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	if err := db.RevokeMembers(ctx, id.Role); err != nil {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	if t.Spec.DeletionPolicy != tenantryv1.DeletionPolicyDelete {
		return nil
	}
	if err := db.DropSchema(ctx, id.Schema, id.Role); err != nil {
		return retryErr(tenantryv1.ReasonDeletionBlocked, err)
	}
	// The shard's row last of the shard, the home row last of all: until then it records where the
	// schema was.
	for _, d := range uniqueDBs(db, home) {
		if err := d.Unregister(ctx, t.Namespace, t.Name); err != nil {
			return retryErr(tenantryv1.ReasonDeletionBlocked, err)
		}
	}
	return nil
}

// uniqueDBs is the databases given, in order, each once.
func uniqueDBs(dbs ...*tenantdb.DB) []*tenantdb.DB {
	var out []*tenantdb.DB
	for _, db := range dbs {
		if db != nil && !slices.Contains(out, db) {
			out = append(out, db)
		}
	}
	return out
}
