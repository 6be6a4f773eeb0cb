package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
)

// newMigration is the migration of the fleet benchmark: a nullable column and an index, as in the
// django-tenants figure the issue compares with. Release k (from 1) adds its own column.
func newMigration(k int) string {
	col := "receipt_url"
	if k > 1 {
		col = fmt.Sprintf("receipt_url_%d", k)
	}
	return fmt.Sprintf("-- +goose Up\nALTER TABLE expenses ADD COLUMN %s text;\nCREATE INDEX expenses_%s_idx ON expenses (%s);\n", col, col, col)
}

// fleet onboards n tenants, then restarts the operator with one more migration (a new release) and
// measures the release time: from the new operator's start until every schema is at the new version
// in the registry and the ExpenseApp counts them all there (which is when it rolls the image). Then how
// long the Tenants' statuses take to follow, what the rollout cost the API server and the database, and
// beside it, psql applying the same migration to as many schemas of the same shape in one session.
// BENCH_FLEET_RELEASES=k makes k such releases one after the other on the same fleet, each measured
// against its own floor: more than one figure from one (long) onboarding.
func fleet(ctx context.Context, n int) error {
	dir, err := os.MkdirTemp("", "tenantry-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := copyMigrations(dir); err != nil {
		return err
	}
	// Usage measurement is a separate, bounded cost (bench-restart and bench-onboard include it): it is
	// off here so that the first measurements of the last tenants onboarded do not fall in the release.
	s, err := startStack(concurrency, "--migrations-dir="+dir, "--usage-interval=0")
	if err != nil {
		return err
	}
	defer s.stop()
	ns := fmt.Sprintf("fleet-%d", n)
	fmt.Fprintf(os.Stderr, "bench: onboarding %d tenants\n", n)
	if _, err := s.onboardBulk(ctx, ns, n); err != nil {
		return err
	}
	floorURL, err := s.psqlFloorSchemas(ctx, n)
	if err != nil {
		return err
	}
	db, err := pgx.Connect(ctx, s.dbURLs[ns])
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	rw, err := s.watchReady(ctx, ns)
	if err != nil {
		return err
	}
	defer rw.stop()
	workers, err := s.setRolloutPool(ctx, ns, "BENCH_FLEET_CONCURRENT")
	if err != nil {
		return err
	}
	releases := 1
	if v, err := strconv.Atoi(os.Getenv("BENCH_FLEET_RELEASES")); err == nil && v > 0 {
		releases = v
	}
	var rows, summaries []string
	for k := 1; k <= releases; k++ {
		row, summary, err := s.release(ctx, db, rw, floorURL, dir, ns, n, k, workers)
		if err != nil {
			return err
		}
		rows, summaries = append(rows, row), append(summaries, summary)
	}
	fmt.Printf("## Fleet migration (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| tenants | release | psql, one session | ratio | statuses after the release | API requests per tenant | statements per schema | operator CPU | operator peak RSS |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Println(strings.Join(rows, "\n") + "\n")
	fmt.Println(strings.Join(summaries, "\n"))
	return nil
}

// release measures release k of the fleet benchmark: the psql floor of its migration, then the
// operator restarted with it. It returns the figures' table row and summary line.
func (s *stack) release(ctx context.Context, db *pgx.Conn, rw *readyWatcher, floorURL, dir, ns string, n, k, workers int) (row, summary string, err error) {
	if err := settle(ctx, db); err != nil {
		return "", "", err
	}
	floor, err := psqlMigrationFloor(ctx, floorURL, n, k)
	if err != nil {
		return "", "", err
	}
	next := migrations.Latest + int64(k)
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d_receipts.sql", next)), []byte(newMigration(k)), 0o644); err != nil {
		return "", "", err
	}
	rw.expectVersion(next)
	s.stopOperator()
	if err := settle(ctx, db); err != nil {
		return "", "", err
	}
	cpu0, busy0 := cpuByCommand()
	start := time.Now()
	if err := s.startOperator(); err != nil {
		return "", "", err
	}
	if out := os.Getenv("BENCH_PROFILE"); out != "" {
		go s.profile(fmt.Sprintf("%s.%d", out, k), 8)
	}
	// The ExpenseApp is read every 10 ms, the registry (a count over every tenant's row, some 1 ms of
	// the database's CPU) every 50 ms, so that the harness takes little of what it measures.
	var schemasDone, appDone time.Duration
	for poll := 0; schemasDone == 0 || appDone == 0; poll++ {
		if time.Since(start) > 5*time.Minute {
			return "", "", fmt.Errorf("the release did not finish within 5 minutes (schemas %s, app %s)", schemasDone, appDone)
		}
		if schemasDone == 0 && poll%5 == 0 {
			var migrated int
			if err := db.QueryRow(ctx, `SELECT count(*) FROM tenantry.tenants WHERE schema_version >= $1`, next).Scan(&migrated); err != nil {
				return "", "", err
			}
			if migrated == n {
				schemasDone = time.Since(start)
			}
		}
		if appDone == 0 {
			app := &tenantryv1.ExpenseApp{}
			if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app); err != nil {
				return "", "", err
			}
			if app.Status.TargetSchemaVersion == next && app.Status.TenantsAtTarget == int32(n) {
				appDone = time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	release := max(schemasDone, appDone)
	cpu1, busy1 := cpuByCommand()
	statusesAt, err := rw.waitVersion(ctx, n, 5*time.Minute)
	if err != nil {
		return "", "", err
	}
	statuses := max(0, statusesAt.Sub(start)-release)
	m, err := s.operatorMetrics()
	if err != nil {
		return "", "", err
	}
	cpu, rss, err := s.usage()
	if err != nil {
		return "", "", err
	}
	requests, appReconciles := 0.0, 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "rest_client_requests_total{") {
			requests += v
		}
		if strings.HasPrefix(k, `controller_runtime_reconcile_total{controller="expenseapp"`) {
			appReconciles += v
		}
	}
	statements := m["tenantry_database_statements_total"]
	fmt.Fprintf(os.Stderr, "bench: operator started at %s; schemas at the new version %.2f s, ExpenseApp counting them %.2f s after the start (maxConcurrent %d); %.0f reconciles of the ExpenseApp since\n",
		start.UTC().Format(time.RFC3339Nano), schemasDone.Seconds(), appDone.Seconds(), workers, appReconciles)
	fmt.Fprintf(os.Stderr, "bench: CPU during the release: %s\n", cpuReport(cpu0, cpu1, busy1-busy0, release))
	if log, err := os.ReadFile(filepath.Join(s.dir, "operator.log")); err == nil {
		lines := strings.Split(string(log), "\n")
		for _, line := range lines[s.logLines:] {
			if strings.Contains(line, "fleet migration") || strings.Contains(line, "Starting") || strings.Contains(line, "Reconcil") {
				fmt.Fprintln(os.Stderr, "bench: operator:", line)
			}
		}
		s.logLines = len(lines) - 1
	}
	row = fmt.Sprintf("| %d | %.2f s | %.2f s | %.2f× | %.2f s | %.1f | %.1f | %.1f s | %d MiB |", n, release.Seconds(), floor.Seconds(),
		release.Seconds()/floor.Seconds(), statuses.Seconds(), requests/float64(n), statements/float64(n), cpu.Seconds(), rss>>20)
	summary = fmt.Sprintf("fleet: %d tenants, release %.2f s, psql floor %.2f s, ratio %.2fx, statuses %.1f s", n, release.Seconds(),
		floor.Seconds(), release.Seconds()/floor.Seconds(), statuses.Seconds())
	fmt.Fprintln(os.Stderr, "bench:", summary)
	return row, summary, nil
}

