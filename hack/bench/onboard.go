package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/controller"
)

const concurrency = 8

func onboard(ctx context.Context, sizes []int) error {
	if len(sizes) == 0 {
		sizes = []int{1000}
	}
	s, err := startStack(concurrency)
	if err != nil {
		return err
	}
	defer s.stop()

	fmt.Printf("## Onboarding (operator --max-concurrent-reconciles=%d, %s)\n\n", concurrency, time.Now().UTC().Format("2006-01-02"))

	// One at a time: what a user running `kubectl apply` sees.
	const sequential = 50
	seq, err := s.onboardSequential(ctx, "seq", sequential)
	if err != nil {
		return err
	}
	fmt.Printf("Tenants applied one at a time (%d): apply→Ready p50 %s, p99 %s, max %s\n\n",
		sequential, ms(pct(seq, 50)), ms(pct(seq, 99)), ms(pct(seq, 100)))

	fmt.Println("| tenants | all Ready | apply→Ready p50 | p99 | operator CPU | operator peak RSS | psql floor (one session) | per schema | ratio | psql, a process per schema |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	type row struct {
		n            int
		total, floor time.Duration
		ready        []time.Duration
	}
	var rows []row
	for _, n := range sizes {
		cpu0, _, err := s.usage()
		if err != nil {
			return err
		}
		b, err := s.onboardBulk(ctx, fmt.Sprintf("bulk-%d", n), n)
		if err != nil {
			return err
		}
		cpu1, rss, err := s.usage()
		if err != nil {
			return err
		}
		floor, err := s.psqlFloor(ctx, n)
		if err != nil {
			return err
		}
		perProcess, err := s.psqlProcessFloor(ctx, n)
		if err != nil {
			return err
		}
		fmt.Printf("| %d | %.2f s | %s | %s | %.1f s | %d MiB | %.2f s | %.1f ms | %.2f× | %.2f s |\n", n, b.total.Seconds(),
			ms(pct(b.lat, 50)), ms(pct(b.lat, 99)), (cpu1 - cpu0).Seconds(), rss>>20, floor.Seconds(),
			float64(floor.Microseconds())/1000/float64(n), b.total.Seconds()/floor.Seconds(), perProcess.Seconds())
		rows = append(rows, row{n: n, total: b.total, floor: floor, ready: b.ready})
	}
	fmt.Println()
	// The summary: the run of 1,000 if there was one, else the largest.
	sum := rows[len(rows)-1]
	for _, r := range rows {
		if r.n == 1000 {
			sum = r
		}
	}
	for _, r := range rows {
		if r.n >= 2000 {
			first := 1000 / r.ready[999].Seconds()
			last := 1000 / (r.ready[r.n-1] - r.ready[r.n-1001]).Seconds()
			fmt.Printf("onboard: %d tenants at once, the first 1000 at %.1f tenants/s, the last 1000 at %.1f tenants/s (%.2f×)\n",
				r.n, first, last, last/first)
		}
	}
	fmt.Printf("onboard: %d tenants at once %.1f s, psql floor %.1f s, ratio %.2fx; one at a time p50 %.0f ms, p99 %.0f ms\n",
		sum.n, sum.total.Seconds(), sum.floor.Seconds(), sum.total.Seconds()/sum.floor.Seconds(),
		float64(pct(seq, 50).Microseconds())/1000, float64(pct(seq, 99).Microseconds())/1000)
	return nil
}

func benchTenant(ns, name string) *tenantryv1.Tenant {
	threshold := int64(50000)
	return &tenantryv1.Tenant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: tenantryv1.TenantSpec{
			AppRef:   tenantryv1.AppRef{Name: "expenses"},
			Hosts:    []string{name + "." + ns + ".example.com"},
			Settings: tenantryv1.Settings{Currency: "EUR", ApprovalThreshold: &threshold},
			Admin:    tenantryv1.Admin{Email: "admin@" + name + ".example.com"},
		},
	}
}

// readyWatcher records when each Tenant of a namespace is first seen Ready, and when its status first
// shows schema version atVersion (if set). It follows an informer, which lists and watches again by
// itself whenever its watch ends: a raw watch of thousands of busy objects is closed by the API server
// now and then, and a benchmark that waits on one waits forever.
type readyWatcher struct {
	mu        sync.Mutex
	ready     map[string]time.Time
	atVersion map[string]time.Time
	version   int64
	ch        chan struct{}
	stop      func()
}

