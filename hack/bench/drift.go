package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
)

// plantedPerTenant is what driftPlants leaves in a tenant's schema that can run code: a function, the
// trigger that calls it, and a view. The hand-added column beside them is drift, not code.
const plantedPerTenant = 3

// driftPlants is what a compromised app login or a DBA's hot fix leaves in one tenant's schema.
const driftPlants = `
CREATE FUNCTION keep_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER keep_copy BEFORE INSERT ON expenses FOR EACH ROW EXECUTE FUNCTION keep_copy();
CREATE VIEW all_users AS SELECT email, password_hash FROM users;
ALTER TABLE departments ADD COLUMN cost_centre text;`

// drift onboards n tenants (each compares itself once, a moment after it is Ready), plants code and a
// hand-made column in one tenant of every hundred, then restarts the operator with --drift-interval=1s:
// the ExpenseApp's pass over its fleet is due at once. It measures the pass, from the operator's start
// until the ExpenseApp records it and every planted tenant records what it found, and checks what was
// found: nothing in the untouched tenants (a false positive otherwise), each planted object in the
// others. Then the operator restarts once more over the compared fleet and must send no SQL.
func drift(ctx context.Context, n int) error {
	s, err := startStack(concurrency, "--usage-interval=0", "--drift-interval=1h")
	if err != nil {
		return err
	}
	defer s.stop()
	ns := fmt.Sprintf("drift-%d", n)
	fmt.Fprintf(os.Stderr, "bench: onboarding %d tenants\n", n)
	if _, err := s.onboardBulk(ctx, ns, n); err != nil {
		return err
	}
	if err := s.waitTenants(ctx, ns, n, "compared once", func(t *tenantryv1.Tenant) bool { return t.Status.Drift != nil }); err != nil {
		return err
	}
	planted, err := s.plantDrift(ctx, ns, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: planted in %d tenants; restarting the operator with --drift-interval=1s\n", len(planted))
	s.stopOperator()
	s.args = setArg(s.args, "--drift-interval", "1s") // the pass is due at once
	cpu0, busy0 := cpuByCommand()
	start := time.Now()
	if err := s.startOperator(); err != nil {
		return err
	}
	var app tenantryv1.ExpenseApp
	for {
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, &app); err == nil && app.Status.Drift != nil {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("no drift pass recorded 10 minutes after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	recorded := time.Since(start)
	pass := app.Status.Drift
	if err := s.waitTenants(ctx, ns, len(planted), "planted found", func(t *tenantryv1.Tenant) bool {
		return planted[t.Name] && t.Status.Drift != nil && t.Status.Drift.Planted > 0
	}); err != nil {
		return err
	}
	total := time.Since(start)
	cpu1, busy1 := cpuByCommand()
	cpu, rss, err := s.usage()
	if err != nil {
		return err
	}
	m, err := s.operatorMetrics()
	if err != nil {
		return err
	}
	statements := m["tenantry_database_statements_total"]

	var list tenantryv1.TenantList
	if err := s.k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	falsePositives, found, missed := 0, 0, 0
	for _, t := range list.Items {
		d := t.Status.Drift
		if !planted[t.Name] {
			if d.Differences != 0 {
				falsePositives++
				fmt.Fprintf(os.Stderr, "bench: false positive in %s: %v\n", t.Name, d.Details)
			}
			continue
		}
		found += int(d.Planted)
		if d.Planted != plantedPerTenant || d.Differences != plantedPerTenant+1 {
			missed++
			fmt.Fprintf(os.Stderr, "bench: %s: %d planted and %d differences found: %v\n", t.Name, d.Planted, d.Differences, d.Details)
		}
	}
	sample := min(n, 1000)
	floor, err := s.driftFloor(ctx, ns, sample)
	if err != nil {
		return err
	}

	// The compared fleet, restarted: nothing is due, so nothing is sent.
	s.stopOperator()
	s.args = setArg(s.args, "--drift-interval", "1h")
	time.Sleep(2 * time.Second)
	restartTime, _, restartSQL, err := s.restartOperator(n)
	if err != nil {
		return err
	}

	fmt.Printf("## Schema drift (operator --max-concurrent-reconciles=%d, %s)\n\n", concurrency, time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| tenants | pass | compared | read in full | start → pass recorded | start → planted recorded | operator CPU | operator peak RSS | SQL statements | false positives | planted objects found | restart afterwards: SQL |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.1f s | %d | %d | %.1f s | %.1f s | %.1f s | %d MiB | %.0f | %d | %d of %d | %.0f (in %.1f s) |\n\n",
		n, pass.Duration.Seconds(), pass.Compared, pass.ReadInFull, recorded.Seconds(), total.Seconds(), cpu.Seconds(), rss>>20,
		statements, falsePositives, found, len(planted)*plantedPerTenant, restartSQL, restartTime.Seconds())
	fmt.Printf("CPU from the restart until the planted were recorded, by process: %s.\n\n", cpuReport(cpu0, cpu1, busy1-busy0, total))
	fmt.Printf("Floor: the full catalog read (tenantry.schema_shape) of %d schemas, one after another in one psql session: %.1f s (%.2f ms a schema); the pass reads in full only what changed.\n\n",
		sample, floor.Seconds(), float64(floor.Microseconds())/1000/float64(sample))
	if missed > 0 {
		fmt.Printf("%d planted tenant(s) were not described as planted (see above)\n\n", missed)
	}
	fmt.Printf("drift: %d tenants checked in %.1f s, %d false positives, %d planted objects found of %d\n",
		n, total.Seconds(), falsePositives, found, len(planted)*plantedPerTenant)
	return nil
}

// waitTenants waits until n Tenants of a namespace satisfy ok.
func (s *stack) waitTenants(ctx context.Context, ns string, n int, what string, ok func(*tenantryv1.Tenant) bool) error {
	start := time.Now()
	for {
		var list tenantryv1.TenantList
		if err := s.k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		done := 0
		for i := range list.Items {
			if ok(&list.Items[i]) {
				done++
			}
		}
		if done >= n {
			return nil
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("%d of %d tenants %s after 10 minutes", done, n, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// driftFloor reads the whole catalog shape of each of the namespace's first n schemas (tenantry.schema_shape,
// what a comparison reads in full), one after another in one psql session. It returns the time: what
// the database needs, with nothing around it.
func (s *stack) driftFloor(ctx context.Context, ns string, n int) (time.Duration, error) {
	u, err := url.Parse(s.dbURLs[ns])
	if err != nil {
		return 0, err
	}
	database := strings.TrimPrefix(u.Path, "/")
	var script bytes.Buffer
	for i := range n {
		schema := pgx.Identifier{registry.TenantName(database, ns, fmt.Sprintf("t%05d", i))}.Sanitize()
		fmt.Fprintf(&script, "SELECT count(*) FROM tenantry.schema_shape('%s');\n", strings.ReplaceAll(schema, "'", "''"))
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-q", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", s.dbURLs[ns])
	cmd.Stdin = &script
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("psql: %w\n%s", err, out)
	}
	return time.Since(start), nil
}

// plantDrift plants driftPlants in one tenant of every hundred (at least one), as the tenant's role,
// and returns their names.
func (s *stack) plantDrift(ctx context.Context, ns string, n int) (map[string]bool, error) {
	conn, err := pgx.Connect(ctx, s.dbURLs[ns])
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	database := conn.Config().Database
	planted := map[string]bool{}
	for i := 0; i < n; i += 100 {
		name := fmt.Sprintf("t%05d", i)
		q := pgx.Identifier{registry.TenantName(database, ns, name)}.Sanitize()
		if _, err := conn.Exec(ctx, "BEGIN; SET LOCAL ROLE "+q+"; SET LOCAL search_path = "+q+";"+driftPlants+"; COMMIT"); err != nil {
			return nil, fmt.Errorf("planting in %s: %w", name, err)
		}
		planted[name] = true
	}
	return planted, nil
}

// setArg sets a --flag=value of a command line, replacing the flag's value if it is there.
func setArg(args []string, flag, value string) []string {
	out := make([]string, 0, len(args)+1)
	for _, a := range args {
		if !strings.HasPrefix(a, flag+"=") {
			out = append(out, a)
		}
	}
	return append(out, flag+"="+value)
}