func copyMigrations(dir string) error {
	return fs.WalkDir(migrations.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS(), path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, path), b, 0o644)
	})
}

// psqlFloorSchemas creates n schemas of the tenant shape with psql, in a database of their own, and
// returns its URL.
func (s *stack) psqlFloorSchemas(ctx context.Context, n int) (string, error) {
	url, err := s.pg.NewDatabase(ctx, fmt.Sprintf("fleet_floor_%d", n))
	if err != nil {
		return "", err
	}
	body, err := migrationSQL()
	if err != nil {
		return "", err
	}
	var setup bytes.Buffer
	for i := range n {
		schema := fmt.Sprintf("f%05d", i)
		fmt.Fprintf(&setup, "CREATE SCHEMA %s; SET search_path TO %s;\n%s\n", schema, schema, strings.Join(body, "\n"))
	}
	return url, psql(ctx, url, &setup)
}

// psqlMigrationFloor times one psql session applying release k's migration to each of the n schemas
// psqlFloorSchemas made, a transaction per schema.
func psqlMigrationFloor(ctx context.Context, url string, n, k int) (time.Duration, error) {
	up := strings.ReplaceAll(newMigration(k), "-- +goose Up\n", "")
	var script bytes.Buffer
	for i := range n {
		fmt.Fprintf(&script, "SET search_path TO f%05d;\nBEGIN;\n%sCOMMIT;\n", i, up)
	}
	start := time.Now()
	if err := psql(ctx, url, &script); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// settle writes out what earlier phases left dirty, PostgreSQL's buffers (a checkpoint) and the
// kernel's page cache (sync), so that a timed phase does not pay for the writes of the one before: the
// kernel writes dirty pages back 30 s after they were made, which is when the next phase runs.
func settle(ctx context.Context, superuser *pgx.Conn) error {
	if _, err := superuser.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	syscall.Sync()
	return nil
}

// cpuByCommand is the CPU time of every process on the machine so far, summed by command name (with
// that of their exited children, which the kernel adds to the parent), and the machine's busy time.
func cpuByCommand() (map[string]time.Duration, time.Duration) {
	byCmd := map[string]time.Duration{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, fields, err := procStat(e.Name())
		if err != nil {
			continue
		}
		if strings.HasPrefix(cmd, "kworker/") {
			cmd = "kworker" // a kernel worker's name changes with what it works on
		}
		byCmd[cmd] += cpuTicks(fields[11:15]) // utime, stime, cutime, cstime
	}
	var busy time.Duration
	if stat, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(stat), "\n")
		f := strings.Fields(line)[1:] // user nice system idle iowait irq softirq steal ...
		busy = cpuTicks(f[:3]) + cpuTicks(f[5:])
	}
	return byCmd, busy
}

