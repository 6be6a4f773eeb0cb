package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// Rollouts move each ExpenseApp's fleet to the release's schema version from the database, not through
// each Tenant: one query reads every schema's version from the registry, then a pool of
// spec.migrations.maxConcurrent connections migrates the schemas behind, the canary tenants first and
// alone, each schema in one pipelined transaction that also records its new version in the registry
// (tenantdb.ApplyPlan). Once more tenants have failed than the failure budget, the rollout halts. The
// Tenants catch up afterwards, at their own pace, from what the rollout recorded here; the ExpenseApp
// reports its counts about once a second.
//
// A rollout is a goroutine of the operator that runs it: only the leader reconciles, so only the leader
// migrates, and a leader that goes takes its rollout with it. Its successor starts again from the
// registry, where every schema is at either its old version or its new one, never between.
type Rollouts struct {
	// Changed receives, once a rollout ended, each Tenant whose migration finished or failed, so it
	// reflects that soon; the Tenant controller watches it. (Tenants waiting also look again on their own.)
	Changed chan event.GenericEvent
	// Ended receives an ExpenseApp whose rollout ended (done, halted or failed to start), so that it
	// reports that, and may roll its image, at once rather than at its next poll.
	Ended chan event.GenericEvent

	mu   sync.Mutex
	runs map[types.NamespacedName]*rollout
}

// NewRollouts returns Rollouts with a channel for the Tenant controller.
func NewRollouts() *Rollouts {
	return &Rollouts{Changed: make(chan event.GenericEvent, 4096), Ended: make(chan event.GenericEvent, 64),
		runs: map[types.NamespacedName]*rollout{}}
}

// rollout is one run of one release's plan over one ExpenseApp's fleet.
type rollout struct {
	plan   *tenantdb.Plan
	target int64
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	versions map[string]int64 // tenant name → its schema version, as read and as migrated
	failed   map[string]error // tenant name → why its migration failed
	halted   bool
	err      error // the rollout could not run at all (e.g. reading the registry failed)
}

// rolloutView is what an ExpenseApp reconcile reads of its rollout.
type rolloutView struct {
	running  bool
	halted   bool
	versions map[string]int64
	failed   []string // sorted
	err      error
}

// Ensure starts a rollout of plan for app's tenants unless one of that plan runs or has run: a new
// plan (a new release, or a fixed migration) replaces the run of an old one, and starts where the
// registry says each schema is. A run that could not read the registry is started again.
func (rs *Rollouts) Ensure(app *tenantryv1.ExpenseApp, dbs map[string]*tenantdb.DB, plan *tenantdb.Plan, tenants []string) rolloutView {
	key := types.NamespacedName{Namespace: app.Namespace, Name: app.Name}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	run := rs.runs[key]
	if run != nil && (run.plan != plan || run.failedToStart()) {
		run.cancel()
		<-run.done
		run = nil
	}
	if run == nil {
		ctx, cancel := context.WithCancel(context.Background())
		run = &rollout{plan: plan, target: plan.Target(), cancel: cancel, done: make(chan struct{}),
			versions: map[string]int64{}, failed: map[string]error{}}
		rs.runs[key] = run
		opts := app.Spec.Migrations
		go func() {
			defer func() {
				close(run.done)
				select {
				case rs.Ended <- event.GenericEvent{Object: &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{
					Namespace: key.Namespace, Name: key.Name}}}:
				default:
				}
			}()
			run.run(ctx, rs, app.Namespace, dbs, tenants, max(int(opts.MaxConcurrent), 1), max(int(opts.Canary), 1),
				int(opts.MaxFailures))
		}()
	}
	return run.view()
}

// View returns what the rollout of an ExpenseApp has done, and whether one of plan has run. A rollout of
// another plan is not this release's: its view is empty.
func (rs *Rollouts) View(app types.NamespacedName, plan *tenantdb.Plan) (rolloutView, bool) {
	rs.mu.Lock()
	run := rs.runs[app]
	rs.mu.Unlock()
	if run == nil || run.plan != plan {
		return rolloutView{}, false
	}
	return run.view(), true
}

