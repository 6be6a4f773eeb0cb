package controller

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// driftRetry is the wait before a pass that could not compare a shard is tried again, and askedGap the
// least time between the end of a pass and one the check-drift annotation asks for.
const (
	driftRetry = time.Minute
	askedGap   = 10 * time.Second
)

// AnnotationCheckDrift asks an ExpenseApp for a pass over its fleet now: any new value asks once; the
// pass records the value it answered in status.drift.requested.
const AnnotationCheckDrift = "tenantry.dev/check-drift"

// reconcileDriftPass compares the app's fleet with the release every DriftInterval (DriftPasses), in the
// background, and records the last pass in status.drift. The interval counts from the last pass
// recorded (from the app's creation before the first), with a jitter of up to a tenth of it that is the
// same for the app every time: a restarted operator starts none that is not due. A new value of the
// check-drift annotation asks for one now, or ten seconds after the last ended. A pass waits for a
// rollout to end.
func (r *ExpenseAppReconciler) reconcileDriftPass(ctx context.Context, run *appRun) error {
	if r.DriftInterval <= 0 || r.DriftPasses == nil {
		return nil
	}
	app := run.app
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	view := r.DriftPasses.View(key)
	last, answered := app.CreationTimestamp.Time, ""
	if d := app.Status.Drift; d != nil {
		last, answered = d.CheckedAt.Time, d.Requested
	}
	if !view.running && !view.ended.IsZero() && view.started.Truncate(time.Second).After(last) {
		d := &tenantryv1.FleetDrift{CheckedAt: metav1.NewTime(view.started), Duration: metav1.Duration{
			Duration: view.ended.Sub(view.started).Round(time.Millisecond)}, Compared: int32(view.checked), ReadInFull: int32(view.read),
			Failed: int32(view.failed), Requested: view.requested}
		if view.err != nil {
			d.Error = view.err.Error()
		}
		app.Status.Drift, last, answered = d, view.started, view.requested
	}
	if view.running {
		return nil
	}
	asked := app.Annotations[AnnotationCheckDrift]
	due := last.Add(r.DriftInterval + stableJitter(app.UID, r.DriftInterval/10))
	switch {
	case asked != "" && asked != answered:
		due = view.ended.Add(askedGap) // at once, unless a pass just ended
	case view.err != nil:
		due = view.ended.Add(driftRetry)
	}
	if wait := time.Until(due); wait > 0 {
		if run.requeue <= 0 || wait < run.requeue {
			run.requeue = wait
		}
		return nil
	}
	// A rollout first: the tenants it migrates compare themselves. A rollout that ended (halted, too) or a
	// tenant that never got a version (stalled before its schema was made) holds no pass back.
	if rollout, ran := r.Rollouts.View(key, r.Release.Plan()); rollout.running || !ran && behindRelease(run.tenants, run.target) {
		return nil
	}
	dbs := map[string]*tenantdb.DB{}
	for shard := range tenantsByShard(run.tenants) {
		db, err := r.Databases.Shard(ctx, app, shard)
		if err != nil {
			return nil // a shard away shows in ShardsReady; the pass starts once it is back
		}
		dbs[shard] = db
	}
	fsys, target := r.Release.Get()
	r.DriftPasses.Start(key, dbs, driftMembers(run.tenants, target), fsys, r.Release.Key(), target,
		int(app.Spec.Migrations.MaxConcurrent), asked)
	return nil
}
