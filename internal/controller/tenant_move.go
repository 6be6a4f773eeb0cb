package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// A Tenant whose spec.shard names another shard than the one holding its schema moves there online,
// over several reconciles (see tenantdb/move.go for the database side):
//
//  1. The move is recorded in the home registry (tenantry.moves) and the Moving condition set; from then
//     on, a move interrupted anywhere (the operator killed, a server gone) is finished or undone from
//     that record.
//  2. The target gets the tenant's role, an empty schema at the same version, and a subscription to the
//     source's publication of the schema, which copies the data and then follows every write.
//  3. Once the copy is done and the target has caught up, the cut-over: the source's writers are fenced
//     (writes in flight finish, new ones fail with a 503 for a second or two, reads go on), the target
//     applies everything up to a marker, the sequences are copied, and the home registry names the
//     target: the app routes the tenant there within a second.
//  4. Subscription, publication and slot go; the source schema is kept, renamed (Retain), or dropped
//     (Delete).
//
// The tenant stays Ready and served throughout; a move that fails is undone, and leaves the tenant on
// its old shard, Stalled with what to fix.

// movePoll is how often a move in progress looks again.
const movePoll = 250 * time.Millisecond

// Bounds of the cut-over.
const (
	fenceLockTimeout = 2 * time.Second  // waiting for the tenant's writes in flight
	markerWait       = 10 * time.Second // waiting for the target to apply a marker
)

