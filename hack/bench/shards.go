package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// shardsBench measures an ExpenseApp over two PostgreSQL servers (home, and shard "east" on a second
// server): onboarding n tenants placed over both, the app's throughput with 1 and n tenants and its
// memory, against the same on one server; then a tenant with 100,000 expenses moved from home to east
// while it is written to and the other tenants are read: total move time, write pause, writes lost, and
// the other tenants' p99.
func shardsBench(ctx context.Context, n int) error {
	s, err := startStack(4, "--usage-interval=0")
	if err != nil {
		return err
	}
	defer s.stop()
	east, err := pgcluster.StartThrowaway()
	if err != nil {
		return fmt.Errorf("starting the second PostgreSQL server: %w", err)
	}
	defer east.Close()
	bin := filepath.Join(s.dir, "app")
	build := exec.Command("go", "build", "-o", bin, "./cmd/app")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the app: %w", err)
	}

	fmt.Printf("## Shards (%s, %d tenants; shard east on a second PostgreSQL server)\n\n", time.Now().UTC().Format("2006-01-02"), n)
	type setup struct {
		ns     string
		shards bool
	}
	apps := map[string]*shardedApp{}
	fmt.Println("| setup | tenants | onboarding (all Ready) | tenants/s | placement | app: 1 tenant req/s | p99 | app: all tenants req/s | p99 | app peak RSS |")
	fmt.Println("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
	setups := []setup{{"single", false}, {"sharded", true}}
	if os.Getenv("BENCH_SHARDS_BASELINE") == "off" { // the one-server baseline left out (10,000 tenants: half the time)
		setups = setups[1:]
	}
	for _, st := range setups {
		a, err := s.shardedApp(ctx, st.ns, st.shards, east)
		if err != nil {
			return err
		}
		apps[st.ns] = a
		took, err := s.onboardInto(ctx, st.ns, n)
		if err != nil {
			return err
		}
		placement, err := s.placement(ctx, st.ns)
		if err != nil {
			return err
		}
		targets, err := a.targets(ctx, n)
		if err != nil {
			return err
		}
		a.prepared = targets
		cmd, stop, base, err := a.start(bin)
		if err != nil {
			return err
		}
		c := newLoadClient(base)
		var one, all loadResult
		for i, pool := range [][]target{targets[:1], targets} {
			c.closedLoop(ctx, c.dashboardRead, pool, warmup(len(pool)))
			r := c.closedLoop(ctx, c.dashboardRead, pool, 5*time.Second)
			if i == 0 {
				one = r
			} else {
				all = r
			}
		}
		_, rss, err := procUsage(cmd.Process.Pid)
		stop()
		if err != nil {
			return err
		}
		name := "one server (home only)"
		if st.shards {
			name = "two servers (home + east)"
		}
		fmt.Printf("| %s | %d | %.1f s | %.0f | %s | %.0f | %s | %.0f | %s | %d MiB |\n", name, n, took.Seconds(),
			float64(n)/took.Seconds(), placement, one.rps, msf(one.p99), all.rps, msf(all.p99), rss>>20)
	}

	// The move: a tenant of the sharded app with 100,000 expenses, written to back to back through the
	// API while the others are read at a steady rate, moves from home to east.
	const expenses = 100000
	a := apps["sharded"]
	big := benchTenant("sharded", "big")
	big.Spec.Shard = tenantryv1.HomeShard
	rw, err := s.watchReady(ctx, "sharded")
	if err != nil {
		return err
	}
	if err := s.k8s.Create(ctx, big); err != nil {
		return err
	}
	if _, err := rw.wait(ctx, []string{"big"}, time.Minute); err != nil {
		return err
	}
	rw.stop()
	bigTarget, err := a.targets(ctx, 0, "big")
	if err != nil {
		return err
	}
	schema := pgx.Identifier{registry.TenantName(a.homeDatabase, "sharded", "big")}.Sanitize()
	home, err := pgx.Connect(ctx, a.homeURL)
	if err != nil {
		return err
	}
	defer home.Close(ctx)
	if _, err := home.Exec(ctx, `INSERT INTO `+schema+`.expenses (budget_id, spent_on, description, amount_minor, created_by)
SELECT $1, current_date, 'seed ' || g, 100, 1 FROM generate_series(1, $2) g`, bigTarget[0].budgetID, expenses-30); err != nil {
		return err
	}
	others := a.prepared[:min(n, 200)]
	_, stop, base, err := a.start(bin)
	if err != nil {
		return err
	}
	defer stop()
	c := newLoadClient(base)
	c.closedLoop(ctx, c.dashboardRead, others, warmup(len(others)))
	baseline := c.openLoop(ctx, c.dashboardRead, others, 100, 5*time.Second)

	loadCtx, endLoad := context.WithCancel(ctx)
	defer endLoad()
	var readers loadResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readers = c.openLoop(loadCtx, c.dashboardRead, others, 100, 10*time.Minute)
	}()
	w := c.startWriter(bigTarget[0])
	time.Sleep(time.Second)
	start := time.Now()
	t := &tenantryv1.Tenant{}
	if err := s.k8s.Get(ctx, types.NamespacedName{Namespace: "sharded", Name: "big"}, t); err != nil {
		return err
	}
	patch := client.MergeFrom(t.DeepCopy())
	t.Spec.Shard = "east"
	if err := s.k8s.Patch(ctx, t, patch); err != nil {
		return err
	}
	for {
		if err := s.k8s.Get(ctx, types.NamespacedName{Namespace: "sharded", Name: "big"}, t); err != nil {
			return err
		}
		if t.Status.Shard == "east" && meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) == nil {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("the move did not finish in 10 minutes: %+v", t.Status.Conditions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	total := time.Since(start)
	time.Sleep(time.Second)
	res := w.Stop()
	endLoad()
	wg.Wait()

	eastConn, err := pgx.Connect(ctx, a.eastURL)
	if err != nil {
		return err
	}
	defer eastConn.Close(ctx)
	var found int
	if err := eastConn.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.expenses WHERE description = ANY($1)`, res.Acked).Scan(&found); err != nil {
		return err
	}
	lost := len(res.Acked) - found
	var onEast int
	if err := eastConn.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.expenses`).Scan(&onEast); err != nil {
		return err
	}
	m, err := s.operatorMetrics()
	if err != nil {
		return err
	}
	cutover := m["tenantry_move_cutover_seconds_sum"]
	fmt.Printf("\n| moved | expenses on east after | writes acknowledged (from 1 s before the move to 1 s after) | lost | write-unavailable (longest gap between acknowledged writes) | operator's write fence | 503s | total move | others' p99 before / during |\n")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| home → east | %d | %d | %d | %.2f s | %.2f s | %d | %.1f s | %s / %s |\n\n", onEast, len(res.Acked), lost,
		res.Pause.Seconds(), cutover, res.Refusals, total.Seconds(), msf(baseline.p99), msf(readers.p99))
	fmt.Printf("shards: moved %d expenses under load, lost %d writes, write-unavailable %.2f s, total %.1f s\n",
		expenses, lost, res.Pause.Seconds(), total.Seconds())
	return nil
}

