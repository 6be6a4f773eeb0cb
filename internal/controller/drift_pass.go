package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
)

// DriftPasses compare each ExpenseApp's fleet with the release, every DriftInterval, from the database:
// a goroutine per app reads each shard's registry, then, on maxConcurrent connections per shard, each
// Ready tenant's catalog digest, a hundred schemas a statement (tenantdb.DB.ShapeDigests: a fraction of a
// full read). A schema whose digest is the one its status records (status.drift.fingerprint) has not
// changed, and neither has its comparison: nothing more is read, and nothing is written. Any other is
// read in full and compared, and its Tenant is handed the result (Take), which it records. So a pass
// over a fleet that did not change writes nothing to the API server, and the ExpenseApp records when
// its last pass began (status.drift.checkedAt): a restarted operator reads there that none is due.
//
// Like a rollout, a pass is a goroutine of the leader; one that goes takes its pass with it, and the
// next leader starts one when the last recorded is an interval old.
type DriftPasses struct {
	// Changed receives each Tenant whose comparison a pass changed, so that it records it.
	Changed chan event.GenericEvent
	// Ended receives each ExpenseApp whose pass ended, so that it records it.
	Ended chan event.GenericEvent

	mu   sync.Mutex
	runs map[types.NamespacedName]*driftPass
}

// NewDriftPasses returns DriftPasses with channels for the Tenant and ExpenseApp controllers.
func NewDriftPasses() *DriftPasses {
	return &DriftPasses{Changed: make(chan event.GenericEvent, 4096), Ended: make(chan event.GenericEvent, 64),
		runs: map[types.NamespacedName]*driftPass{}}
}

// driftPass is one pass over one ExpenseApp's fleet.
type driftPass struct {
	started   time.Time
	requested string // the check-drift annotation's value it was started for
	cancel    context.CancelFunc
	done      chan struct{}

	mu      sync.Mutex
	ended   time.Time
	checked int                     // tenants compared
	read    int                     // of those, read in full (their digest had changed)
	failed  int                     // tenants that could not be read
	found   map[string]driftFinding // tenant → a comparison its status does not hold yet
	err     error                   // a shard could not be compared
}

// driftFinding is one tenant's comparison with the release.
type driftFinding struct {
	version     int64
	diffs       []tenantdb.Difference
	fingerprint string
	at          time.Time
	err         error // the schema could not be read
}

// driftView is what an ExpenseApp reconcile reads of its last pass.
type driftView struct {
	started, ended        time.Time
	requested             string
	running               bool
	checked, read, failed int
	err                   error
}

