package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// citusBench measures Tenantry on Citus (a coordinator and two workers on this machine) against plain
// PostgreSQL, each in a stack of its own (API server, database, operator): onboarding 100 tenants, the
// app's throughput with 1 and n tenants, a release's migration of the n tenants, then, on Citus, a
// rebalance onto a third worker while rebalanceWriters tenants are written to.
// citusResult is what one run of citusBench measured.
type citusResult struct {
	onboard100         time.Duration
	one, all           loadResult
	release, rebalance time.Duration
	addWorker          time.Duration // citus_add_node of the third worker (with a new node's setup)
	concurrent         int           // the release's maxConcurrent
	pause              time.Duration // the longest gap between acknowledged writes of a written tenant
	lost, moved        int
	written            int // writes acknowledged to the written tenants during the rebalance
	movedWritten       int // written tenants that moved
}

// rebalanceWriters is how many tenants are written to during the rebalance.
const rebalanceWriters = 12

func citusBench(ctx context.Context, n int) error {
	results := map[string]*citusResult{}
	for _, kind := range []string{"plain", "citus"} {
		r := &citusResult{}
		results[kind] = r
		if err := citusBenchRun(ctx, kind, n, r); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
	}
	p, c := results["plain"], results["citus"]
	fmt.Printf("## Citus (%s; a coordinator and two workers against one PostgreSQL server, all on this machine)\n\n",
		time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("| database | onboarding 100 tenants | app: 1 tenant req/s | p99 | app: %d tenants req/s | p99 | release of one migration to %d tenants (maxConcurrent %d) |\n", n, n, c.concurrent)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, row := range []struct {
		name string
		r    *citusResult
	}{{"PostgreSQL", p}, {"Citus", c}} {
		fmt.Printf("| %s | %.1f s | %.0f | %s | %.0f | %s | %.1f s |\n", row.name, row.r.onboard100.Seconds(), row.r.one.rps,
			msf(row.r.one.p99), row.r.all.rps, msf(row.r.all.p99), row.r.release.Seconds())
	}
	fmt.Printf("\n| adding a third worker | rebalance onto it | tenants | schemas moved | written tenants (moved) | longest write pause of a moved one | writes acknowledged | lost |\n")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %.1f s | %.1f s | %d | %d | %d (%d) | %.2f s | %d | %d |\n\n", c.addWorker.Seconds(), c.rebalance.Seconds(), n, c.moved, rebalanceWriters,
		c.movedWritten, c.pause.Seconds(), c.written, c.lost)
	fmt.Printf("citus: %d tenants, onboarding 100 %.1f s (plain %.1f s), app %.0f req/s (plain %.0f), release %.1f s (plain %.1f s), rebalance %.1f s, write-unavailable %.2f s, lost %d writes\n",
		n, c.onboard100.Seconds(), p.onboard100.Seconds(), c.all.rps, p.all.rps, c.release.Seconds(), p.release.Seconds(),
		c.rebalance.Seconds(), c.pause.Seconds(), c.lost)
	return nil
}

