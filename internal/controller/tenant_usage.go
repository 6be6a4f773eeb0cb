package controller

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// reconcileUsage measures what the tenant uses (tenantdb.Usage: one statement) into status.usage, every
// UsageInterval. Onboarding never waits for it: a tenant is first measured on a reconcile after the
// one that made it Ready, a moment later. A failed measurement keeps the last one and is tried again
// at the next interval; it never makes the tenant less Ready.
func (r *TenantReconciler) reconcileUsage(ctx context.Context, run *tenantRun) error {
	t := run.t
	if r.UsageInterval <= 0 {
		return nil
	}
	var last *metav1.Time
	if u := t.Status.Usage; u != nil {
		last = &u.MeasuredAt
	}
	if !r.due(run, r.UsageInterval, last) {
		return nil
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		if errors.Is(err, ErrDatabaseBusy) {
			run.requeueWithin(soon()) // measured when a place is free
		}
		return nil // the database's absence shows in the conditions of the steps that need it
	}
	if err := locateNode(ctx, run.t, loc); err != nil {
		logf.FromContext(ctx).Info("cannot find the tenant's Citus worker; keeping the last one", "error", err.Error())
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	var u tenantdb.Usage
	if err == nil {
		u, err = session.Usage(ctx)
	}
	if err != nil {
		logf.FromContext(ctx).Info("cannot measure the tenant's usage; keeping the last measurement", "error", err.Error())
		return nil
	}
	t.Status.Usage = &tenantryv1.TenantUsage{Users: u.Users, ActiveUsers: u.ActiveUsers, Expenses: u.Expenses,
		SchemaBytes: u.SchemaBytes, MeasuredAt: metav1.Now()}
	return nil
}

// due schedules a periodic check of a Ready tenant's schema (usage, drift), last done at last (nil:
// never, or to be done again now). A tenant not yet Ready when this reconcile began waits for the
// reconcile after the one that writes its Ready status: a second and up to FirstCheckDelay later, so
// that a thousand tenants onboarded at once are not checked at once. One checked within interval
// waits for the rest of it. Otherwise the check is due now, and the next one an interval later; each
// wait is jittered, and asked for with requeueWithin.
func (r *TenantReconciler) due(run *tenantRun, interval time.Duration, last *metav1.Time) bool {
	if !run.wasReady {
		first := r.FirstCheckDelay
		if first <= 0 {
			first = time.Minute
		}
		run.requeueWithin(time.Second + jitter(first)) // checked once the Ready status is written
		return false
	}
	if last != nil {
		if due := last.Add(interval); time.Now().Before(due) {
			run.requeueWithin(time.Until(due) + jitter(interval/10))
			return false
		}
	}
	run.requeueWithin(interval + jitter(interval/10))
	return true
}

// requeueWithin asks for the tenant to be reconciled again after d at the latest.
func (run *tenantRun) requeueWithin(d time.Duration) {
	if run.result.RequeueAfter <= 0 || d < run.result.RequeueAfter {
		run.result.RequeueAfter = d
	}
}

// soon is the wait before a check that found its database busy tries again.
func soon() time.Duration { return time.Second + jitter(time.Second) }

// jitter is a random duration up to d, which spreads thousands of tenants' periodic work over time.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}
