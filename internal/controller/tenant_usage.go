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
	if !run.wasReady {
		first := r.UsageFirstDelay
		if first <= 0 {
			first = time.Minute
		}
		run.result.RequeueAfter = time.Second + jitter(first) // measured once the Ready status is written
		return nil
	}
	if u := t.Status.Usage; u != nil {
		if due := u.MeasuredAt.Add(r.UsageInterval); time.Now().Before(due) {
			run.result.RequeueAfter = time.Until(due) + jitter(r.UsageInterval/10)
			return nil
		}
	}
	run.result.RequeueAfter = r.UsageInterval + jitter(r.UsageInterval/10)
	loc, err := r.locate(ctx, run)
	if err != nil {
		if errors.Is(err, ErrDatabaseBusy) {
			run.result.RequeueAfter = time.Second + jitter(time.Second) // measured when a place is free
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

// jitter is a random duration up to d, which spreads thousands of tenants' periodic work over time.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}