// cpuReport is where the CPU went between two cpuByCommand readings, largest first.
func cpuReport(before, after map[string]time.Duration, busy, wall time.Duration) string {
	type use struct {
		cmd string
		d   time.Duration
	}
	var uses []use
	for cmd, d := range after {
		if d -= before[cmd]; d >= 50*time.Millisecond {
			uses = append(uses, use{cmd, d})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].d > uses[j].d })
	var parts []string
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.1f s", u.cmd, u.d.Seconds()))
	}
	return fmt.Sprintf("%s; the machine busy %.1f s of %.1f s on %d cores", strings.Join(parts, ", "), busy.Seconds(), wall.Seconds(), runtime.NumCPU())
}

func psql(ctx context.Context, url string, script *bytes.Buffer) error {
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url)
	cmd.Stdin = script
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql: %w\n%s", err, out)
	}
	return nil
}

// restart onboards n tenants, then restarts the operator and measures until it has re-confirmed every
// one (its reconcile count), with the SQL it sent and its peak memory.
func restart(ctx context.Context, n int) error {
	s, err := startStack(concurrency)
	if err != nil {
		return err
	}
	defer s.stop()
	ns := fmt.Sprintf("restart-%d", n)
	fmt.Fprintf(os.Stderr, "bench: onboarding %d tenants\n", n)
	if _, err := s.onboardBulk(ctx, ns, n); err != nil {
		return err
	}
	// A tenant's usage is first measured a minute after it is Ready: the restart is of a settled fleet,
	// not of one with that work still due (a new operator does it at once, thousands of statements).
	if err := s.waitUsageMeasured(ctx, ns, n); err != nil {
		return err
	}
	// Stop first and let the old operator's sessions end: a session reports its statistics as it
	// exits, and those transactions are not the new operator's.
	s.stopOperator()
	time.Sleep(2 * time.Second)
	commits0, err := s.commits(ctx, ns)
	if err != nil {
		return err
	}
	total, reconciled, statements, err := s.restartOperator(n)
	if err != nil {
		return err
	}
	_, rss, err := s.usage()
	if err != nil {
		return err
	}
	commits1, err := s.commits(ctx, ns)
	if err != nil {
		return err
	}
	fmt.Printf("## Operator restart (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| Ready tenants | restart to all re-confirmed | reconciles | SQL statements sent | transactions on the database | operator peak RSS |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.2f s | %.0f | %.0f | %d | %d MiB |\n\n", n, total.Seconds(), reconciled, statements, commits1-commits0, rss>>20)
	return nil
}