// reconcileMove moves the tenant to the shard its spec names, or finishes or undoes a move under way.
// A tenant with no move asked and none under way sends no SQL here.
func (r *TenantReconciler) reconcileMove(ctx context.Context, run *tenantRun) error {
	t := run.t
	moving := meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil
	if !moving && (t.Spec.Shard == "" || t.Spec.Shard == placedShard(t)) {
		return nil
	}
	loc, err := r.locate(ctx, run)
	if err != nil {
		return err
	}
	m, err := loc.home.CurrentMove(ctx, t.Namespace, t.Name)
	switch {
	case errors.Is(err, tenantdb.ErrNoMove):
		if t.Spec.Shard == "" || t.Spec.Shard == t.Status.Shard {
			meta.RemoveStatusCondition(&t.Status.Conditions, tenantryv1.ConditionMoving)
			return nil
		}
		if m, err = r.startMove(ctx, run, loc); err != nil {
			return err
		}
	case err != nil:
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	mv, err := r.openMove(ctx, run, loc, m)
	if err != nil {
		return err
	}
	switch {
	case t.Status.Shard == mv.target:
		return r.finishMove(ctx, run, mv)
	case t.Spec.Shard != mv.target:
		return r.abortMove(ctx, run, mv, fmt.Errorf("spec.shard changed to %q during the move", t.Spec.Shard), false)
	}
	return r.advanceMove(ctx, run, mv)
}

// defaultMoveDeadline is spec.moveDeadline's default.
const defaultMoveDeadline = time.Hour

// moveDeadline is how long a move of the app's tenants may take until its cut-over.
func moveDeadline(app *tenantryv1.ExpenseApp) time.Duration {
	if app.Spec.MoveDeadline == nil || app.Spec.MoveDeadline.Duration <= 0 {
		return defaultMoveDeadline
	}
	return app.Spec.MoveDeadline.Duration
}

// move is a move in progress with its two databases open, read from where the tenant lives (location).
type move struct {
	source, target string // shard names
	src, tgt       *tenantdb.DB
	home           *tenantdb.DB // records the move, and routes the tenant
	homeDatabase   string       // names the tenant's role and the app's login (location.homeDatabase)
	schema, role   string
	version        int64
	sourceIsHome   bool
	targetIsHome   bool
	sameServer     bool // roles are shared
	startedAt      time.Time
	// sourceURIForTarget is where the target's subscription reaches the source: the source's admin
	// connection string, whose login and password subscribe replaces with the move's own.
	sourceURIForTarget string
}

// identity is the tenant's schema and role, the same on both sides.
func (mv *move) identity() tenantdb.Identity {
	return tenantdb.Identity{Schema: mv.schema, Role: mv.role}
}

// startMove checks that the move can be made and records it.
func (r *TenantReconciler) startMove(ctx context.Context, run *tenantRun, loc *location) (tenantdb.Move, error) {
	t, app := run.t, run.app
	target := t.Spec.Shard
	if !hasShard(app, target) {
		return tenantdb.Move{}, stallErr(tenantryv1.ReasonShardNotFound, time.Minute, fmt.Errorf(
			"spec.shard %q is not a shard of ExpenseApp %s: name %q or one of its spec.shards", target, app.Name, tenantryv1.HomeShard))
	}
	if want := r.Release.Target(); loc.id.Version != want {
		return tenantdb.Move{}, waitErr(tenantryv1.ReasonMigrationQueued, 5*time.Second,
			"the move to shard %s waits for the schema to reach version %d (it is at %d)", target, want, loc.id.Version)
	}
	// A restore in place swaps the schema by name, which a publication would not follow.
	var restores tenantryv1.RestoreList
	if err := r.List(ctx, &restores, client.InNamespace(t.Namespace), client.MatchingLabels{LabelTenant: labelValue(t.Name)}); err != nil {
		return tenantdb.Move{}, retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	for _, rs := range restores.Items {
		if rs.Spec.Tenant.Name == t.Name && rs.Status.Phase == tenantryv1.RestoreRunning {
			return tenantdb.Move{}, waitErr(tenantryv1.ReasonProgressing, 10*time.Second,
				"the move to shard %s waits for Restore %s to finish", target, rs.Name)
		}
	}
	tgt, err := r.Databases.Shard(ctx, app, target)
	if err != nil {
		return tenantdb.Move{}, err
	}
	var req *tenantdb.MoveRequirementError
	for _, check := range []func(context.Context) error{loc.db.CheckMoveSource, tgt.CheckMoveTarget} {
		if err := check(ctx); errors.As(err, &req) {
			msg := fmt.Sprintf("cannot move to shard %s: %s; the tenant stays on shard %s", target, req.Msg, t.Status.Shard)
			setCondition(t, tenantryv1.ConditionMoving, metav1.ConditionFalse, tenantryv1.ReasonMoveBlocked, msg)
			return tenantdb.Move{}, stallErr(tenantryv1.ReasonMoveBlocked, time.Minute, errors.New(msg))
		} else if err != nil {
			return tenantdb.Move{}, retryErr(tenantryv1.ReasonDatabaseError, err)
		}
	}
	m, err := loc.home.StartMove(ctx, t.Namespace, t.Name, loc.id.Shard, registry.ShardColumn(target))
	if err != nil {
		return m, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "MoveStarted", "Move", "Moving from shard %s to shard %s", t.Status.Shard, target)
	return m, nil
}

// openMove opens the two databases of a recorded move of the tenant at loc.
func (r *TenantReconciler) openMove(ctx context.Context, run *tenantRun, loc *location, m tenantdb.Move) (*move, error) {
	mv := &move{source: registry.ShardName(m.Source), target: registry.ShardName(m.Target), home: loc.home,
		homeDatabase: loc.homeDatabase(), schema: loc.id.Schema, role: loc.id.Role, version: loc.id.Version, startedAt: m.StartedAt}
	mv.sourceIsHome, mv.targetIsHome = mv.source == tenantryv1.HomeShard, mv.target == tenantryv1.HomeShard
	var err error
	if mv.src, err = r.Databases.Shard(ctx, run.app, mv.source); err != nil {
		return nil, err
	}
	if mv.tgt, err = r.Databases.Shard(ctx, run.app, mv.target); err != nil {
		return nil, err
	}
	if err := mv.tgt.EnsureRegistry(ctx); err != nil {
		return nil, retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", mv.target, err))
	}
	if mv.sourceURIForTarget, err = r.Databases.URI(ctx, run.app, mv.source); err != nil {
		return nil, err
	}
	same := false
	if mv.sameServer, same, err = tenantdb.Where(ctx, mv.src, mv.tgt); err != nil {
		return nil, retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if same {
		// Preparing the target would empty the source: refused before anything is touched, and forgotten.
		if err := mv.home.EndMove(ctx, run.t.Namespace, run.t.Name); err != nil {
			return nil, retryErr(tenantryv1.ReasonDatabaseError, err)
		}
		msg := fmt.Sprintf("cannot move to shard %s: it is the same database as shard %s; point spec.shards at another database",
			mv.target, mv.source)
		setCondition(run.t, tenantryv1.ConditionMoving, metav1.ConditionFalse, tenantryv1.ReasonMoveBlocked, msg)
		return nil, stallErr(tenantryv1.ReasonMoveBlocked, time.Minute, errors.New(msg))
	}
	return mv, nil
}

// advanceMove takes a move as far as it goes now: preparing the target and subscribing, copying,
// catching up, and the cut-over. It returns a pending outcome while the move goes on (the tenant stays
// Ready and served).
func (r *TenantReconciler) advanceMove(ctx context.Context, run *tenantRun, mv *move) error {
	t := run.t
	fail := func(err error) error {
		if tenantdb.IsTransient(err) || ctx.Err() != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, err) // the record stays: the next reconcile goes on
		}
		return r.abortMove(ctx, run, mv, err, true)
	}
	// Past its deadline, a move that has not cut over is given up: its slot keeps WAL on the source for
	// as long as it lives.
	if d := moveDeadline(run.app); time.Since(mv.startedAt) > d {
		return r.abortMove(ctx, run, mv, fmt.Errorf("it did not cut over within spec.moveDeadline (%s)", d), true)
	}
	// A fence an interrupted cut-over left is lifted: until the cut-over, the source takes writes.
	if err := mv.src.Unfence(ctx, mv.schema, mv.role); err != nil {
		return fail(err)
	}
	subscribed, paused, err := mv.tgt.Subscribed(ctx, mv.schema)
	if err != nil {
		return fail(err)
	}
	if paused {
		// A cut-over interrupted after it paused the subscription: the target may have been open to the
		// app's login since, so it is not resumed. The move starts again from scratch.
		return r.restartMove(ctx, run, mv, errors.New("a cut-over was interrupted"))
	}
	if !subscribed {
		if err := r.prepareTarget(ctx, run, mv); err != nil {
			return err
		}
		if err := mv.src.Publish(ctx, mv.schema, tenantdb.MoveMark(t.Namespace, t.Name, mv.startedAt)); err != nil {
			return fail(err)
		}
		if err := r.subscribe(ctx, mv); err != nil {
			return fail(err)
		}
		return r.moving(t, mv, "copying the data")
	}
	ready, total, err := mv.tgt.CopyProgress(ctx, mv.schema)
	if err != nil {
		return fail(err)
	}
	if lag, err := mv.src.Lag(ctx, mv.schema); err == nil {
		slotLags.set(t.Namespace+"/"+t.Name, lag)
	}
	if n, err := mv.tgt.SubscriptionErrors(ctx, mv.schema); err == nil && n > 0 {
		return fail(fmt.Errorf("the target's replication workers met %d error(s); the target server's log says which", n))
	}
	if total == 0 || ready < total {
		return r.moving(t, mv, fmt.Sprintf("copying the data: %d of %d tables copied", ready, total))
	}
	// Caught up? A marker, with writes going on, arrives once everything before it has.
	if arrived, err := r.marker(ctx, mv, false); err != nil {
		return fail(err)
	} else if !arrived {
		lag, _ := mv.src.Lag(ctx, mv.schema)
		slotLags.set(t.Namespace+"/"+t.Name, lag)
		return r.moving(t, mv, fmt.Sprintf("catching up: %d bytes of WAL behind", lag))
	}
	// The cut-over.
	fenced := time.Now()
	arrived, err := r.marker(ctx, mv, true)
	if err != nil || !arrived {
		if uerr := mv.src.Unfence(ctx, mv.schema, mv.role); uerr != nil {
			return fail(uerr)
		}
		if err != nil && !isLockTimeout(err) {
			return fail(err)
		}
		return r.moving(t, mv, "the cut-over waited too long for writes in flight or for the target; trying again")
	}
	// Everything the source took is on the target. Its subscription stops applying before any login
	// but the admin may act as the tenant there: whatever someone plants on the target from then on, the
	// subscription's apply worker (on PostgreSQL 15, its superuser owner) never runs.
	if err := mv.tgt.PauseSubscription(ctx, mv.schema); err != nil {
		if uerr := mv.src.Unfence(ctx, mv.schema, mv.role); uerr != nil {
			return fail(uerr)
		}
		return fail(err)
	}
	err = mv.tgt.GrantWorker(ctx, mv.role)
	if err == nil {
		err = copySequences(ctx, mv)
	}
	if err == nil {
		// Only now may the app's login act as the tenant on the target, just before the app is sent there.
		err = grantApp(ctx, mv.tgt, mv.homeDatabase, run.app, mv.role)
	}
	if err == nil && !mv.targetIsHome {
		err = mv.tgt.SetState(ctx, mv.schema, registryState(t, mv.version), mv.version)
	}
	if err == nil {
		err = mv.home.SetShard(ctx, t.Namespace, t.Name, registry.ShardColumn(mv.target), mv.version)
	}
	if err != nil {
		// The target may have been open to the app's login: its copy is not resumed but dropped, and the
		// move starts again from scratch.
		return r.restartMove(ctx, run, mv, err)
	}
	unavailable := time.Since(fenced)
	moveCutoverSeconds.Observe(unavailable.Seconds())
	logf.FromContext(ctx).Info("tenant cut over", "from", mv.source, "to", mv.target, "writesPausedSeconds", unavailable.Seconds())
	r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "MoveCutOver", "Move",
		"Now served from shard %s; writes were paused for %s", mv.target, unavailable.Round(time.Millisecond))
	t.Status.Shard = mv.target
	run.loc = run.loc.movedTo(mv.tgt, mv.target)
	return r.finishMove(ctx, run, mv)
}

