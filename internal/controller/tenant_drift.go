package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// AnnotationRepairSchema asks the operator to make again, once, the objects of the release that a
// tenant's schema is missing (tenantdb.TenantSession.Repair). Any new value asks again; the value acted
// on is kept in status.drift.repaired. Nothing is ever dropped.
const AnnotationRepairSchema = "tenantry.dev/repair-schema"

// maxDriftDetails bounds status.drift.details.
const maxDriftDetails = 20

// reconcileDrift records how the tenant's schema differs from the shape the release's migrations make
// (tenantdb.DB.ReleaseShape, read once per release and database), into status.drift and the SchemaDrift
// condition. Its ExpenseApp compares every tenant every DriftInterval (DriftPasses) and hands over what
// changed; the tenant compares itself, on its tenant session, in one catalog query, only:
//   - once it is first Ready, a moment later (as usage is measured: off the onboarding's path);
//   - after a migration changed its schema version, in the reconcile that records the new version;
//   - when asked to repair (AnnotationRepairSchema).
//
// A Ready tenant with nothing of these sends no SQL. Drift never makes a tenant less Ready; a schema
// that cannot be read is reported as such (SchemaDrift Unknown, CompareFailed), its last details kept.
func (r *TenantReconciler) reconcileDrift(ctx context.Context, run *tenantRun) error {
	t := run.t
	if r.DriftInterval <= 0 || r.DriftPasses == nil {
		return nil
	}
	app := types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}
	if f, ok := r.DriftPasses.Take(app, t.Name); ok && f.version == t.Status.SchemaVersion && !repairAsked(t) {
		recordDrift(t, f)
		return nil
	}
	fsys, target := r.Release.Get()
	if t.Status.SchemaVersion != target || meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil {
		return nil // compared once it is at the release's version, and not while a move copies it
	}
	d := t.Status.Drift
	switch {
	case repairAsked(t):
	case d != nil && d.SchemaVersion != t.Status.SchemaVersion:
		// migrated since its last comparison
	case d == nil && readySince(t, time.Now().Add(-r.DriftInterval)):
		if !r.due(run, r.DriftInterval, nil) {
			return nil
		}
	default:
		return nil // its app's passes compare it (one Ready before drift was compared among them)
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		if errors.Is(err, ErrDatabaseBusy) {
			run.requeueWithin(soon())
		}
		return nil // the database's absence shows in the conditions of the steps that need it
	}
	// A first comparison that failed (a lock held, the database loaded) is tried again a minute later,
	// not at the app's next pass: until then the tenant has no fingerprint, and a pass reads it in full.
	failed := func(err error) error {
		recordDrift(t, driftFinding{version: target, at: time.Now(), err: err})
		if d == nil {
			run.requeueWithin(driftRetry + jitter(driftRetry/10))
		}
		return nil
	}
	want, err := loc.db.ReleaseShape(ctx, fsys, r.Release.Key())
	if err != nil {
		return failed(fmt.Errorf("the release's shape could not be read: %w", err))
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	var got tenantdb.Shape
	if err == nil {
		got, err = session.Shape(ctx)
	}
	if err != nil {
		return failed(err)
	}
	f := driftFinding{version: target, diffs: tenantdb.Compare(want, got), fingerprint: fingerprint(r.Release.Key(), got.Digest),
		at: time.Now()}
	var repaired, repairMsg string
	if d != nil {
		repaired, repairMsg = d.Repaired, d.RepairMessage
	}
	if repairAsked(t) {
		repaired = t.Annotations[AnnotationRepairSchema]
		repairMsg, f = r.repair(ctx, session, want, f)
	}
	recordDrift(t, f)
	t.Status.Drift.Repaired, t.Status.Drift.RepairMessage = repaired, repairMsg
	return nil
}

// readySince: the tenant became Ready after the time given.
func readySince(t *tenantryv1.Tenant, since time.Time) bool {
	c := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.LastTransitionTime.After(since)
}

