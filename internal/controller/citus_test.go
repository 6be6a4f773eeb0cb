package controller

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/apptest"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// The Citus suite (make test-citus runs it alone): the operator and the app on a Citus coordinator with
// two workers, with schema-based sharding. It fails, never skips, when Citus is not installed or does
// not start.

// citusServers is the suite's Citus cluster, started by the first test that needs it.
var citusServers struct {
	once    sync.Once
	cluster *pgcluster.Citus
	err     error
}

func citusCluster(t *testing.T) *pgcluster.Citus {
	t.Helper()
	citusServers.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		citusServers.cluster, citusServers.err = pgcluster.StartCitus(ctx, 2)
	})
	if citusServers.err != nil {
		t.Fatalf("starting Citus (a coordinator and two workers): %v", citusServers.err)
	}
	return citusServers.cluster
}

// host is a tenant's host, unique to the fixture: the Citus tests share one database (and registry).
func (f *fixture) host(tenant string) string { return tenant + "." + f.ns + ".citus.test" }

// newCitusFixture is a fixture whose ExpenseApp's database is the Citus coordinator's.
func newCitusFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, citusCluster(t).URL())
}

// Tenants onboarded on Citus get distributed schemas spread over both workers (status.node says which),
// the registry stays on the coordinator, and the app (directly and through PgBouncer in front of the
// coordinator) serves each tenant its own data and nobody else's. Tenant roles log in to the workers,
// as the coordinator's connections, and are refused by the coordinator.
func TestCitus_onboardingAndIsolation(t *testing.T) {
	c := citusCluster(t)
	f := newCitusFixture(t)
	ctx := context.Background()
	names := []string{"ca", "cb", "cc", "cd"}
	for _, n := range names {
		must(t, k8s.Create(ctx, f.tenant(n, f.host(n))))
	}
	nodes := map[string]string{}
	for _, n := range names {
		tn := f.waitReady(n)
		if tn.Status.Node == "" {
			t.Fatalf("%s: Ready without status.node", n)
		}
		nodes[n] = tn.Status.Node
	}
	workers := map[string]bool{}
	for _, w := range c.Workers {
		workers[fmt.Sprintf("127.0.0.1:%d", w.Port)] = true
	}
	used := map[string]bool{}
	for n, node := range nodes {
		if !workers[node] {
			t.Errorf("%s: status.node %s is not a worker (%v)", n, node, workers)
		}
		used[node] = true
		var actual string
		must(t, f.db.QueryRow(ctx, `SELECT n.nodename || ':' || n.nodeport FROM citus_shards s JOIN pg_dist_node n
  ON n.nodename = s.nodename AND n.nodeport = s.nodeport
WHERE s.table_name::text = $1 || '.expenses'`, f.schema(n)).Scan(&actual))
		if actual != node {
			t.Errorf("%s: expenses are on %s, status.node says %s", n, actual, node)
		}
	}
	if len(used) < 2 {
		t.Errorf("4 tenants on %d worker(s), want them spread: %v", len(used), nodes)
	}
	var registryDistributed int
	must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM pg_dist_schema WHERE schemaid = 'tenantry'::regnamespace`).Scan(&registryDistributed))
	if registryDistributed != 0 {
		t.Error("the registry schema became a distributed schema")
	}

	for _, bounced := range [][]string{nil, {tenantryv1.HomeShard}} {
		server := startApp(t, f, bounced...)
		if bounced == nil {
			must(t, eventually(20*time.Second, func() error {
				if n := server.db.CitusWorkers(); n < len(names) {
					return fmt.Errorf("the app knows the worker of %d schemas, want at least %d", n, len(names))
				}
				return nil
			}))
		}
		sessions := map[string]string{}
		for _, n := range names {
			sessions[n] = server.signIn(t, f, n)
			if status, out := server.call(t, f.host(n), "POST", "/api/v1/departments",
				fmt.Sprintf(`{"name":"Dept %s %d"}`, n, len(bounced)), sessions[n]); status != http.StatusCreated {
				t.Fatalf("%s (PgBouncer %v): creating a department: %d %s", n, bounced, status, out)
			}
		}
		for _, n := range names {
			status, out := server.call(t, f.host(n), "GET", "/api/v1/departments", "", sessions[n])
			if status != http.StatusOK || !strings.Contains(out, fmt.Sprintf("Dept %s %d", n, len(bounced))) {
				t.Errorf("%s (PgBouncer %v): departments: %d %s", n, bounced, status, out)
			}
			for _, other := range names {
				if other != n && strings.Contains(out, "Dept "+other) {
					t.Errorf("%s sees %s's department", n, other)
				}
			}
			other := names[(slices.Index(names, n)+1)%len(names)]
			if status, _ := server.call(t, f.host(other), "GET", "/api/v1/departments", "", sessions[n]); status == http.StatusOK {
				t.Errorf("%s's session read %s's departments", n, other)
			}
		}
	}

	// Routed to workers, the app ran each tenant's transactions on the worker that holds its schema:
	// its login has pooled sessions on both.
	for node := range used {
		var sessions int
		must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM run_command_on_workers(format(
  $$SELECT count(*) FROM pg_stat_activity WHERE usename = %L AND application_name = 'tenantry-app'$$, $1::text))
WHERE nodename || ':' || nodeport = $2 AND result::int > 0`, appRoleName(t, f), node).Scan(&sessions))
		if sessions != 1 {
			t.Errorf("the app has no session of its own on worker %s, which holds tenants %v", node, nodes)
		}
	}

	// A worker that refuses the app's login (here a connection limit of 0 for it, set on that worker
	// alone) costs its tenants speed, not service: the coordinator serves them.
	worker, err := pgx.Connect(ctx, c.Workers[0].URL(pgcluster.CitusDatabase))
	must(t, err)
	defer worker.Close(ctx)
	limit := func(n int) {
		_, err := worker.Exec(ctx, "SET citus.enable_ddl_propagation TO off; ALTER ROLE "+pgx.Identifier{appRoleName(t, f)}.Sanitize()+
			fmt.Sprintf(" CONNECTION LIMIT %d", n))
		must(t, err)
	}
	limit(0)
	defer limit(-1)
	refused := startApp(t, f)
	must(t, eventually(20*time.Second, func() error {
		if n := refused.db.CitusWorkers(); n < len(names) {
			return fmt.Errorf("the app knows the worker of %d schemas, want at least %d", n, len(names))
		}
		return nil
	}))
	for _, n := range names {
		session := refused.signIn(t, f, n)
		if status, out := refused.call(t, f.host(n), "GET", "/api/v1/departments", "", session); status != http.StatusOK {
			t.Errorf("%s (on %s) with worker %d refusing the app: %d %s", n, nodes[n], c.Workers[0].Port, status, out)
		}
	}
	limit(-1)

	// The app's own login, switched to one tenant, reaches no other tenant's table: on the coordinator,
	// and on every worker, where it logs in too, through the distributed table or the shard itself.
	cbShard := ""
	must(t, f.db.QueryRow(ctx, `SELECT shard_name FROM citus_shards WHERE table_name::text = $1 || '.expenses'`, f.schema("cb")).Scan(&cbShard))
	reads := []string{"SELECT count(*) FROM " + f.q("cb") + ".expenses"}
	for _, port := range []int{c.Coordinator.Port, c.Workers[0].Port, c.Workers[1].Port} {
		app := f.appLoginAt(port)
		if fmt.Sprintf("127.0.0.1:%d", port) == nodes["cb"] {
			reads = append(reads, "SELECT count(*) FROM "+f.q("cb")+"."+pgx.Identifier{strings.TrimPrefix(cbShard, f.schema("cb")+".")}.Sanitize())
		}
		for _, read := range reads {
			tx, err := app.Begin(ctx)
			must(t, err)
			_, err = tx.Exec(ctx, "SELECT set_config('role', $1, true)", f.schema("ca"))
			must(t, err)
			_, err = tx.Exec(ctx, read)
			if err == nil {
				t.Errorf("port %d: tenant ca's role ran %q", port, read)
			}
			_ = tx.Rollback(ctx)
		}
	}

	// A tenant role's password (which only pg_dist_authinfo holds) opens a worker, as the coordinator's
	// connections need, and not the coordinator.
	var authinfo string
	must(t, f.db.QueryRow(ctx, `SELECT authinfo FROM pg_dist_authinfo WHERE rolename = $1 AND nodeid = 0`, f.schema("ca")).Scan(&authinfo))
	pass := strings.TrimPrefix(authinfo, "password=")
	login := func(port int) error {
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", f.schema("ca"), pass, port, pgcluster.CitusDatabase))
		if err == nil {
			conn.Close(ctx)
		}
		return err
	}
	if err := login(c.Coordinator.Port); err == nil {
		t.Error("a tenant role logged in to the coordinator")
	}
	if err := login(c.Workers[0].Port); err != nil {
		t.Errorf("a tenant role cannot log in to a worker, which the coordinator's connections need: %v", err)
	}
}