// shardedApp is an ExpenseApp of the benchmark, with its databases.
type shardedApp struct {
	s                              *stack
	ns                             string
	homeURL, eastURL               string
	homeDatabase                   string
	appURI, appShardsJSON, channel string
	prepared                       []target // the tenants given data and tokens for load
}

// shardedApp creates a namespace with an ExpenseApp on a fresh database, with shard "east" on the
// second server when shards is set, and waits for the app's login.
func (s *stack) shardedApp(ctx context.Context, ns string, shards bool, east *pgcluster.Throwaway) (*shardedApp, error) {
	a := &shardedApp{s: s, ns: ns}
	var err error
	if a.homeURL, err = s.newApp(ctx, ns); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(a.homeURL)
	if err != nil {
		return nil, err
	}
	a.homeDatabase = cfg.Database
	if shards {
		if a.eastURL, err = east.NewDatabase(ctx, ns+"_east"); err != nil {
			return nil, err
		}
		if err := manifests.DeclareDatabase(ctx, s.k8s, platformNamespace, ns+"-east", a.eastURL, ns); err != nil {
			return nil, err
		}
		app := &tenantryv1.ExpenseApp{}
		if err := s.k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "expenses"}, app); err != nil {
			return nil, err
		}
		patch := client.MergeFrom(app.DeepCopy())
		app.Spec.Shards = []tenantryv1.ShardSpec{{Name: "east", ClusterDatabase: ns + "-east"}}
		if err := s.k8s.Patch(ctx, app, patch); err != nil {
			return nil, err
		}
	}
	want := ""
	if shards {
		want = "east"
	}
	err = a.waitLogin(ctx, want)
	return a, err
}