// prepareTarget gives the target the tenant's registry row, role and schema, migrated to the source's
// version and then emptied for the copy. It starts from scratch: what an interrupted attempt left of the
// schema goes first.
func (r *TenantReconciler) prepareTarget(ctx context.Context, run *tenantRun, mv *move) error {
	t := run.t
	if !mv.targetIsHome {
		reg := registration(t, mv.schema, mv.role)
		reg.Hosts, reg.State, reg.SchemaVersion = nil, "provisioning", 0
		if _, err := mv.tgt.Register(ctx, reg); err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: %w", mv.target, err))
		}
	}
	if err := r.ensureSchema(ctx, t, run.app, mv.homeDatabase, mv.tgt, mv.identity(), true); err != nil {
		return err
	}
	fsys, _ := r.Release.Get()
	session, err := mv.tgt.Session(ctx, mv.identity())
	var version int64
	if err == nil {
		version, err = session.Migrate(ctx, fsys, tenantdb.MoveMark(t.Namespace, t.Name, mv.startedAt))
	}
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("shard %s: migrating the new copy: %w", mv.target, err))
	}
	if version != mv.version {
		return r.abortMove(ctx, run, mv, fmt.Errorf("the target's copy migrated to version %d, the source is at %d", version, mv.version), true)
	}
	if err := session.EmptyCopy(ctx); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if err := mv.tgt.ClearMarker(ctx, mv.schema); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	// While the subscription copies and applies, no login but the admin may act as the tenant on the
	// target: not the app's, and not the operator's tenant login, which runs the code other tenants of
	// the app may have planted on this server. The cut-over grants both again.
	if err := mv.tgt.RevokeWorker(ctx, mv.role); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	return nil
}