// A release's migration reaches every distributed schema: the fleet rollout's DDL, run as each tenant
// role on the coordinator, is applied on the workers, and the registry records it.
func TestCitus_fleetMigration(t *testing.T) {
	f := newCitusFixture(t)
	ctx := context.Background()
	names := []string{"m1", "m2", "m3", "m4"}
	for _, n := range names {
		must(t, k8s.Create(ctx, f.tenant(n, f.host(n))))
	}
	for _, n := range names {
		f.waitReady(n)
	}
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nALTER TABLE expenses ADD COLUMN receipt_url text;\n")))
	next := migrations.Latest + 1
	pokeAll(t, f, names)
	f.waitApp("every tenant at the new version", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.TenantsAtTarget == int32(len(names)) && a.Status.TargetSchemaVersion == next
	})
	for _, n := range names {
		var shards int
		must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM run_command_on_placements($1::regclass,
  $$SELECT count(*) FROM information_schema.columns WHERE table_schema || '.' || table_name = '%s' AND column_name = 'receipt_url'$$)
WHERE result = '1'`, f.schema(n)+".expenses").Scan(&shards))
		if shards != 1 {
			t.Errorf("%s: the new column is on %d placement(s), want its one", n, shards)
		}
		// Compared with the new release once migrated: a distributed schema has its shape too.
		if d := f.waitDriftAt(n, next).Status.Drift; d.Differences != 0 {
			t.Errorf("%s: drift after the release: %+v", n, d)
		}
	}
}

// Suspending a tenant on Citus, then deleting tenants: Retain keeps the distributed schema and takes the app's rights away;
// Delete drops schema, role and the role's login for the workers.
func TestCitus_delete(t *testing.T) {
	f := newCitusFixture(t)
	ctx := context.Background()
	keep := f.tenant("keep", f.host("keep"))
	drop := f.tenant("drop", f.host("drop"))
	drop.Spec.DeletionPolicy = tenantryv1.DeletionPolicyDelete
	must(t, k8s.Create(ctx, keep))
	must(t, k8s.Create(ctx, drop))
	f.waitReady("keep")
	f.waitReady("drop")

	// Suspended, a tenant gets 503s from the app; resumed, it is served again.
	server := startApp(t, f)
	for _, suspend := range []bool{true, false} {
		tn := f.get("keep")
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.Suspend = suspend
		must(t, k8s.Patch(ctx, tn, patch))
		f.waitReady("keep")
		want := map[bool]int{true: http.StatusServiceUnavailable, false: http.StatusOK}[suspend]
		must(t, eventually(10*time.Second, func() error {
			if status, _ := server.call(t, f.host("keep"), "GET", "/login", "", ""); status != want {
				return fmt.Errorf("suspend %v: GET /login answered %d, want %d", suspend, status, want)
			}
			return nil
		}))
	}

	f.deleteTenant("keep")
	f.deleteTenant("drop")
	var keptSchema, keptDistributed, droppedSchema, droppedRole, droppedAuth int
	must(t, f.db.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM pg_namespace WHERE nspname = $1),
  (SELECT count(*) FROM pg_dist_schema s JOIN pg_namespace n ON n.oid = s.schemaid WHERE n.nspname = $1),
  (SELECT count(*) FROM pg_namespace WHERE nspname = $2),
  (SELECT count(*) FROM pg_roles WHERE rolname = $2),
  (SELECT count(*) FROM pg_dist_authinfo WHERE rolename = $2)`, f.schema("keep"), f.schema("drop")).Scan(
		&keptSchema, &keptDistributed, &droppedSchema, &droppedRole, &droppedAuth))
	if keptSchema != 1 || keptDistributed != 1 {
		t.Errorf("Retain: schema %d, distributed %d; want both kept", keptSchema, keptDistributed)
	}
	if droppedSchema+droppedRole+droppedAuth != 0 {
		t.Errorf("Delete left schema %d, role %d, worker login %d", droppedSchema, droppedRole, droppedAuth)
	}
	var member bool
	must(t, f.db.QueryRow(ctx, `SELECT pg_has_role($1, $2, 'MEMBER')`, appRoleName(t, f), f.schema("keep")).Scan(&member))
	if member {
		t.Error("Retain: the app's login may still act as the retained tenant")
	}
}

