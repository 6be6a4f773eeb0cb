package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/robfig/cron/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// cronParser reads a ScheduledBackup's schedule: six fields, seconds first, as CloudNativePG's.
var cronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ScheduledBackupReconciler creates the Backups a ScheduledBackup asks for when they are due, and
// deletes those its keep.last no longer keeps (keep.for is each Backup's own spec.keepFor).
type ScheduledBackupReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// +kubebuilder:rbac:groups=tenantry.dev,resources=scheduledbackups,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=tenantry.dev,resources=scheduledbackups/status,verbs=get;update;patch

// Reconcile takes the backups that are due and prunes those past keep.last.
func (r *ScheduledBackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	sb := &tenantryv1.ScheduledBackup{}
	if err := r.Get(ctx, req.NamespacedName, sb); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sb.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // its Backups stay: each is kept by its own keepFor, or until deleted
	}
	before := sb.DeepCopy()
	defer func() {
		result, retErr = summarize(ctx, r.Client, r.Recorder, summary{
			obj: sb, before: before, conditions: &sb.Status.Conditions, beforeConditions: before.Status.Conditions,
			observed: &sb.Status.ObservedGeneration, oldStatus: before.Status, status: func() any { return sb.Status },
			readyMsg: func() string {
				if sb.Spec.Suspend {
					return "Suspended: no new backups"
				}
				if sb.Status.NextScheduleTime == nil {
					return ""
				}
				return "Next backups at " + sb.Status.NextScheduleTime.UTC().Format(time.RFC3339)
			},
		}, result, retErr)
	}()
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	schedule, err := cronParser.Parse(sb.Spec.Schedule)
	if err != nil {
		return ctrl.Result{}, stallErr(tenantryv1.ReasonInvalidSchedule, time.Hour, fmt.Errorf(
			"spec.schedule %q is not a cron expression of six fields, seconds first (e.g. \"0 0 2 * * *\"): %v", sb.Spec.Schedule, err))
	}
	if err := r.prune(ctx, sb); err != nil {
		return ctrl.Result{}, err
	}
	if sb.Spec.Suspend {
		sb.Status.NextScheduleTime = nil
		return ctrl.Result{}, nil
	}
	last := sb.CreationTimestamp.Time
	if sb.Status.LastScheduleTime != nil {
		last = sb.Status.LastScheduleTime.Time
	}
	due := schedule.Next(last)
	if sb.Spec.Immediate && sb.Status.LastScheduleTime == nil {
		due = now
	}
	if !now.Before(due) {
		// Backups missed while the operator was away are not made up: one set, now.
		if err := r.takeBackups(ctx, sb, due); err != nil {
			return ctrl.Result{}, err
		}
		at := metav1.NewTime(due)
		sb.Status.LastScheduleTime = &at
		due = schedule.Next(now)
	}
	next := metav1.NewTime(due)
	sb.Status.NextScheduleTime = &next
	return ctrl.Result{RequeueAfter: time.Until(due) + 10*time.Millisecond}, nil
}