// repairAsked: the tenant's repair annotation holds a value not acted on yet.
func repairAsked(t *tenantryv1.Tenant) bool {
	v, ok := t.Annotations[AnnotationRepairSchema]
	return ok && v != "" && (t.Status.Drift == nil || t.Status.Drift.Repaired != v)
}

// repair makes the missing objects of a comparison again and compares once more. It returns what it
// did, in words, and the comparison afterwards.
func (r *TenantReconciler) repair(ctx context.Context, session *tenantdb.TenantSession, want tenantdb.Shape,
	f driftFinding) (string, driftFinding) {
	made, left, err := session.Repair(ctx, f.diffs)
	if err != nil {
		return err.Error(), f
	}
	msg := "nothing was missing"
	if len(made) > 0 {
		msg = "made again: " + strings.Join(made, ", ")
	}
	if len(left) > 0 {
		msg += "; cannot be made again (restore them from a backup): " + strings.Join(left, ", ")
	}
	got, err := session.Shape(ctx)
	if err != nil {
		return msg + "; not compared again: " + err.Error(), f
	}
	f.diffs, f.fingerprint, f.at = tenantdb.Compare(want, got), fingerprint(r.Release.Key(), got.Digest), time.Now()
	return msg, f
}

// recordDrift writes a comparison into status.drift and the SchemaDrift condition, keeping what the
// last repair did. A schema that could not be read keeps its last details, loses its fingerprint (it
// is read in full next time) and its SchemaDrift becomes Unknown, saying why.
func recordDrift(t *tenantryv1.Tenant, f driftFinding) {
	if f.err != nil {
		if t.Status.Drift != nil {
			t.Status.Drift.Fingerprint = ""
		}
		setCondition(t, tenantryv1.ConditionSchemaDrift, metav1.ConditionUnknown, tenantryv1.ReasonCompareFailed,
			fmt.Sprintf("The schema could not be read to compare it with the release: %v. A session holding a lock on its "+
				"tables, or the database away; it is tried again at the next pass", f.err))
		return
	}
	diffs, version := f.diffs, f.version
	d := &tenantryv1.TenantDrift{CheckedAt: metav1.NewTime(f.at), SchemaVersion: version, Differences: int32(len(diffs)),
		Fingerprint: f.fingerprint}
	if last := t.Status.Drift; last != nil {
		d.Repaired, d.RepairMessage = last.Repaired, last.RepairMessage
	}
	for i, diff := range diffs {
		if diff.Planted() {
			d.Planted++
		}
		if i < maxDriftDetails {
			d.Details = append(d.Details, diff.String())
		}
	}
	t.Status.Drift = d
	switch {
	case len(diffs) == 0:
		setCondition(t, tenantryv1.ConditionSchemaDrift, metav1.ConditionFalse, tenantryv1.ReasonMatchesRelease,
			fmt.Sprintf("The schema holds what the release's migrations make at version %d", version))
	case d.Planted > 0:
		setCondition(t, tenantryv1.ConditionSchemaDrift, metav1.ConditionTrue, tenantryv1.ReasonCodePlanted,
			fmt.Sprintf("The schema holds %d object(s) of code the release does not have, which run when the app uses it, "+
				"and differs in %d object(s) in all: %s. See status.drift and docs/drift.md", d.Planted, len(diffs), summary3(d.Details, len(diffs))))
	default:
		setCondition(t, tenantryv1.ConditionSchemaDrift, metav1.ConditionTrue, tenantryv1.ReasonSchemaDrifted,
			fmt.Sprintf("The schema differs from the release's version %d in %d object(s): %s. See status.drift and docs/drift.md",
				version, len(diffs), summary3(d.Details, len(diffs))))
	}
}

// summary3 is the first three details of total differences, and how many more there are.
func summary3(details []string, total int) string {
	if total <= 3 {
		return strings.Join(details, "; ")
	}
	return strings.Join(details[:3], "; ") + fmt.Sprintf("; and %d more", total-3)
}