func citusBenchRun(ctx context.Context, kind string, n int, r *citusResult) error {
	dir, err := os.MkdirTemp("", "tenantry-citus-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := copyMigrations(dir); err != nil {
		return err
	}
	s, err := startStack(4, "--migrations-dir="+dir, "--usage-interval=0")
	if err != nil {
		return err
	}
	defer s.stop()
	ns := kind
	a := &shardedApp{s: s, ns: ns}
	var citus *pgcluster.Citus
	if kind == "citus" {
		if citus, err = pgcluster.StartCitus(ctx, 2); err != nil {
			return err
		}
		defer citus.Close()
		a.homeURL, a.homeDatabase = citus.URL(), pgcluster.CitusDatabase
		if err := s.newAppOn(ctx, ns, a.homeURL); err != nil {
			return err
		}
	} else {
		if a.homeURL, err = s.newApp(ctx, ns); err != nil {
			return err
		}
		cfg, err := pgx.ParseConfig(a.homeURL)
		if err != nil {
			return err
		}
		a.homeDatabase = cfg.Database
	}
	if err := a.waitLogin(ctx, ""); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: %s: onboarding 100 tenants, then %d\n", kind, n)
	if r.onboard100, err = s.onboardRange(ctx, ns, 0, 100); err != nil {
		return err
	}
	if n > 100 {
		if _, err := s.onboardRange(ctx, ns, 100, n); err != nil {
			return err
		}
	}
	targets, err := a.targets(ctx, n)
	if err != nil {
		return err
	}
	bin := filepath.Join(s.dir, "app")
	build := exec.Command("go", "build", "-o", bin, "./cmd/app")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the app: %w", err)
	}
	_, stop, base, err := a.start(bin)
	if err != nil {
		return err
	}
	defer stop()
	c := newLoadClient(base)
	for i, pool := range [][]target{targets[:1], targets} {
		c.closedLoop(ctx, c.dashboardRead, pool, warmup(len(pool)))
		res := c.closedLoop(ctx, c.dashboardRead, pool, 5*time.Second)
		if i == 0 {
			r.one = res
		} else {
			r.all = res
		}
	}

	// A release: one more migration, from the operator's restart until the ExpenseApp counts every
	// tenant at it, BENCH_CITUS_CONCURRENT schemas at once (4).
	if r.concurrent, err = s.setRolloutPool(ctx, ns, "BENCH_CITUS_CONCURRENT"); err != nil {
		return err
	}
	next := migrations.Latest + 1
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d_receipts.sql", next)), []byte(newMigration(1)), 0o644); err != nil {
		return err
	}
	s.stopOperator()
	start := time.Now()
	if err := s.startOperator(); err != nil {
		return err
	}
	for {
		app := &tenantryv1.ExpenseApp{}
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app); err != nil {
			return err
		}
		if app.Status.TargetSchemaVersion == next && app.Status.TenantsAtTarget == int32(n) {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("the release did not finish within 10 minutes: %s", app.Status.Migration)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.release = time.Since(start)
	if citus == nil {
		return nil
	}

	// The rebalance onto a third worker, with rebalanceWriters tenants written to back to back. Which
	// schemas Citus moves is its choice: the write-unavailable window is the longest pause of a written
	// tenant that moved (if none did, the first written one is moved afterwards, still written to).
	tdb, err := tenantdb.Open(citus.URL(), tenantdb.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer tdb.Close()
	before, err := tdb.SchemaNodes(ctx)
	if err != nil {
		return err
	}
	var writers []*apptest.Writer
	for _, t := range targets[:min(rebalanceWriters, len(targets))] {
		writers = append(writers, c.startWriter(t))
	}
	time.Sleep(time.Second)
	fmt.Fprintf(os.Stderr, "bench: citus: adding a third worker (Citus copies the metadata of %d schemas to it)\n", n)
	start = time.Now()
	added, err := citus.AddWorker(ctx)
	if err != nil {
		return err
	}
	r.addWorker = time.Since(start)
	conn, err := pgx.Connect(ctx, citus.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	fmt.Fprintf(os.Stderr, "bench: citus: rebalancing %d tenants onto a third worker\n", n)
	start = time.Now()
	if _, err := conn.Exec(ctx, "SELECT citus_rebalance_start()"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT citus_rebalance_wait()"); err != nil {
		return err
	}
	r.rebalance = time.Since(start)
	after, err := tdb.SchemaNodes(ctx)
	if err != nil {
		return err
	}
	schemaOf := func(i int) string { return registry.TenantName(a.homeDatabase, ns, fmt.Sprintf("t%05d", i)) }
	movedWritten := map[int]bool{}
	for i := range writers {
		if before[schemaOf(i)] != after[schemaOf(i)] {
			movedWritten[i] = true
		}
	}
	if len(movedWritten) == 0 {
		if _, err := conn.Exec(ctx, `SELECT citus_move_shard_placement(shardid, nodename, nodeport, '127.0.0.1', $1)
FROM citus_shards WHERE table_name::text = $2`, added.Port, schemaOf(0)+".expenses"); err != nil {
			return err
		}
		movedWritten[0] = true
	}
	time.Sleep(time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", added.Port)
	for _, node := range after {
		if node == addr {
			r.moved++
		}
	}
	for i, w := range writers {
		res := w.Stop()
		if movedWritten[i] {
			r.pause = max(r.pause, res.Pause)
		}
		var found int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schemaOf(i)}.Sanitize()+`.expenses WHERE description = ANY($1)`,
			res.Acked).Scan(&found); err != nil {
			return err
		}
		r.lost += len(res.Acked) - found
		r.written += len(res.Acked)
	}
	r.movedWritten = len(movedWritten)
	return nil
}