// waitLogin waits for the app's login Secret (with the shard named, if any) and reads it.
func (a *shardedApp) waitLogin(ctx context.Context, shard string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		sec := &corev1.Secret{}
		err := a.s.k8s.Get(ctx, types.NamespacedName{Namespace: a.ns, Name: "expenses-app-db"}, sec)
		if err == nil && strings.Contains(string(sec.Data["shards"]), shard) {
			a.appURI, a.appShardsJSON, a.channel = string(sec.Data["uri"]), string(sec.Data["shards"]), string(sec.Data["notify-channel"])
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the app's login Secret did not appear in namespace %s", a.ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onboardInto applies n Tenants (t00000 on) to a namespace at once and returns the time until all are
// Ready.
func (s *stack) onboardInto(ctx context.Context, ns string, n int) (time.Duration, error) {
	return s.onboardRange(ctx, ns, 0, n)
}

// onboardRange applies Tenants t<from> to t<to-1> at once and returns the time until all are Ready.
func (s *stack) onboardRange(ctx context.Context, ns string, from, to int) (time.Duration, error) {
	n := to - from
	rw, err := s.watchReady(ctx, ns)
	if err != nil {
		return 0, err
	}
	defer rw.stop()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("t%05d", from+i)
	}
	start := time.Now()
	work := make(chan string)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				if err := s.k8s.Create(ctx, benchTenant(ns, name)); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if _, err := rw.wait(ctx, names, max(10*time.Minute, time.Duration(n)*250*time.Millisecond)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// placement says how many of a namespace's tenants each shard holds.
func (s *stack) placement(ctx context.Context, ns string) (string, error) {
	var list tenantryv1.TenantList
	if err := s.k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return "", err
	}
	count := map[string]int{}
	for _, t := range list.Items {
		count[t.Status.Shard]++
	}
	parts := []string{fmt.Sprintf("home %d", count["home"])}
	if count["east"] > 0 {
		parts = append(parts, fmt.Sprintf("east %d", count["east"]))
	}
	return strings.Join(parts, ", "), nil
}

// targets prepares the first n tenants (t00000...), or the ones named, for load: data and an API token
// each, written through the app's storage code over the app's own logins.
func (a *shardedApp) targets(ctx context.Context, n int, names ...string) ([]target, error) {
	for i := range n {
		names = append(names, fmt.Sprintf("t%05d", i))
	}
	opts := postgres.Options{MaxConns: 8}
	if err := json.Unmarshal([]byte(a.appShardsJSON), &opts.Shards); err != nil {
		return nil, err
	}
	db, err := postgres.Open(a.appURI, opts)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	reg := postgres.NewRegistry()
	if err := reg.Sync(ctx, db.Pool()); err != nil {
		return nil, err
	}
	for shard, uri := range opts.Shards {
		conn, err := pgx.Connect(ctx, uri)
		if err != nil {
			return nil, err
		}
		err = reg.SyncShard(ctx, shard, conn)
		conn.Close(ctx)
		if err != nil {
			return nil, err
		}
	}
	targets := make([]target, len(names))
	for i, name := range names {
		targets[i].host = name + "." + a.ns + ".example.com"
	}
	return targets, prepareTargets(ctx, db, reg, targets)
}

// start runs the app binary for this ExpenseApp, as its Deployment would.
func (a *shardedApp) start(bin string) (*exec.Cmd, func(), string, error) {
	var extra []string
	if a.appShardsJSON != "" && a.appShardsJSON != "{}" {
		extra = append(extra, "--shard-database-urls", a.appShardsJSON)
	}
	return startAppProcess(bin, a.appURI, a.appURI, a.channel, 4, extra...)
}

// startWriter writes expenses for a tenant back to back through the app, with its API token.
func (c *loadClient) startWriter(t target) *apptest.Writer {
	return apptest.StartWriter(c.client, c.base, t.host, t.budgetID, "w", func(r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+t.token)
	})
}