// restartOperator starts the (stopped) operator and waits until it has reconciled n Tenants and its
// queue is empty. It returns how long that took, the reconciles, and the SQL statements it sent.
func (s *stack) restartOperator(n int) (total time.Duration, reconciled, statements float64, err error) {
	start := time.Now()
	if err := s.startOperator(); err != nil {
		return 0, 0, 0, err
	}
	for {
		m, err := s.operatorMetrics()
		if err == nil {
			// A Ready tenant's reconcile ends with a requeue for its next usage measurement.
			reconciled = m[`controller_runtime_reconcile_total{controller="tenant",result="success"}`] +
				m[`controller_runtime_reconcile_total{controller="tenant",result="requeue_after"}`]
			statements = m["tenantry_database_statements_total"]
			if reconciled >= float64(n) && queueDepth(m, "tenant") == 0 {
				return time.Since(start), reconciled, statements, nil
			}
		}
		if time.Since(start) > 5*time.Minute {
			return 0, 0, 0, fmt.Errorf("%0.f of %d tenants re-confirmed after 5 minutes", reconciled, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUsageMeasured waits until every one of the namespace's n Tenants shows a usage measurement and a
// comparison with the release (the same reconcile makes both).
func (s *stack) waitUsageMeasured(ctx context.Context, ns string, n int) error {
	start := time.Now()
	for {
		var list tenantryv1.TenantList
		if err := s.k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		measured := 0
		for _, t := range list.Items {
			if t.Status.Usage != nil && t.Status.Drift != nil {
				measured++
			}
		}
		if measured >= n {
			fmt.Fprintf(os.Stderr, "bench: every tenant's usage measured %.0f s after the onboarding\n", time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("%d of %d tenants show a usage measurement after 10 minutes", measured, n)
		}
		time.Sleep(5 * time.Second)
	}
}

// commits is the number of committed transactions on the namespace's database (pg_stat_database).
func (s *stack) commits(ctx context.Context, ns string) (int64, error) {
	out, err := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", s.pg.URL("postgres"), "-c",
		"SELECT pg_stat_force_next_flush(); SELECT sum(xact_commit) FROM pg_stat_database WHERE datname LIKE '"+
			strings.ReplaceAll(ns, "-", "_")+"%'").Output()
	if err != nil {
		return 0, fmt.Errorf("reading pg_stat_database: %w", err)
	}
	lines := strings.Fields(string(out))
	return strconv.ParseInt(lines[len(lines)-1], 10, 64)
}

// operatorMetrics scrapes the operator's Prometheus endpoint into name{labels} → value.
func (s *stack) operatorMetrics() (map[string]float64, error) {
	res, err := http.Get("http://" + s.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(res.Body); err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := line[:i]
		if strings.HasPrefix(key, "tenantry_database_statements_total") {
			key = "tenantry_database_statements_total"
			v += m[key]
		}
		m[key] = v
	}
	return m, nil
}

// queueDepth is the depth of a controller's work queue.
func queueDepth(m map[string]float64, controller string) float64 {
	for k, v := range m {
		if strings.HasPrefix(k, "workqueue_depth{") && strings.Contains(k, `name="`+controller+`"`) {
			return v
		}
	}
	return -1
}

// profile saves a CPU profile of the operator (BENCH_PROFILE=file): where a benchmark's time goes.
func (s *stack) profile(out string, seconds int) {
	var res *http.Response
	var err error
	for range 100 { // the operator is starting
		if res, err = http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.pprofAddr, seconds)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: profile:", err)
		return
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	_ = os.WriteFile(out, buf.Bytes(), 0o644)
}

// setRolloutPool sets the ExpenseApp's spec.migrations.maxConcurrent to the number in the environment
// variable env, by default 4: as many connections as the database has cores to run them.
func (s *stack) setRolloutPool(ctx context.Context, ns, env string) (int, error) {
	workers := 4
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil && v > 0 {
		workers = v
	}
	app := &tenantryv1.ExpenseApp{}
	if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app); err != nil {
		return 0, err
	}
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Migrations.MaxConcurrent = int32(workers)
	return workers, s.k8s.Patch(ctx, app, patch)
}