// Tenant returns what the rollout of app knows of a tenant: its schema version and, if its migration
// failed, why. known is false when no rollout has seen the tenant.
func (rs *Rollouts) Tenant(app types.NamespacedName, name string) (version int64, failure error, known bool) {
	rs.mu.Lock()
	run := rs.runs[app]
	rs.mu.Unlock()
	if run == nil {
		return 0, nil, false
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	version, known = run.versions[name]
	return version, run.failed[name], known
}

// Forget stops and drops the rollout of an ExpenseApp that is gone.
func (rs *Rollouts) Forget(app types.NamespacedName) {
	rs.mu.Lock()
	run := rs.runs[app]
	delete(rs.runs, app)
	rs.mu.Unlock()
	if run != nil {
		run.cancel()
		<-run.done
	}
}

func (r *rollout) failedToStart() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err != nil
}

func (r *rollout) view() rolloutView {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := rolloutView{halted: r.halted, err: r.err, versions: make(map[string]int64, len(r.versions))}
	select {
	case <-r.done:
	default:
		v.running = true
	}
	for n, ver := range r.versions {
		v.versions[n] = ver
	}
	for n := range r.failed {
		v.failed = append(v.failed, n)
	}
	sort.Strings(v.failed)
	return v
}

// Backoff of a schema whose migration met a transient error (the database restarting, say).
const (
	transientFirstDelay = 250 * time.Millisecond
	transientMaxDelay   = 5 * time.Second
)

func (r *rollout) run(ctx context.Context, rs *Rollouts, namespace string, dbs map[string]*tenantdb.DB, tenants []string,
	workers, canary, budget int) {
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "target", r.target)
	ours := make(map[string]bool, len(tenants))
	for _, n := range tenants {
		ours[n] = true
	}
	// Every shard's registry is read at once; a shard that is away holds the rollout until it is back.
	fleets := make(map[string][]tenantdb.FleetMember, len(dbs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for shard, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fleet, err := readFleet(ctx, db, namespace)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.mu.Lock()
				r.err = fmt.Errorf("shard %s: %w", shard, err)
				r.mu.Unlock()
			}
			for i := range fleet {
				fleet[i].Shard = shard
			}
			fleets[shard] = fleet
		}()
	}
	wg.Wait()
	if r.failedToStart() || ctx.Err() != nil {
		return
	}
	var behind []tenantdb.FleetMember
	r.mu.Lock()
	for _, fleet := range fleets {
		for _, m := range fleet {
			if !ours[m.Name] {
				continue // a tenant of another ExpenseApp on the same database
			}
			r.versions[m.Name] = m.Version
			if m.Version < r.target {
				behind = append(behind, m)
			}
		}
	}
	r.mu.Unlock()
	sort.Slice(behind, func(i, j int) bool { return behind[i].Name < behind[j].Name })
	start := time.Now()
	log.Info("fleet migration starting", "behind", len(behind), "shards", len(dbs))

	// The canary tenants alone, one after the other; then the rest, on every worker of each shard.
	n := min(canary, len(behind))
	for _, m := range behind[:n] {
		if !r.migrate(ctx, dbs[m.Shard], m, budget) {
			break
		}
	}
	queues := make(map[string]chan tenantdb.FleetMember, len(dbs))
	for shard, db := range dbs {
		queue := make(chan tenantdb.FleetMember)
		queues[shard] = queue
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range queue {
					r.migrate(ctx, db, m, budget)
				}
			}()
		}
	}
	for _, m := range behind[n:] {
		if r.stopped(ctx) {
			break
		}
		queues[m.Shard] <- m
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	r.tell(ctx, rs, namespace)
	v := r.view()
	log.Info("fleet migration ended", "migrated", len(behind)-len(v.failed), "failed", len(v.failed),
		"halted", v.halted, "seconds", time.Since(start).Seconds())
}

