package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// AnnotationRepairSchema asks the operator to make again, once, the objects of the release that a
// tenant's schema is missing (tenantdb.TenantSession.Repair). Any new value asks again; the value acted
// on is kept in status.drift.repaired. Nothing is ever dropped.
const AnnotationRepairSchema = "tenantry.dev/repair-schema"

// maxDriftDetails bounds status.drift.details.
const maxDriftDetails = 20

// reconcileDrift compares the tenant's schema with the shape the release's migrations make
// (tenantdb.DB.ReleaseShape, read once per release and database), on the tenant session, in one catalog
// query, into status.drift and the SchemaDrift condition. It is scheduled as usage is: a moment after
// the tenant becomes Ready, then every DriftInterval, jittered; and at once after a migration changed
// its version. A Ready tenant compared within the interval sends no SQL, so a restarted operator sends
// none. A tenant is compared at the release's version only, and not while it moves. Drift never makes
// it less Ready; a failed comparison keeps the last one.
func (r *TenantReconciler) reconcileDrift(ctx context.Context, run *tenantRun) error {
	t := run.t
	if r.DriftInterval <= 0 {
		return nil
	}
	var last *metav1.Time
	if d := t.Status.Drift; d != nil && d.SchemaVersion == t.Status.SchemaVersion && !repairAsked(t) {
		last = &d.CheckedAt
	}
	if !r.due(run, r.DriftInterval, last) {
		return nil
	}
	fsys, target := r.Release.Get()
	if t.Status.SchemaVersion != target || meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil {
		return nil // compared once it is at the release's version, and not while a move copies it
	}
	log := logf.FromContext(ctx)
	loc, err := r.locate(ctx, run)
	if err != nil {
		if errors.Is(err, ErrDatabaseBusy) {
			run.requeueWithin(soon())
		}
		return nil // the database's absence shows in the conditions of the steps that need it
	}
	want, err := loc.db.ReleaseShape(ctx, fsys, r.Release.Key())
	if err != nil {
		log.Info("cannot read the release's schema shape; keeping the last comparison", "error", err.Error())
		return nil
	}
	session, err := loc.db.Session(ctx, loc.id.Identity)
	var got tenantdb.Shape
	if err == nil {
		got, err = session.Shape(ctx)
	}
	if err != nil {
		log.Info("cannot read the tenant's schema; keeping the last comparison", "error", err.Error())
		return nil
	}
	diffs := tenantdb.Compare(want, got)
	var repaired, repairMsg string
	if t.Status.Drift != nil {
		repaired, repairMsg = t.Status.Drift.Repaired, t.Status.Drift.RepairMessage
	}
	if repairAsked(t) {
		repaired = t.Annotations[AnnotationRepairSchema]
		repairMsg, diffs = r.repair(ctx, session, want, diffs)
	}
	recordDrift(t, diffs, target)
	t.Status.Drift.Repaired, t.Status.Drift.RepairMessage = repaired, repairMsg
	return nil
}

// repairAsked: the tenant's repair annotation holds a value not acted on yet.
func repairAsked(t *tenantryv1.Tenant) bool {
	v, ok := t.Annotations[AnnotationRepairSchema]
	return ok && v != "" && (t.Status.Drift == nil || t.Status.Drift.Repaired != v)
}

// repair makes the missing objects again and compares once more. It returns what it did, in words, and
// the differences left.
func (r *TenantReconciler) repair(ctx context.Context, session *tenantdb.TenantSession, want tenantdb.Shape,
	diffs []tenantdb.Difference) (string, []tenantdb.Difference) {
	made, left, err := session.Repair(ctx, diffs)
	if err != nil {
		return err.Error(), diffs
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
		return msg + "; not compared again: " + err.Error(), diffs
	}
	return msg, tenantdb.Compare(want, got)
}

// recordDrift writes a comparison into status.drift and the SchemaDrift condition.
func recordDrift(t *tenantryv1.Tenant, diffs []tenantdb.Difference, version int64) {
	d := &tenantryv1.TenantDrift{CheckedAt: metav1.Now(), SchemaVersion: version, Differences: int32(len(diffs))}
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