// targets are the Tenants the schedule backs up now: its tenant, or its app's tenants that no
// ScheduledBackup of the namespace names by itself.
func (r *ScheduledBackupReconciler) targets(ctx context.Context, sb *tenantryv1.ScheduledBackup) ([]string, error) {
	if sb.Spec.Tenant != nil {
		return []string{sb.Spec.Tenant.Name}, nil
	}
	var tenants tenantryv1.TenantList
	if err := r.List(ctx, &tenants, client.InNamespace(sb.Namespace), client.MatchingFields{indexAppRef: sb.Spec.App.Name}); err != nil {
		return nil, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	var schedules tenantryv1.ScheduledBackupList
	if err := r.List(ctx, &schedules, client.InNamespace(sb.Namespace)); err != nil {
		return nil, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	own := map[string]bool{}
	for _, s := range schedules.Items {
		if s.Spec.Tenant != nil {
			own[s.Spec.Tenant.Name] = true
		}
	}
	var names []string
	for _, t := range tenants.Items {
		if !own[t.Name] && t.DeletionTimestamp.IsZero() {
			names = append(names, t.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// takeBackups creates the Backups due at due, one per target. Their names derive from the schedule,
// the tenant and the time, so a reconcile that runs twice for one time creates each once.
func (r *ScheduledBackupReconciler) takeBackups(ctx context.Context, sb *tenantryv1.ScheduledBackup, due time.Time) error {
	names, err := r.targets(ctx, sb)
	if err != nil {
		return err
	}
	sb.Status.LastBackups = nil
	for _, tenant := range names {
		b := &tenantryv1.Backup{
			ObjectMeta: metav1.ObjectMeta{Namespace: sb.Namespace, Name: scheduledBackupName(sb.Name, tenant, due),
				Labels: map[string]string{tenantryv1.LabelScheduledBackup: labelValue(sb.Name), LabelTenant: labelValue(tenant)}},
			Spec: tenantryv1.BackupSpec{Tenant: tenantryv1.LocalRef{Name: tenant}, KeepFor: sb.Spec.Keep.For},
		}
		if err := r.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
			return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("creating Backup %s: %w", b.Name, err))
		}
		sb.Status.LastBackups = append(sb.Status.LastBackups, b.Name)
	}
	return nil
}

// scheduledBackupName is <schedule>-<tenant>-<UTC time, to the second>, with the two names cut short
// and a hash of both where they are too long for a Backup's name.
func scheduledBackupName(schedule, tenant string, at time.Time) string {
	stamp := at.UTC().Format("20060102-150405")
	name := schedule + "-" + tenant
	if len(name) > 160 {
		sum := sha256.Sum256([]byte(schedule + "/" + tenant))
		name = name[:140] + "-" + hex.EncodeToString(sum[:8])
	}
	return name + "-" + stamp
}

// prune deletes, for each tenant, the completed Backups of this schedule beyond the newest keep.last,
// and the failed ones older than the newest completed.
func (r *ScheduledBackupReconciler) prune(ctx context.Context, sb *tenantryv1.ScheduledBackup) error {
	if sb.Spec.Keep.Last == nil {
		return nil
	}
	var backups tenantryv1.BackupList
	if err := r.List(ctx, &backups, client.InNamespace(sb.Namespace), client.MatchingLabels{tenantryv1.LabelScheduledBackup: labelValue(sb.Name)}); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	byTenant := map[string][]tenantryv1.Backup{}
	for _, b := range backups.Items {
		byTenant[b.Spec.Tenant.Name] = append(byTenant[b.Spec.Tenant.Name], b)
	}
	for _, list := range byTenant {
		// Newest first.
		slices.SortFunc(list, func(a, b tenantryv1.Backup) int { return b.CreationTimestamp.Compare(a.CreationTimestamp.Time) })
		completed := 0
		for i := range list {
			b := &list[i]
			if !b.DeletionTimestamp.IsZero() {
				continue
			}
			stale := false
			switch b.Status.Phase {
			case tenantryv1.BackupCompleted:
				completed++
				stale = completed > int(*sb.Spec.Keep.Last)
			case tenantryv1.BackupFailed:
				stale = completed > 0
			}
			if stale {
				if err := r.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
					return retryErr(tenantryv1.ReasonAPIServerError, err)
				}
			}
		}
	}
	return nil
}

// SetupWithManager registers the controller. Its Backups completing bring it back, to prune.
func (r *ScheduledBackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tenantryv1.ScheduledBackup{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}))).
		Watches(&tenantryv1.Backup{}, enqueueScheduleOf()).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Named("scheduledbackup").
		Complete(r)
}

// enqueueScheduleOf maps a Backup to the ScheduledBackup its label names.
func enqueueScheduleOf() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name, ok := o.GetLabels()[tenantryv1.LabelScheduledBackup]
		if !ok {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
}
