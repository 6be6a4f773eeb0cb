package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// applyOutcome sets the kstatus conditions from a reconcile's outcome: success is Ready with the
// message given and no Reconciling or Stalled; a stall is Stalled and not Ready; anything else is
// Reconciling and not Ready. observedGeneration moves only when the outcome is final for this
// generation (success or stall). A pending outcome changes nothing. It returns the classified error, nil
// on success.
func applyOutcome(conds *[]metav1.Condition, observed *int64, generation int64, err error, readyMsg string) *stepError {
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: generation})
	}
	if err == nil {
		meta.RemoveStatusCondition(conds, tenantryv1.ConditionReconciling)
		meta.RemoveStatusCondition(conds, tenantryv1.ConditionStalled)
		set(tenantryv1.ConditionReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded, readyMsg)
		*observed = generation
		return nil
	}
	// Database errors are classified where they happen; what is left is the API server's.
	se := asStepError(err, tenantryv1.ReasonAPIServerError)
	if se.kind == pending {
		return se
	}
	if se.kind == stall {
		meta.RemoveStatusCondition(conds, tenantryv1.ConditionReconciling)
		set(tenantryv1.ConditionStalled, metav1.ConditionTrue, se.reason, se.Error())
		set(tenantryv1.ConditionReady, metav1.ConditionFalse, se.reason, se.Error())
		*observed = generation
		return se
	}
	meta.RemoveStatusCondition(conds, tenantryv1.ConditionStalled)
	set(tenantryv1.ConditionReconciling, metav1.ConditionTrue, tenantryv1.ReasonProgressing, se.Error())
	set(tenantryv1.ConditionReady, metav1.ConditionFalse, se.reason, se.Error())
	return se
}

// outcomeResult turns a classified outcome into what controller-runtime expects: an error for
// exponential backoff, or a plain requeue for waits and stalls, which are no fault of the operator.
func outcomeResult(ctx context.Context, result ctrl.Result, se *stepError) (ctrl.Result, error) {
	switch {
	case se == nil:
		return result, nil
	case se.kind == retry:
		logf.FromContext(ctx).V(1).Info("retrying", "reason", se.reason, "error", se.Error())
		return ctrl.Result{}, se
	default:
		return ctrl.Result{RequeueAfter: se.after}, nil
	}
}

// summary is what summarize needs of a Tenant or an ExpenseApp.
type summary struct {
	obj, before      client.Object
	conditions       *[]metav1.Condition
	beforeConditions []metav1.Condition
	observed         *int64
	oldStatus        any        // before's status, compared with status() to skip an unchanged patch
	status           func() any // obj's status as it is now
	finalizer        string
	readyMsg         func() string // the Ready message on success, from the status the steps left
	readyEvents      bool          // emit an event when the object becomes Ready
}

// summarize is the end of every reconcile, Tenant and ExpenseApp alike: it sets Ready, Reconciling and
// Stalled from the outcome, records events for the transitions, patches status when it changed, and
// turns the outcome into what controller-runtime expects. An object deleted and let go has no status to
// write.
func summarize(ctx context.Context, c client.Client, rec events.EventRecorder, s summary, result ctrl.Result,
	err error) (ctrl.Result, error) {
	if !s.obj.GetDeletionTimestamp().IsZero() && !controllerutil.ContainsFinalizer(s.obj, s.finalizer) {
		return result, err
	}
	se := applyOutcome(s.conditions, s.observed, s.obj.GetGeneration(), err, s.readyMsg())
	recordTransitions(rec, s.obj, s.beforeConditions, *s.conditions, s.readyEvents)
	if perr := patchStatus(ctx, c, s.before, s.obj, s.oldStatus, s.status()); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	return outcomeResult(ctx, result, se)
}

// patchStatus patches obj's status when it differs from before's, then waits for the cache to hold the
// result, so that the reconcile the patch itself triggers does not read the old status and redo work.
func patchStatus(ctx context.Context, c client.Client, before, obj client.Object, oldStatus, newStatus any) error {
	if equality.Semantic.DeepEqual(oldStatus, newStatus) {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patching status: %w", err)
	}
	waitForCache(ctx, c, obj)
	return nil
}

// waitForCache waits (briefly) until the manager's cache holds obj at least at the resourceVersion just
// written, so that the next reconcile reads its own writes. Giving up is harmless: every step is
// idempotent, a stale read only costs repeated work.
func waitForCache(ctx context.Context, c client.Reader, obj client.Object) {
	want, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		return
	}
	cached := obj.DeepCopyObject().(client.Object)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), cached); err == nil {
			if got, err := strconv.ParseUint(cached.GetResourceVersion(), 10, 64); err != nil || got >= want {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// recordTransitions emits an event when an object becomes Stalled (a warning with what to fix) and,
// when ready is true, when it becomes Ready. Tenants leave Ready out: onboarding thousands of them would
// write thousands of events no one reads.
func recordTransitions(rec events.EventRecorder, obj runtime.Object, before, after []metav1.Condition, ready bool) {
	if rec == nil {
		return
	}
	was, now := meta.FindStatusCondition(before, tenantryv1.ConditionStalled), meta.FindStatusCondition(after, tenantryv1.ConditionStalled)
	if now != nil && now.Status == metav1.ConditionTrue && (was == nil || was.Status != now.Status || was.Reason != now.Reason) {
		rec.Eventf(obj, nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", now.Message)
	}
	if !ready {
		return
	}
	if meta.IsStatusConditionTrue(after, tenantryv1.ConditionReady) && !meta.IsStatusConditionTrue(before, tenantryv1.ConditionReady) {
		rec.Eventf(obj, nil, corev1.EventTypeNormal, tenantryv1.ReasonSucceeded, "Reconcile", "%s",
			meta.FindStatusCondition(after, tenantryv1.ConditionReady).Message)
	}
}
