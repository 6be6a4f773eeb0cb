package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
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

// drift onboards n tenants with drift comparison off, plants code and a hand-made column in one tenant
// of every hundred, then restarts the operator with comparison on (--drift-interval=1h): every tenant is
// due at once, a full pass. It measures the pass, from the operator's start until every Tenant's status
// shows its comparison, and checks what each found: nothing in the untouched tenants (a false positive
// otherwise), each planted object in the others. Then the operator restarts once more over the compared
// fleet and must send no SQL.
func drift(ctx context.Context, n int) error {
	s, err := startStack(concurrency, "--usage-interval=0", "--drift-interval=0")
	if err != nil {
		return err
	}
	defer s.stop()
	ns := fmt.Sprintf("drift-%d", n)
	fmt.Fprintf(os.Stderr, "bench: onboarding %d tenants\n", n)
	if _, err := s.onboardBulk(ctx, ns, n); err != nil {
		return err
	}
	planted, err := s.plantDrift(ctx, ns, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: planted in %d tenants; restarting the operator with --drift-interval=1h\n", len(planted))

	checked := map[string]time.Time{}
	var mu sync.Mutex
	stopWatch, err := s.watchTenants(ctx, ns, func(t *tenantryv1.Tenant) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := checked[t.Name]; !seen && t.Status.Drift != nil {
			checked[t.Name] = time.Now()
		}
	})
	if err != nil {
		return err
	}
	defer stopWatch()
	s.stopOperator()
	s.args = setArg(s.args, "--drift-interval", "1h")
	cpu0, busy0 := cpuByCommand()
	start := time.Now()
	if err := s.startOperator(); err != nil {
		return err
	}
	var first, last time.Time
	for {
		mu.Lock()
		done := len(checked)
		mu.Unlock()
		if done >= n {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("%d of %d tenants compared after 10 minutes", done, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, at := range checked {
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	pass := last.Sub(start)
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
		if _, ok := planted[t.Name]; !ok {
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

	floor, err := s.driftFloor(ctx, ns, n)
	if err != nil {
		return err
	}

	// The compared fleet, restarted: nothing is due, so nothing is sent.
	s.stopOperator()
	time.Sleep(2 * time.Second)
	restartTime, _, restartSQL, err := s.restartOperator(n)
	if err != nil {
		return err
	}

	fmt.Printf("## Schema drift (operator --max-concurrent-reconciles=%d, %s)\n\n", concurrency, time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| tenants | full pass (operator start → last compared) | first compared | per tenant | operator CPU | operator peak RSS | SQL statements | planted tenants | false positives | planted objects found | restart afterwards: SQL |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.1f s | %.1f s | %.2f ms | %.1f s | %d MiB | %.0f | %d | %d | %d of %d | %.0f (in %.1f s) |\n\n",
		n, pass.Seconds(), first.Sub(start).Seconds(), float64(last.Sub(first).Microseconds())/1000/float64(n),
		cpu.Seconds(), rss>>20, statements, len(planted), falsePositives, found, len(planted)*plantedPerTenant,
		restartSQL, restartTime.Seconds())
	fmt.Printf("CPU during the pass, by process: %s.\n\n", cpuReport(cpu0, cpu1, busy1-busy0, time.Since(start)))
	fmt.Printf("Floor: the same catalog query for every schema, one after another in one psql session: %.1f s (%.2f ms a schema).\n\n",
		floor.Seconds(), float64(floor.Microseconds())/1000/float64(n))
	if missed > 0 {
		fmt.Printf("%d planted tenant(s) were not described as planted (see above)\n\n", missed)
	}
	fmt.Printf("drift: %d tenants checked in %.1f s, %d false positives, %d planted objects found of %d\n",
		n, pass.Seconds(), falsePositives, found, len(planted)*plantedPerTenant)
	return nil
}

// driftFloor runs the catalog query of a comparison (tenantdb's shape.sql) for each of the namespace's n
// schemas, one after another in one psql session, as the operator's comparisons run it: with
// search_path pg_catalog. It returns the time: what the database needs, with nothing around it.
func (s *stack) driftFloor(ctx context.Context, ns string, n int) (time.Duration, error) {
	query, err := os.ReadFile("internal/tenantdb/shape.sql")
	if err != nil {
		return 0, err
	}
	u, err := url.Parse(s.dbURLs[ns])
	if err != nil {
		return 0, err
	}
	database := strings.TrimPrefix(u.Path, "/")
	var script bytes.Buffer
	script.WriteString("SET search_path = pg_catalog;\n")
	for i := range n {
		schema := pgx.Identifier{registry.TenantName(database, ns, fmt.Sprintf("t%05d", i))}.Sanitize()
		script.WriteString(strings.ReplaceAll(string(query), "$1", "'"+strings.ReplaceAll(schema, "'", "''")+"'"))
		script.WriteString(";\n")
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
