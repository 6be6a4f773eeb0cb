package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/postgres"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// appBench measures the app's throughput and latency with 1 tenant and with n tenants (a random host
// per request), directly and through PgBouncer in transaction mode, in one run on one database.
func appBench(ctx context.Context, n int) error {
	pg, err := pgcluster.StartThrowaway()
	if err != nil {
		return err
	}
	defer pg.Close()
	env, err := apptest.NewEnv(ctx, pg)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Fprintf(os.Stderr, "bench: provisioning %d tenants\n", n)
	targets, err := seedTenants(ctx, env, n)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tenantry-appbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "app")
	build := exec.Command("go", "build", "-o", bin, "./cmd/app")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the app: %w", err)
	}
	const window = 5 * time.Second
	shards := 4 // the app's default; BENCH_APP_SHARDS=1 measures one plain pool
	if v, err := strconv.Atoi(os.Getenv("BENCH_APP_SHARDS")); err == nil && v > 0 {
		shards = v
	}
	// PgBouncer as docs/reference.md configures it: an alias of the database per pool shard, each a server
	// pool of its own (--pool-shard-databases), the same 20 server connections in all.
	viaBouncer, _ := url.Parse(env.AppURL)
	bouncer, err := pgcluster.BouncerConfig{BackendPort: pg.Port, Users: map[string]string{env.AppRole: ""}, PoolSize: 20,
		PoolShards: map[string]int{strings.TrimPrefix(viaBouncer.Path, "/"): shards}}.Start()
	if err != nil {
		return err
	}
	defer bouncer.Stop()
	viaBouncer.Host = fmt.Sprintf("127.0.0.1:%d", bouncer.Port)
	fmt.Printf("## App load (%s, 16 closed-loop clients for the peak, then an open loop at half that rate; %s per run)\n\n",
		time.Now().UTC().Format("2006-01-02"), window)
	fmt.Println("| database path | tenants | operation | peak req/s | p50 | p99 | at half peak: req/s | p50 | p99 | errors |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	// peak[path][op] is the peak req/s with 1 tenant and with all of them.
	peaks := map[string]map[string][2]float64{}
	for i, path := range []struct {
		name, url string
		extra     []string
	}{{fmt.Sprintf("direct, %d pool shard(s)", shards), env.AppURL, nil},
		{fmt.Sprintf("PgBouncer (transaction), %d pool shard(s), an alias each", shards), viaBouncer.String(), []string{"--pool-shard-databases"}}} {
		stop, base, err := startApp(bin, path.url, env.AppURL, env.Channel, shards, path.extra...)
		if err != nil {
			return err
		}
		c := newLoadClient(base)
		// Reads before writes, and a single tenant of its own per path, so that rows written by one run
		// do not make a later run's dashboard heavier.
		for _, op := range []struct {
			name string
			fn   operation
		}{{"read: GET /api/v1/dashboard", c.dashboardRead}, {"write: POST /api/v1/expenses", c.expenseWrite}} {
			for k, pool := range [][]target{targets[i : i+1], targets} {
				// Warm up until PostgreSQL's backends have the tenants' catalog entries cached: a fresh
				// backend reads each relation's metadata once, and with many tenants that first touch,
				// not the steady state, would be what a short run measures.
				c.closedLoop(ctx, op.fn, pool, warmup(len(pool)))
				peak := c.closedLoop(ctx, op.fn, pool, window)
				half := c.openLoop(ctx, op.fn, pool, peak.rps/2, window)
				fmt.Printf("| %s | %d | %s | %.0f | %s | %s | %.0f | %s | %s | %d |\n", path.name, len(pool), op.name, peak.rps,
					msf(peak.p50), msf(peak.p99), half.rps, msf(half.p50), msf(half.p99), peak.errors+half.errors)
				if peaks[path.name] == nil {
					peaks[path.name] = map[string][2]float64{}
				}
				p := peaks[path.name][op.name]
				p[k] = peak.rps
				peaks[path.name][op.name] = p
			}
		}
		stop()
	}
	ratio := func(path, op string) float64 {
		p := peaks[path][op]
		return p[1] / p[0]
	}
	direct := fmt.Sprintf("direct, %d pool shard(s)", shards)
	bounced := fmt.Sprintf("PgBouncer (transaction), %d pool shard(s), an alias each", shards)
	read, write := "read: GET /api/v1/dashboard", "write: POST /api/v1/expenses"
	fmt.Printf("\napp: %d tenants vs 1: read %.2fx, write %.2fx direct; read %.2fx, write %.2fx through PgBouncer\n", n,
		ratio(direct, read), ratio(direct, write), ratio(bounced, read), ratio(bounced, write))
	return nil
}