// expensesTables names the expenses tables of tenants, as regclass prints them.
func expensesTables(f *fixture, names []string) []string {
	tables := make([]string, len(names))
	for i, n := range names {
		tables[i] = f.schema(n) + ".expenses"
	}
	return tables
}

// appRoleName is the fixture's app login, from its Secret.
func appRoleName(t *testing.T, f *fixture) string {
	t.Helper()
	conn := f.appLogin()
	return conn.Config().User
}

// A worker joins and Citus rebalances (citus_rebalance_start: logical replication, then a short lock
// per colocation group) while the app keeps serving and every tenant of the test is written to
// continuously: no acknowledged write is lost, and every Tenant's status.node follows its schema to its
// new worker. At least one of them moves (if the cluster-wide rebalance moved none, one is moved).
func TestCitus_rebalanceUnderWriteLoad(t *testing.T) {
	c := citusCluster(t)
	f := newCitusFixture(t)
	ctx := context.Background()
	names := make([]string, 8)
	for i := range names {
		names[i] = fmt.Sprintf("rb%d", i)
		must(t, k8s.Create(ctx, f.tenant(names[i], f.host(names[i]))))
	}
	for _, n := range names {
		f.waitReady(n)
	}
	server := startApp(t, f)
	writers := map[string]*apptest.Writer{}
	for _, n := range names {
		session := server.signIn(t, f, n)
		budget := server.setupBudget(t, f.host(n), session)
		writers[n] = startWriter(server, f.host(n), session, budget, "rb-")
	}
	time.Sleep(300 * time.Millisecond)

	added, err := c.AddWorker(ctx)
	must(t, err)
	newNode := fmt.Sprintf("127.0.0.1:%d", added.Port)
	began := time.Now()
	_, err = f.db.Exec(ctx, "SELECT citus_rebalance_start()")
	must(t, err)
	_, err = f.db.Exec(ctx, "SELECT citus_rebalance_wait()")
	must(t, err)
	t.Logf("rebalance onto a third worker: %s", time.Since(began).Round(time.Millisecond))
	// The rebalance evens out the whole cluster, other tests' tenants included: if it moved none of
	// these, one of them moves now, the way Citus moves a schema (its colocation group), still under load.
	var mine int
	must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM citus_shards WHERE nodeport = $1 AND table_name::text = ANY($2)`,
		added.Port, expensesTables(f, names)).Scan(&mine))
	if mine == 0 {
		_, err = f.db.Exec(ctx, `SELECT citus_move_shard_placement(shardid, nodename, nodeport, '127.0.0.1', $1)
FROM citus_shards WHERE table_name::text = $2`, added.Port, f.schema(names[0])+".expenses")
		must(t, err)
	}
	time.Sleep(300 * time.Millisecond)

	for n, w := range writers {
		res := w.Stop()
		t.Logf("%s: %d writes acknowledged, longest pause %s, %d refused with 503, %d other answers", n, len(res.Acked),
			res.Pause.Round(time.Millisecond), res.Refusals, res.Errors)
		var found int
		must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM `+f.q(n)+`.expenses WHERE description = ANY($1)`, res.Acked).Scan(&found))
		if found != len(res.Acked) || len(res.Acked) == 0 {
			t.Errorf("%s: %d of %d acknowledged writes lost in the rebalance", n, len(res.Acked)-found, len(res.Acked))
		}
		if res.Errors > 0 {
			t.Errorf("%s: %d writes got an answer other than 201 or 503 during the rebalance: %q", n, res.Errors, res.Unexpected)
		}
	}
	var onNew int
	must(t, f.db.QueryRow(ctx, `SELECT count(*) FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid) WHERE n.nodeport = $1`,
		added.Port).Scan(&onNew))
	if onNew == 0 {
		t.Fatal("the rebalance moved nothing onto the new worker: no move was tested")
	}
	must(t, eventually(60*time.Second, func() error {
		moved := 0
		for _, n := range names {
			var actual string
			if err := f.db.QueryRow(ctx, `SELECT n.nodename || ':' || n.nodeport FROM citus_shards s JOIN pg_dist_node n
  ON n.nodename = s.nodename AND n.nodeport = s.nodeport WHERE s.table_name::text = $1 || '.expenses'`, f.schema(n)).Scan(&actual); err != nil {
				return err
			}
			if got := f.get(n).Status.Node; got != actual {
				return fmt.Errorf("%s: status.node %s, schema on %s", n, got, actual)
			}
			if actual == newNode {
				moved++
			}
		}
		t.Logf("%d of this test's %d tenants now on the new worker, and their status says so", moved, len(names))
		return nil
	}))
	for _, n := range names {
		session := server.signIn(t, f, n)
		if status, out := server.call(t, f.host(n), "GET", "/api/v1/departments", "", session); status != http.StatusOK {
			t.Errorf("%s after the rebalance: %d %s", n, status, out)
		}
	}
	// The app followed the schemas it serves to the new worker: its login has sessions there.
	var sessions int
	must(t, f.db.QueryRow(ctx, `SELECT result::int FROM run_command_on_workers(format(
  $$SELECT count(*) FROM pg_stat_activity WHERE usename = %L AND application_name = 'tenantry-app'$$, $1::text))
WHERE nodeport = $2`, appRoleName(t, f), added.Port).Scan(&sessions))
	if sessions == 0 {
		t.Error("the app sends no transaction to the new worker, which holds some of its tenants now")
	}
}