// View returns what the app's last pass did; a zero view when none ran in this process.
func (dp *DriftPasses) View(app types.NamespacedName) driftView {
	dp.mu.Lock()
	p := dp.runs[app]
	dp.mu.Unlock()
	if p == nil {
		return driftView{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return driftView{started: p.started, ended: p.ended, requested: p.requested, running: p.ended.IsZero(), checked: p.checked, read: p.read,
		failed: p.failed, err: p.err}
}

// Take returns, once, a comparison of the tenant that its app's last pass made and its status does
// not hold yet.
func (dp *DriftPasses) Take(app types.NamespacedName, tenant string) (driftFinding, bool) {
	dp.mu.Lock()
	p := dp.runs[app]
	dp.mu.Unlock()
	if p == nil {
		return driftFinding{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.found[tenant]
	delete(p.found, tenant)
	return f, ok
}

// Forget stops and drops the pass of an ExpenseApp that is gone.
func (dp *DriftPasses) Forget(app types.NamespacedName) {
	dp.mu.Lock()
	p := dp.runs[app]
	delete(dp.runs, app)
	dp.mu.Unlock()
	if p != nil {
		p.cancel()
		<-p.done
	}
}

// Start begins a pass over the app's tenants (members, by name) on its shards' databases, unless one
// runs. workers tenant sessions compare at once on each shard; requested is the check-drift
// annotation's value it answers, if any.
func (dp *DriftPasses) Start(app types.NamespacedName, dbs map[string]*tenantdb.DB, members map[string]string,
	fsys fs.FS, release string, target int64, workers int, requested string) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if p := dp.runs[app]; p != nil {
		p.mu.Lock()
		running := p.ended.IsZero()
		p.mu.Unlock()
		if running {
			return
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &driftPass{started: time.Now(), requested: requested, cancel: cancel, done: make(chan struct{}),
		found: map[string]driftFinding{}}
	dp.runs[app] = p
	go func() {
		defer close(p.done)
		p.run(ctx, dp, app, dbs, members, fsys, release, target, max(workers, 1))
		p.mu.Lock()
		p.ended = time.Now()
		p.mu.Unlock()
		select {
		case dp.Ended <- event.GenericEvent{Object: &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{
			Namespace: app.Namespace, Name: app.Name}}}:
		case <-ctx.Done():
		}
	}()
}

func (p *driftPass) run(ctx context.Context, dp *DriftPasses, app types.NamespacedName, dbs map[string]*tenantdb.DB,
	members map[string]string, fsys fs.FS, release string, target int64, workers int) {
	log := logf.FromContext(ctx).WithValues("namespace", app.Namespace, "app", app.Name)
	var wg sync.WaitGroup
	for shard, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.compareShard(ctx, dp, app, db, members, fsys, release, target, workers); err != nil {
				log.Info("a drift pass could not compare a shard; it is tried again at the next pass", "shard", shard, "error", err.Error())
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	log.Info("drift pass done", "compared", p.checked, "readInFull", p.read, "failed", p.failed, "seconds", time.Since(p.started).Seconds())
}

// compareShard compares the app's tenants that one shard holds, as its registry lists them.
func (p *driftPass) compareShard(ctx context.Context, dp *DriftPasses, app types.NamespacedName, db *tenantdb.DB,
	members map[string]string, fsys fs.FS, release string, target int64, workers int) error {
	fleet, err := db.Fleet(ctx, app.Namespace)
	if err != nil {
		return err
	}
	want, err := db.ReleaseShape(ctx, fsys, release)
	if err != nil {
		// Nothing on this shard can be compared: each tenant says so, rather than keep a comparison
		// that may no longer hold.
		for _, m := range fleet {
			if _, ok := members[m.Name]; ok && m.Version == target {
				p.hand(ctx, dp, app, m, driftFinding{version: m.Version, at: time.Now(),
					err: fmt.Errorf("the release's shape could not be read: %w", err)})
			}
		}
		return err
	}
	// Tenants compared before (a fingerprint in their status) are batched: their digests are read a
	// batch a statement. The others are read in full anyway, each on its own session.
	var known, unknown []tenantdb.FleetMember
	for _, m := range fleet {
		last, ok := members[m.Name]
		switch {
		case !ok || m.Version != target:
			// another app's tenant, or one that moves, is not Ready or follows a rollout
		case last == "":
			unknown = append(unknown, m)
		default:
			known = append(known, m)
		}
	}
	work := make(chan []tenantdb.FleetMember)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for batch := range work {
				if members[batch[0].Name] == "" {
					p.compare(ctx, dp, app, db, batch[0], "", want, release, "")
					continue
				}
				p.compareBatch(ctx, dp, app, db, batch, members, want, release)
			}
		}()
	}
	send := func(batch []tenantdb.FleetMember) bool {
		select {
		case work <- batch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Batches small enough that every worker has some, and at most digestBatch.
	size := min(digestBatch, max(10, (len(known)+workers-1)/max(workers, 1)))
	for len(known) > 0 && send(known[:min(size, len(known))]) {
		known = known[min(size, len(known)):]
	}
	for i := range unknown {
		if !send(unknown[i : i+1]) {
			break
		}
	}
	close(work)
	wg.Wait()
	return ctx.Err()
}

// digestBatch is how many schemas' digests one statement reads at most (tenantdb.DB.ShapeDigests): a
// hundred take about a fifth of a second, and spare 400 round trips of a session each.
const digestBatch = 100

// compareBatch compares a batch of tenants compared before: their digests in one statement, and on its
// own session each tenant whose digest changed, or could not be read with the others (a batch fails
// whole when a schema goes meanwhile, or its digest takes too long: it is logged, and every tenant of
// it read on its own).
func (p *driftPass) compareBatch(ctx context.Context, dp *DriftPasses, app types.NamespacedName, db *tenantdb.DB,
	batch []tenantdb.FleetMember, members map[string]string, want tenantdb.Shape, release string) {
	schemas := make([]string, len(batch))
	for i, m := range batch {
		schemas[i] = m.Schema
	}
	digests, err := db.ShapeDigests(ctx, schemas)
	if err != nil && ctx.Err() == nil {
		logf.FromContext(ctx).Info("a batch of drift digests could not be read; its tenants are read one by one",
			"namespace", app.Namespace, "app", app.Name, "tenants", len(batch), "error", err.Error())
	}
	for _, m := range batch {
		if ctx.Err() != nil {
			return
		}
		digest := digests[m.Schema] // "" when unknown: compare reads it on the session
		if digest != "" && members[m.Name] == fingerprint(release, digest) {
			p.mu.Lock()
			p.checked++
			p.mu.Unlock()
			continue
		}
		p.compare(ctx, dp, app, db, m, members[m.Name], want, release, digest)
	}
}

// compare compares one tenant on its session: its digest first (unless a batch read it: digest), and in
// full only when that changed. A schema that
// cannot be read is handed over as such: its Tenant says so, rather than keep a comparison that may no
// longer hold (a session of the tenant's holding a lock on its tables must not hide what it planted).
func (p *driftPass) compare(ctx context.Context, dp *DriftPasses, app types.NamespacedName, db *tenantdb.DB,
	m tenantdb.FleetMember, lastFingerprint string, want tenantdb.Shape, release string, digest string) {
	session, err := db.Session(ctx, m.Identity)
	if err == nil && digest == "" && lastFingerprint != "" { // a full read follows anyway without one to compare with
		digest, err = session.ShapeDigest(ctx)
	}
	if err == nil && digest != "" && lastFingerprint == fingerprint(release, digest) {
		p.mu.Lock()
		p.checked++
		p.mu.Unlock()
		return
	}
	var got tenantdb.Shape
	if err == nil {
		got, err = session.Shape(ctx)
	}
	if ctx.Err() != nil {
		return // the pass was stopped, not the tenant's read
	}
	f := driftFinding{version: m.Version, at: time.Now(), err: err}
	if err == nil {
		f.diffs, f.fingerprint = tenantdb.Compare(want, got), fingerprint(release, got.Digest)
	}
	p.hand(ctx, dp, app, m, f)
}

// hand counts a tenant's comparison, or its failure, and hands it to the Tenant.
func (p *driftPass) hand(ctx context.Context, dp *DriftPasses, app types.NamespacedName, m tenantdb.FleetMember, f driftFinding) {
	p.mu.Lock()
	if f.err != nil {
		p.failed++
	} else {
		p.checked++
		p.read++
	}
	p.found[m.Name] = f
	p.mu.Unlock()
	select {
	case dp.Changed <- event.GenericEvent{Object: &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: m.Name}}}:
	case <-ctx.Done():
	}
}

// fingerprint names a comparison's inputs: the release's migrations and the digest of the schema's
// catalog. "" when the digest cannot tell (the schema is then read in full every pass).
func fingerprint(release, digest string) string {
	if digest == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(release + "\x00" + digest))
	return hex.EncodeToString(sum[:12])
}

// driftMembers are the tenants an app's pass compares (Ready, at the release's version, not moving),
// each with the fingerprint its status holds of its last comparison ("" if none at that version).
func driftMembers(tenants []tenantryv1.Tenant, target int64) map[string]string {
	members := make(map[string]string, len(tenants))
	for i := range tenants {
		t := &tenants[i]
		if !meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) || t.Status.SchemaVersion != target ||
			meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil {
			continue
		}
		members[t.Name] = ""
		if d := t.Status.Drift; d != nil && d.SchemaVersion == target {
			members[t.Name] = d.Fingerprint
		}
	}
	return members
}

// stableJitter is a duration up to d that is the same for a UID every time: it spreads the passes of
// many apps over time without moving any app's pass at each restart.
func stableJitter(uid types.UID, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(uid))
	return time.Duration(h.Sum64() % uint64(d))
}