// subscribe subscribes the target to the move's publication on the source, as the move's own
// replication login, which the tenant's session on the source lets read the tenant's tables: the
// target's pg_subscription, and the replication connection, never hold the source's admin password.
func (r *TenantReconciler) subscribe(ctx context.Context, mv *move) error {
	login, password, err := mv.src.MoveLogin(ctx, mv.schema)
	if err != nil {
		return err
	}
	session, err := mv.src.Session(ctx, mv.identity())
	if err != nil {
		return err
	}
	if err := session.GrantCopy(ctx, login); err != nil {
		return err
	}
	uri, err := withUser(mv.sourceURIForTarget, login, password)
	if err != nil {
		return err
	}
	return mv.tgt.Subscribe(ctx, mv.schema, uri)
}

// copySequences gives the target's sequences the source's last values, each read and written on its
// side's tenant session.
func copySequences(ctx context.Context, mv *move) error {
	src, err := mv.src.Session(ctx, mv.identity())
	if err != nil {
		return err
	}
	tgt, err := mv.tgt.Session(ctx, mv.identity())
	if err != nil {
		return err
	}
	seqs, err := src.Sequences(ctx)
	if err != nil {
		return err
	}
	return tgt.SetSequences(ctx, seqs)
}

// marker writes a marker on the source (with fence: after fencing its writers) and waits, briefly, for
// the target to apply it.
func (r *TenantReconciler) marker(ctx context.Context, mv *move, fence bool) (bool, error) {
	token, err := mv.src.Mark(ctx, mv.schema, mv.role, fence, fenceLockTimeout)
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(markerWait)
	for {
		ok, err := mv.tgt.HasMarker(ctx, mv.schema, token)
		if err != nil || ok {
			return ok, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// moving reports a move's progress in the Moving condition and looks again soon.
func (r *TenantReconciler) moving(t *tenantryv1.Tenant, mv *move, progress string) error {
	msg := fmt.Sprintf("Moving from shard %s to shard %s: %s", mv.source, mv.target, progress)
	setCondition(t, tenantryv1.ConditionMoving, metav1.ConditionTrue, tenantryv1.ReasonProgressing, msg)
	return pendingErr(movePoll, "%s", msg)
}

// finishMove cleans up after the cut-over: the subscription, publication and slot go, and the source
// schema is kept renamed (Retain) or dropped (Delete); then the move's record goes.
func (r *TenantReconciler) finishMove(ctx context.Context, run *tenantRun, mv *move) error {
	t := run.t
	if err := mv.tgt.Unsubscribe(ctx, mv.schema); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if err := mv.src.Unpublish(ctx, mv.schema); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	var err error
	if t.Spec.DeletionPolicy == tenantryv1.DeletionPolicyDelete {
		err = mv.src.DropMoved(ctx, t.Namespace, t.Name, mv.schema, !mv.sourceIsHome)
	} else {
		var kept string
		kept, err = mv.src.RetireMoved(ctx, t.Namespace, t.Name, mv.schema, mv.role, mv.target, !mv.sourceIsHome)
		if err == nil {
			r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "MoveRetained", "Move",
				"The copy left on shard %s is kept as schema %s (deletionPolicy Retain)", mv.source, kept)
		}
	}
	if err == nil && !mv.sameServer {
		// On another server the role is the source's alone: no login may act as it there any more.
		err = mv.src.RevokeMembers(ctx, mv.role)
	}
	if err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	if err := mv.home.EndMove(ctx, t.Namespace, t.Name); err != nil {
		return retryErr(tenantryv1.ReasonDatabaseError, err)
	}
	meta.RemoveStatusCondition(&t.Status.Conditions, tenantryv1.ConditionMoving)
	slotLags.forget(t.Namespace + "/" + t.Name)
	r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, "Moved", "Move", "Moved from shard %s to shard %s in %s",
		mv.source, mv.target, time.Since(mv.startedAt).Round(time.Millisecond))
	return nil
}

// abortMove undoes a move that has not cut over: the target's subscription, schema and row go, the
// source's publication and slot go and it takes writes again; the tenant stays where it was. With stall,
// the tenant is Stalled with why (and tried again later); else the move was called off.
func (r *TenantReconciler) abortMove(ctx context.Context, run *tenantRun, mv *move, cause error, stall bool) error {
	t := run.t
	steps := []func() error{
		func() error { return mv.tgt.Unsubscribe(ctx, mv.schema) },
		func() error { return mv.src.Unpublish(ctx, mv.schema) },
		func() error { return mv.src.Unfence(ctx, mv.schema, mv.role) },
		func() error { return mv.tgt.DropMoved(ctx, t.Namespace, t.Name, mv.schema, !mv.targetIsHome) },
		func() error { return mv.home.EndMove(ctx, t.Namespace, t.Name) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return retryErr(tenantryv1.ReasonDatabaseError, fmt.Errorf("undoing the move to shard %s (%v): %w", mv.target, cause, err))
		}
	}
	meta.RemoveStatusCondition(&t.Status.Conditions, tenantryv1.ConditionMoving)
	slotLags.forget(t.Namespace + "/" + t.Name)
	if !stall {
		return nil
	}
	moveFailures.Inc()
	msg := fmt.Sprintf("the move from shard %s to shard %s failed and was undone: %v. The tenant is served from shard %s; "+
		"the move is tried again in a minute, or set spec.shard back to %q", mv.source, mv.target, cause, mv.source, mv.source)
	return stallErr(tenantryv1.ReasonMoveFailed, time.Minute, errors.New(msg))
}

// restartMove undoes a move whose target can no longer be trusted (it may have been open to the app's
// login while its subscription was paused), and has it start again from scratch in a moment.
func (r *TenantReconciler) restartMove(ctx context.Context, run *tenantRun, mv *move, cause error) error {
	if err := r.abortMove(ctx, run, mv, cause, false); err != nil {
		return err
	}
	logf.FromContext(ctx).Info("move undone, to start again", "to", mv.target, "cause", cause.Error())
	return r.moving(run.t, mv, fmt.Sprintf("starting again (%v)", cause))
}

// isLockTimeout: the cut-over's wait for writes in flight ran out (lock_timeout), or met one of them
// waiting for it (a deadlock, which the fence loses on purpose).
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "40P01")
}