func msf(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// seedTenants provisions n tenants, each with three departments, an account, this month's budgets, 30
// expenses and an API token for its admin.
func seedTenants(ctx context.Context, env *apptest.Env, n int) ([]target, error) {
	db, err := postgres.Open(env.AppURL, postgres.Options{MaxConns: 8})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	reg := postgres.NewRegistry()
	targets := make([]target, n)
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				host := fmt.Sprintf("t%04d.bench.test", i)
				if _, err := env.Provision(ctx, apptest.Tenant{Name: fmt.Sprintf("t%04d", i), Hosts: []string{host}, Currency: "EUR"}); err != nil {
					errs <- err
					continue
				}
				targets[i] = target{host: host}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := reg.Sync(ctx, db.Pool()); err != nil {
		return nil, err
	}
	return targets, prepareTargets(ctx, db, reg, targets)
}

// prepareTargets gives each tenant (by its host) three departments, an account, this month's budgets,
// 30 expenses and an API token for its admin, through the app's own storage code.
func prepareTargets(ctx context.Context, db *postgres.DB, reg *postgres.Registry, targets []target) error {
	month := app.FirstOfMonth(time.Now())
	for i := range targets {
		t := reg.Lookup(targets[i].host)
		if t == nil {
			return fmt.Errorf("tenant %s is not in the registry", targets[i].host)
		}
		err := db.InTenant(ctx, t, func(tx *postgres.Tx) error {
			a, err := tx.CreateAccount(ctx, "Operating", 10_000_000)
			if err != nil {
				return err
			}
			for j, name := range []string{"Research", "Sales", "Operations"} {
				d, err := tx.CreateDepartment(ctx, name)
				if err != nil {
					return err
				}
				b, err := tx.CreateBudget(ctx, postgres.BudgetInput{DepartmentID: d.ID, AccountID: a.ID, Month: month, AmountMinor: 1_000_000})
				if err != nil {
					return err
				}
				if j == 0 {
					targets[i].budgetID = b.ID
				}
				admin := &app.User{ID: 1, Role: app.RoleAdmin}
				for k := range 10 {
					if _, err := tx.CreateExpense(ctx, admin, app.ExpenseInput{BudgetID: b.ID, SpentOn: month.AddDate(0, 0, k),
						Description: fmt.Sprintf("Seed %d", k), AmountMinor: int64(1000 + k)}); err != nil {
						return err
					}
				}
			}
			tok, err := tx.CreateAPIToken(ctx, 1, "bench")
			if err != nil {
				return err
			}
			targets[i].token = tok.Token
			return nil
		})
		if err != nil {
			return fmt.Errorf("seeding %s: %w", targets[i].host, err)
		}
	}
	return nil
}

// startApp runs the app binary on a free port, hearing of its tenants on channel, and waits until it is
// ready. Extra arguments go on its command line.
func startApp(bin, dbURL, listenURL, channel string, shards int, extra ...string) (stop func(), base string, err error) {
	_, stop, base, err = startAppProcess(bin, dbURL, listenURL, channel, shards, extra...)
	return stop, base, err
}

// startAppProcess is startApp, with the process, for its memory.
func startAppProcess(bin, dbURL, listenURL, channel string, shards int, extra ...string) (cmd *exec.Cmd, stop func(), base string, err error) {
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd = exec.Command(bin, append([]string{"--http-addr", addr, "--metrics-addr", "", "--database-url", dbURL,
		"--listen-database-url", listenURL, "--notify-channel", channel, "--max-conns", "16", "--pool-shards", strconv.Itoa(shards)}, extra...)...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := cmd.Start(); err != nil {
		return nil, nil, "", err
	}
	stop = func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	base = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return cmd, stop, base, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, "", fmt.Errorf("the app did not become ready at %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmup is how long to run before measuring: a second, plus 20 ms per tenant (20 s for 1,000), or
// $BENCH_APP_WARMUP.
func warmup(tenants int) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BENCH_APP_WARMUP")); err == nil {
		return d
	}
	return time.Second + time.Duration(tenants)*20*time.Millisecond
}
