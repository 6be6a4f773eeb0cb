package controller

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// Fleet paces the migration of existing tenants when a release brings new migrations: a canary batch
// first, then everyone, and a halt once more tenants have failed than the ExpenseApp's failure budget.
// How many migrate at once is bounded by the migration connection pool (spec.migrations.maxConcurrent).
// New tenants are not paced: they have no schema to protect.
type Fleet struct {
	mu       sync.Mutex
	inFlight map[types.NamespacedName]int
}

// fleetView is what the gate reads of an app's tenants (from the cache).
type fleetView struct {
	total, atTarget int
	failed          []string
}

func viewFleet(tenants []tenantryv1.Tenant, target int64) fleetView {
	v := fleetView{total: len(tenants)}
	for _, t := range tenants {
		if t.Status.SchemaVersion >= target {
			v.atTarget++
			continue
		}
		if migrationFailed(&t) {
			v.failed = append(v.failed, t.Name)
		}
	}
	sort.Strings(v.failed)
	return v
}

// halted reports whether the failures exceed the app's budget, with a message naming them.
func (v fleetView) halted(app *tenantryv1.ExpenseApp, target int64) (bool, string) {
	if len(v.failed) <= int(app.Spec.Migrations.MaxFailures) {
		return false, ""
	}
	names := v.failed
	if len(names) > 5 {
		names = append(names[:5:5], fmt.Sprintf("and %d more", len(v.failed)-5))
	}
	return true, fmt.Sprintf("Migration to schema version %d halted: %d tenant(s) failed (%s), more than the budget of %d "+
		"(spec.migrations.maxFailures). Each failed Tenant's MigrationsApplied condition has the error; fix the migration and "+
		"the rollout resumes", target, len(v.failed), strings.Join(names, ", "), app.Spec.Migrations.MaxFailures)
}

// acquire decides whether tenant t of app may migrate now. On success the caller must release.
// A tenant whose migration failed may always try again: it is counted among the failures already, and
// its retry is how a fixed migration gets the rollout going again.
func (f *Fleet) acquire(app *tenantryv1.ExpenseApp, t *tenantryv1.Tenant, tenants []tenantryv1.Tenant, target int64) error {
	v := viewFleet(tenants, target)
	retrying := migrationFailed(t)
	if halted, msg := v.halted(app, target); halted && !retrying {
		return waitErr(tenantryv1.ReasonRolloutHalted, 30*time.Second, "%s", msg)
	}
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	canary := max(int(app.Spec.Migrations.Canary), 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !retrying && v.atTarget < canary && v.atTarget+f.inFlight[key] >= canary {
		return waitErr(tenantryv1.ReasonMigrationQueued, 200*time.Millisecond,
			"waiting for the canary tenants to migrate to schema version %d first (%d of %d done)", target, v.atTarget, canary)
	}
	if f.inFlight == nil {
		f.inFlight = map[types.NamespacedName]int{}
	}
	f.inFlight[key]++
	return nil
}

func (f *Fleet) release(app *tenantryv1.ExpenseApp) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight[types.NamespacedName{Namespace: app.Namespace, Name: app.Name}]--
}

// migrationFailed reports whether the tenant's last migration attempt failed.
func migrationFailed(t *tenantryv1.Tenant) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMigrationsApplied)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == tenantryv1.ReasonMigrationFailed
}

// rolloutResumed passes an ExpenseApp update that lifts a halted rollout, so the tenants waiting for it
// go on at once rather than at their next retry.
var rolloutResumed = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return rolloutHalted(e.ObjectOld.(*tenantryv1.ExpenseApp)) && !rolloutHalted(e.ObjectNew.(*tenantryv1.ExpenseApp))
	},
}

func rolloutHalted(app *tenantryv1.ExpenseApp) bool {
	c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionStalled)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == tenantryv1.ReasonRolloutHalted
}