func (s *stack) watchReady(ctx context.Context, ns string) (*readyWatcher, error) {
	rw := &readyWatcher{ready: map[string]time.Time{}, atVersion: map[string]time.Time{}, ch: make(chan struct{}, 1)}
	var err error
	rw.stop, err = s.watchTenants(ctx, ns, func(t *tenantryv1.Tenant) {
		now := time.Now()
		rw.mu.Lock()
		if _, seen := rw.ready[t.Name]; !seen && meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) &&
			t.Status.ObservedGeneration == t.Generation {
			rw.ready[t.Name] = now
		}
		if _, seen := rw.atVersion[t.Name]; !seen && rw.version > 0 && t.Status.SchemaVersion >= rw.version {
			rw.atVersion[t.Name] = now
		}
		rw.mu.Unlock()
		select {
		case rw.ch <- struct{}{}:
		default:
		}
	})
	return rw, err
}

// watchTenants calls see with every Tenant of a namespace as it is added or changed, from an informer,
// until the function it returns is called.
func (s *stack) watchTenants(ctx context.Context, ns string, see func(*tenantryv1.Tenant)) (stop func(), err error) {
	c, err := cache.New(s.cfg, cache.Options{Scheme: controller.NewScheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return nil, err
	}
	inf, err := c.GetInformer(ctx, &tenantryv1.Tenant{})
	if err != nil {
		return nil, err
	}
	handle := func(obj any) {
		if t, ok := obj.(*tenantryv1.Tenant); ok {
			see(t)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: handle, UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = c.Start(cctx) }()
	if !c.WaitForCacheSync(cctx) {
		cancel()
		return nil, fmt.Errorf("the Tenant informer did not sync")
	}
	return cancel, nil
}

// expectVersion starts recording when each Tenant's status shows schema version v.
func (rw *readyWatcher) expectVersion(v int64) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rw.version, rw.atVersion = v, map[string]time.Time{}
}

// waitVersion blocks until n Tenants show the expected version, and returns when the last one did.
func (rw *readyWatcher) waitVersion(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		rw.mu.Lock()
		done := len(rw.atVersion)
		var last time.Time
		for _, at := range rw.atVersion {
			if at.After(last) {
				last = at
			}
		}
		rw.mu.Unlock()
		if done >= n {
			return last, nil
		}
		select {
		case <-rw.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return time.Time{}, fmt.Errorf("%d of %d tenants show schema version %d after %s", done, n, rw.version, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// wait blocks until every name is Ready and returns when each became so.
func (rw *readyWatcher) wait(ctx context.Context, names []string, timeout time.Duration) (map[string]time.Time, error) {
	deadline := time.After(timeout)
	for {
		rw.mu.Lock()
		done := 0
		for _, n := range names {
			if _, ok := rw.ready[n]; ok {
				done++
			}
		}
		rw.mu.Unlock()
		if done == len(names) {
			rw.mu.Lock()
			ready := maps.Clone(rw.ready)
			rw.mu.Unlock()
			return ready, nil
		}
		select {
		case <-rw.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return nil, fmt.Errorf("%d of %d tenants Ready after %s", done, len(names), timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *stack) onboardSequential(ctx context.Context, ns string, n int) ([]time.Duration, error) {
	if _, err := s.newApp(ctx, ns); err != nil {
		return nil, err
	}
	rw, err := s.watchReady(ctx, ns)
	if err != nil {
		return nil, err
	}
	defer rw.stop()
	var lat []time.Duration
	// Tenant -1 is a warm-up: it waits for the operator process to start and fill its caches.
	for i := -1; i < n; i++ {
		name := fmt.Sprintf("s%04d", i+1)
		start := time.Now()
		if err := s.k8s.Create(ctx, benchTenant(ns, name)); err != nil {
			return nil, err
		}
		ready, err := rw.wait(ctx, []string{name}, time.Minute)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			lat = append(lat, ready[name].Sub(start))
		}
	}
	return lat, nil
}

// bulk is what onboarding many tenants at once took.
type bulk struct {
	total time.Duration   // from the first apply until the last tenant was Ready
	lat   []time.Duration // each tenant's apply→Ready
	ready []time.Duration // when each tenant became Ready, after the first apply, in order
}

// onboardBulk applies n Tenants at once, 16 clients at a time, into a new namespace with its own app,
// and waits until every one is Ready.
func (s *stack) onboardBulk(ctx context.Context, ns string, n int) (bulk, error) {
	if _, err := s.newApp(ctx, ns); err != nil {
		return bulk{}, err
	}
	rw, err := s.watchReady(ctx, ns)
	if err != nil {
		return bulk{}, err
	}
	defer rw.stop()
	names := make([]string, n)
	applied := make([]time.Time, n)
	for i := range names {
		names[i] = fmt.Sprintf("t%05d", i)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 16 { // 16 clients applying at once, like a GitOps sync of a large folder
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				applied[i] = time.Now()
				if err := s.k8s.Create(ctx, benchTenant(ns, names[i])); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return bulk{}, err
	}
	ready, err := rw.wait(ctx, names, max(10*time.Minute, time.Duration(n)*250*time.Millisecond))
	if err != nil {
		return bulk{}, err
	}
	b := bulk{lat: make([]time.Duration, n), ready: make([]time.Duration, n)}
	for i, name := range names {
		b.lat[i] = ready[name].Sub(applied[i])
		b.ready[i] = ready[name].Sub(start)
	}
	slices.Sort(b.ready)
	b.total = b.ready[n-1]
	return b, nil
}

// psqlFloor runs, in one psql session, what provisioning a tenant takes in SQL (role, schema, every
// migration, as the tenant role) for n schemas one after another, a transaction per schema, and returns
// the time: what the database needs for the DDL, with nothing of the operator's around it.
func (s *stack) psqlFloor(ctx context.Context, n int) (time.Duration, error) {
	url, err := s.pg.NewDatabase(ctx, fmt.Sprintf("floor_%d", n))
	if err != nil {
		return 0, err
	}
	body, err := migrationSQL()
	if err != nil {
		return 0, err
	}
	var script bytes.Buffer
	for i := range n {
		schema := fmt.Sprintf("floor_%d_%05d", n, i)
		fmt.Fprintf(&script, "BEGIN;\nCREATE ROLE %s NOLOGIN;\nCREATE SCHEMA %s AUTHORIZATION %s;\nSET LOCAL ROLE %s;\n"+
			"SET LOCAL search_path TO %s;\n%s\nCOMMIT;\n", schema, schema, schema, schema, schema, strings.Join(body, "\n"))
	}
	start := time.Now()
	if err := psql(ctx, url, &script); err != nil {
		return 0, fmt.Errorf("psql floor: %w", err)
	}
	return time.Since(start), nil
}

// psqlProcessFloor is the floor measured before session 10: a psql process per schema, so a process
// start and a connection counted for every tenant (each migration in a transaction of its own).
func (s *stack) psqlProcessFloor(ctx context.Context, n int) (time.Duration, error) {
	url, err := s.pg.NewDatabase(ctx, fmt.Sprintf("pfloor_%d", n))
	if err != nil {
		return 0, err
	}
	body, err := migrationSQL()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range n {
		schema := fmt.Sprintf("pfloor_%d_%05d", n, i)
		var script bytes.Buffer
		fmt.Fprintf(&script, "CREATE ROLE %s NOLOGIN;\nCREATE SCHEMA %s AUTHORIZATION %s;\nSET ROLE %s;\nSET search_path TO %s;\n",
			schema, schema, schema, schema, schema)
		for _, m := range body {
			fmt.Fprintf(&script, "BEGIN;\n%s\nCOMMIT;\n", m)
		}
		if err := psql(ctx, url, &script); err != nil {
			return 0, fmt.Errorf("psql floor, a process per schema: %w", err)
		}
	}
	return time.Since(start), nil
}

// migrationSQL returns the Up part of every migration, goose annotations removed.
func migrationSQL() ([]string, error) {
	var out []string
	err := fs.WalkDir(migrations.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".sql") {
			return err
		}
		b, err := fs.ReadFile(migrations.FS(), path)
		if err != nil {
			return err
		}
		up, _, _ := strings.Cut(string(b), "-- +goose Down")
		var lines []string
		for _, l := range strings.Split(up, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "-- +goose") {
				lines = append(lines, l)
			}
		}
		out = append(out, strings.Join(lines, "\n"))
		return nil
	})
	return out, err
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