// readFleet reads a shard's registry, retrying while the database is away.
func readFleet(ctx context.Context, db *tenantdb.DB, namespace string) ([]tenantdb.FleetMember, error) {
	for delay := transientFirstDelay; ; delay = min(2*delay, transientMaxDelay) {
		fleet, err := db.Fleet(ctx, namespace)
		if err == nil || !tenantdb.IsTransient(err) || ctx.Err() != nil {
			return fleet, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// stopped reports whether the rollout must schedule no more tenants: cancelled, or halted.
func (r *rollout) stopped(ctx context.Context) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ctx.Err() != nil || r.halted || r.err != nil
}

// migrate brings one schema to the target, retrying transient errors, and reports whether the rollout
// may go on (false once it halted).
func (r *rollout) migrate(ctx context.Context, db *tenantdb.DB, m tenantdb.FleetMember, budget int) bool {
	if r.stopped(ctx) {
		return false
	}
	from := m.Version
	var err error
	for delay := transientFirstDelay; ; delay = min(2*delay, transientMaxDelay) {
		began := time.Now()
		var version int64
		var session *tenantdb.TenantSession
		if session, err = db.Session(ctx, m.Identity); err == nil {
			version, err = session.ApplyPlan(ctx, from, r.plan.From(from))
		}
		migrationSeconds.Observe(time.Since(began).Seconds())
		var moved *tenantdb.VersionMovedError
		switch {
		case err == nil:
			from = version
		case errors.As(err, &moved):
			// Someone else (an earlier leader, a Tenant's own reconcile) migrated it meanwhile.
			now, ok, lerr := db.Lookup(ctx, m.Namespace, m.Name)
			if lerr == nil && ok && now.Version != from {
				now.Shard = m.Shard
				m, from = now, now.Version
				if from >= r.target {
					err = nil
					break
				}
				continue
			}
			if lerr == nil && ok && delay < transientMaxDelay {
				// The registry has not caught up yet (a Tenant's own reconcile migrated the schema and
				// records its version at its next step): look again, a little later.
				select {
				case <-ctx.Done():
					return false
				case <-time.After(delay):
				}
				continue
			}
			if lerr == nil && ok {
				// It never does: the schema's own version table disagrees with its registry row (a row
				// written into it by hand, or by the tenant). A failure of this tenant, never a loop.
				err = fmt.Errorf("schema %s's version table does not say version %d, as its registry row does: "+
					"it was changed by hand (the Tenant's status says what to do)",
					m.Schema, from)
			}
		case tenantdb.IsTransient(err) && ctx.Err() == nil:
			select {
			case <-ctx.Done():
				return false
			case <-time.After(delay):
			}
			continue
		}
		break
	}
	r.mu.Lock()
	halt := false
	if tenantdb.IsClosed(err) && ctx.Err() == nil {
		// The database's connections were replaced (a changed connection string): no fault of the
		// migration. The rollout stops, and the next reconcile starts it again on the new ones.
		r.err = fmt.Errorf("the database connections were replaced during the rollout: %w", err)
		r.mu.Unlock()
		return false
	}
	if err == nil || from >= r.target {
		r.versions[m.Name] = from
		delete(r.failed, m.Name)
	} else if ctx.Err() == nil {
		migrationFailures.Inc()
		r.failed[m.Name] = err
		halt = len(r.failed) > budget
		r.halted = r.halted || halt
	}
	r.mu.Unlock()
	return !halt && ctx.Err() == nil
}

// tell lets every Tenant the rollout touched reflect it. It runs once the rollout ended: status patches
// during it would take the API server's CPU from the migration, which is what the release waits for.
func (r *rollout) tell(ctx context.Context, rs *Rollouts, namespace string) {
	r.mu.Lock()
	names := make([]string, 0, len(r.versions))
	for n, v := range r.versions {
		if v >= r.target || r.failed[n] != nil {
			names = append(names, n)
		}
	}
	for n := range r.failed {
		if _, ok := r.versions[n]; !ok {
			names = append(names, n)
		}
	}
	r.mu.Unlock()
	for _, n := range names {
		select {
		case rs.Changed <- event.GenericEvent{Object: &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: n}}}:
		case <-ctx.Done():
			return
		}
	}
}

// fleetStatus counts an ExpenseApp's tenants at the target, from the Tenants' status and what its
// rollout has done since, and names the failed ones.
func fleetStatus(tenants []tenantryv1.Tenant, view rolloutView, target int64) (atTarget int, failed []string) {
	failedSet := map[string]bool{}
	for _, n := range view.failed {
		failedSet[n] = true
	}
	for _, t := range tenants {
		v := max(t.Status.SchemaVersion, view.versions[t.Name])
		switch {
		case v >= target:
			atTarget++
		case failedSet[t.Name] || migrationFailed(&t) && view.versions[t.Name] == 0:
			failed = append(failed, t.Name)
		}
	}
	sort.Strings(failed)
	return atTarget, failed
}

// haltMessage says why a rollout halted and what to do.
func haltMessage(app *tenantryv1.ExpenseApp, target int64, failed []string) string {
	names := firstNames(failed, 5)
	return fmt.Sprintf("Migration to schema version %d halted: %d tenant(s) failed (%s), more than the budget of %d "+
		"(spec.migrations.maxFailures). Each failed Tenant's MigrationsApplied condition has the error; fix the migration and "+
		"the rollout resumes", target, len(failed), strings.Join(names, ", "), app.Spec.Migrations.MaxFailures)
}
