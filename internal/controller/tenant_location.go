package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// location is where a tenant lives, as its app's home registry records it: the home database (registry
// and routing), the database that holds the schema (home itself, or a shard), and what the registries
// record for the tenant's identity. Every write acts on that schema and role, never on status.schema,
// which anyone allowed to write status could have changed.
//
// A reconcile resolves it once, in the registration step (which places and registers a new tenant) or
// the first time a later step needs the database (locate), and the steps read it. Only a move's
// cut-over replaces it (movedTo).
type location struct {
	home *tenantdb.DB
	db   *tenantdb.DB
	// id is the identity's schema and role, the schema version db records, and the shard that holds
	// it, in the registry's spelling (registry.ShardName turns it into the API's).
	id tenantdb.FleetMember
}

// homeDatabase is the home database's name, from which the names of the tenant's schema and role and
// of the app's logins derive wherever they are.
func (l *location) homeDatabase() string { return l.home.Database() }

// movedTo is the location once a move's cut-over has sent the tenant to shard on db.
func (l *location) movedTo(db *tenantdb.DB, shard string) *location {
	moved := *l
	moved.db, moved.id.Shard = db, registry.ShardColumn(shard)
	return &moved
}

// locate is where the tenant lives, resolved the first time a step of this reconcile asks. It
// registers nothing: a tenant whose registry row is missing (removed by hand, say) loses its
// Registered condition, and the next reconcile's registration step registers it again.
func (r *TenantReconciler) locate(ctx context.Context, run *tenantRun) (*location, error) {
	if run.loc != nil {
		return run.loc, nil
	}
	home, id, registered, err := r.lookUp(ctx, run)
	if err != nil {
		return nil, err
	}
	if !registered {
		return nil, r.unregistered(run, home.Database())
	}
	if run.loc, err = r.openShard(ctx, run, home, id, false); err != nil {
		return nil, err
	}
	return run.loc, nil
}

// unregistered is the outcome of a step that found no registry row for a tenant registered before.
func (r *TenantReconciler) unregistered(run *tenantRun, database string) error {
	meta.RemoveStatusCondition(&run.t.Status.Conditions, tenantryv1.ConditionRegistered)
	return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf(
		"the registry of database %s has no row for the tenant, though it was registered; registering it again", database))
}

// lookUp opens the app's home database, takes a place on it for this reconcile, brings its registry up
// to date, and reads what it records for the tenant's identity.
func (r *TenantReconciler) lookUp(ctx context.Context, run *tenantRun) (*tenantdb.DB, tenantdb.FleetMember, bool, error) {
	home, err := r.Databases.For(ctx, run.app)
	if err != nil {
		return nil, tenantdb.FleetMember{}, false, err
	}
	if err := r.hold(ctx, run, home); err != nil {
		return nil, tenantdb.FleetMember{}, false, err
	}
	if err := home.EnsureRegistry(ctx); err != nil {
		return nil, tenantdb.FleetMember{}, false, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	id, registered, err := home.Lookup(ctx, run.t.Namespace, run.t.Name)
	if err != nil {
		return nil, tenantdb.FleetMember{}, false, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	return home, id, registered, nil
}

// openShard opens the shard the home registry records for the tenant (id) and reads the schema version
// its registry records (migrations record it there, in their own transaction). A tenant that shard's
// registry does not know is registered there when register is set (the registration step), else it
// is unregistered.
func (r *TenantReconciler) openShard(ctx context.Context, run *tenantRun, home *tenantdb.DB, id tenantdb.FleetMember,
	register bool) (*location, error) {
	t := run.t
	t.Status.Schema = id.Schema
	t.Status.Shard = registry.ShardName(id.Shard)
	if id.Shard == "" {
		return &location{home: home, db: home, id: id}, nil
	}
	db, err := r.Databases.Shard(ctx, run.app, id.Shard)
	if err != nil {
		return nil, err
	}
	if err := r.hold(ctx, run, db); err != nil {
		return nil, err
	}
	if err := db.EnsureRegistry(ctx); err != nil {
		return nil, retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", id.Shard, err))
	}
	held, registered, err := db.Lookup(ctx, t.Namespace, t.Name)
	switch {
	case err != nil:
		return nil, retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", id.Shard, err))
	case !registered && !register:
		return nil, r.unregistered(run, db.Database())
	case !registered:
		reg := registration(t, id.Schema, id.Role)
		reg.Hosts = nil // routing is the home database's
		var sc *tenantdb.SchemaConflictError
		held, err = db.Register(ctx, reg)
		if errors.As(err, &sc) {
			return nil, r.schemaConflict(t, fmt.Errorf("shard %s: %w", id.Shard, err))
		} else if err != nil {
			return nil, retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", id.Shard, err))
		}
	}
	id.Version = held.Version
	return &location{home: home, db: db, id: id}, nil
}

// databaseBusy is the pending outcome of a reconcile that found no free place on its database.
func databaseBusy(err error) error {
	return &stepError{kind: pending, err: fmt.Errorf("waiting for a free place on the database: %w", err),
		after: time.Second + jitter(time.Second)}
}

// hold takes one of db's places for this reconcile (Databases.Hold), once per database. A database
// with none free is a pending outcome: the tenant looks again in a moment, holding no worker meanwhile.
func (r *TenantReconciler) hold(ctx context.Context, run *tenantRun, db *tenantdb.DB) error {
	if run.held[db] != nil {
		return nil
	}
	release, err := r.Databases.Hold(ctx, db)
	if err != nil {
		return databaseBusy(err)
	}
	if run.held == nil {
		run.held = map[*tenantdb.DB]func(){}
	}
	run.held[db] = release
	return nil
}

// release gives back the places this reconcile held.
func (run *tenantRun) release() {
	for _, release := range run.held {
		release()
	}
	run.held = nil
}
