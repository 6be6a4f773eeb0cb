// Package fault runs the operator as a process of its own, as a cluster does, and breaks it in the
// middle of a fleet migration (SIGKILL, and a leader that dies while a second replica waits) and of a
// tenant's move between shards. Every time, the rollout completes, no schema is migrated twice, and
// every Tenant ends at the new version; the move ends with the tenant whole on its new shard.
package fault

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/internal/registry"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
	"tenantry.dev/tenantry/test/utils/testenv"
)

const ns = "fault"

// stack is an API server, PostgreSQL, and operator processes started from one binary.
type stack struct {
	t          *testing.T
	k8s        client.Client
	kubeconfig string // acting as identity
	identity   manifests.Identity
	binary     string
	migrations string // the operator's --migrations-dir: a new release is a file written here
	db         *pgx.Conn
	database   string
	pg         *pgcluster.Throwaway
}

func newStack(t *testing.T) *stack {
	if testing.Short() {
		t.Skip("starts an API server, PostgreSQL and operator processes")
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	assets, err := testenv.EnvtestAssets(root)
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true, BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	pg, err := pgcluster.StartThrowaway()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	checkAdminStatements(t, pg)
	dir := t.TempDir()
	s := &stack{t: t, kubeconfig: filepath.Join(dir, "kubeconfig"), binary: filepath.Join(dir, "manager"),
		migrations: filepath.Join(dir, "migrations"), pg: pg}
	build := exec.Command("go", "build", "-o", s.binary, "./cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the operator: %v\n%s", err, out)
	}
	must(t, os.MkdirAll(s.migrations, 0o755))
	must(t, fs.WalkDir(migrations.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(s.migrations, p), b, 0o644)
	}))
	if s.k8s, err = client.New(cfg, client.Options{Scheme: controller.NewScheme()}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The operators run as the ServiceAccount config/default gives them, with exactly its RBAC, and
	// elect their leader with a Lease in its namespace.
	install, err := manifests.Kustomize(filepath.Join(root, "config", "default"))
	must(t, err)
	s.identity, err = manifests.ApplyIdentity(ctx, s.k8s, install)
	must(t, err)
	kubeconfig, err := s.identity.Kubeconfig(cfg)
	must(t, err)
	must(t, os.WriteFile(s.kubeconfig, kubeconfig, 0o600))
	url, err := pg.NewDatabase(ctx, "fault")
	must(t, err)
	if s.db, err = pgx.Connect(ctx, url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close(ctx) })
	s.database = s.db.Config().Database
	must(t, s.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, manifests.DeclareDatabase(ctx, s.k8s, s.identity.Namespace, "fault", url, ns))
	must(t, s.k8s.Create(ctx, &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Name: "expenses", Namespace: ns},
		Spec: tenantryv1.ExpenseAppSpec{Database: tenantryv1.DatabaseSpec{ClusterDatabase: "fault"},
			Migrations: tenantryv1.MigrationsSpec{MaxConcurrent: 2}}}))
	return s
}

// checkAdminStatements makes the server log every statement, and at the test's end reads what the
// operators sent on their admin sessions (as the superuser, the admin connection string's user): none
// may reach inside a tenant schema (testenv.AdminViolation; docs/security.md).
func checkAdminStatements(t *testing.T, pg *pgcluster.Throwaway) {
	if pg.External() {
		return // someone else's server: its log is not ours to change or read
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	must(t, err)
	defer conn.Close(ctx)
	for name, value := range testenv.ServerLogSettings {
		_, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = %s", name, quote(value)))
		must(t, err)
	}
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	must(t, err)
	t.Cleanup(func() {
		f, err := os.Open(filepath.Join(pg.Dir, "server.log"))
		must(t, err)
		defer f.Close() //nolint:errcheck // opened for reading
		bad, n, err := testenv.AdminViolationsInLog(f, "tenantry-operator", pgcluster.Superuser)
		must(t, err)
		if n == 0 {
			t.Error("the server log holds no statement of the operators' admin sessions: nothing was checked")
		}
		for _, b := range bad {
			t.Errorf("an operator's admin session reached inside a tenant schema: %s", b)
		}
	})
}

// quote is a string as an SQL literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// operator is one operator process; its log is kept for the test to read.
type operator struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

// start runs an operator with leader election (a Lease of three seconds, so that a successor takes over
// quickly).
func (s *stack) start() *operator {
	s.t.Helper()
	o := &operator{log: &bytes.Buffer{}}
	o.cmd = exec.Command(s.binary, "--kubeconfig="+s.kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--leader-elect", "--leader-election-namespace="+s.identity.Namespace, "--platform-namespace="+s.identity.Namespace, "--leader-election-lease-duration=3s",
		"--migrations-dir="+s.migrations)
	o.cmd.Stdout, o.cmd.Stderr = o.log, o.log
	must(s.t, o.cmd.Start())
	s.t.Cleanup(func() { _ = o.cmd.Process.Kill(); _, _ = o.cmd.Process.Wait() })
	return o
}

// kill is SIGKILL: no chance to finish anything.
func (o *operator) kill(t *testing.T) {
	t.Helper()
	must(t, o.cmd.Process.Signal(syscall.SIGKILL))
	_, _ = o.cmd.Process.Wait()
}

// stop is a graceful stop, as a rolling update does.
func (o *operator) stop(t *testing.T) {
	t.Helper()
	must(t, o.cmd.Process.Signal(syscall.SIGTERM))
	_, _ = o.cmd.Process.Wait()
}

func (o *operator) said(what string) bool { return strings.Contains(o.log.String(), what) }

// onboard creates n Tenants and waits until all are Ready.
func (s *stack) onboard(n int) []string {
	s.t.Helper()
	ctx := context.Background()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("f%02d", i)
		must(s.t, s.k8s.Create(ctx, &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: ns},
			Spec: tenantryv1.TenantSpec{AppRef: tenantryv1.AppRef{Name: "expenses"}, Hosts: []string{names[i] + ".example.com"},
				Admin: tenantryv1.Admin{Email: "admin@" + names[i] + ".example.com"}}}))
	}
	s.waitFor("every Tenant Ready", 2*time.Minute, func() bool {
		var list tenantryv1.TenantList
		must(s.t, s.k8s.List(ctx, &list, client.InNamespace(ns)))
		ready := 0
		for _, t := range list.Items {
			if meta.IsStatusConditionTrue(t.Status.Conditions, tenantryv1.ConditionReady) {
				ready++
			}
		}
		return ready == n
	})
	return names
}

// release writes a new migration, slow enough per schema that a fault lands mid-rollout.
func (s *stack) release(version int64) {
	s.t.Helper()
	body := fmt.Sprintf("-- +goose Up\nALTER TABLE expenses ADD COLUMN note_%d text;\nSELECT pg_sleep(0.15);\n", version)
	must(s.t, os.WriteFile(filepath.Join(s.migrations, fmt.Sprintf("%05d_fault.sql", version)), []byte(body), 0o644))
}

// migrated is how many schemas the registry records at version v or later.
func (s *stack) migrated(v int64) int {
	var n int
	must(s.t, s.db.QueryRow(context.Background(), `SELECT count(*) FROM tenantry.tenants WHERE schema_version >= $1`, v).Scan(&n))
	return n
}

func (s *stack) waitFor(what string, timeout time.Duration, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// complete checks the end state: every schema at v with exactly one version row for it, and every
// Tenant's status at v.
func (s *stack) complete(names []string, v int64) {
	s.t.Helper()
	ctx := context.Background()
	s.waitFor("every schema at the new version", time.Minute, func() bool { return s.migrated(v) == len(names) })
	for _, n := range names {
		schema := pgx.Identifier{registry.TenantName(s.database, ns, n)}.Sanitize()
		var rows int
		must(s.t, s.db.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.goose_db_version WHERE version_id = $1`, v).Scan(&rows))
		if rows != 1 {
			s.t.Errorf("%s: %d version rows for %d, want exactly one", n, rows, v)
		}
	}
	s.waitFor("every Tenant's status at the new version", time.Minute, func() bool {
		var list tenantryv1.TenantList
		must(s.t, s.k8s.List(ctx, &list, client.InNamespace(ns)))
		for _, t := range list.Items {
			if t.Status.SchemaVersion != v {
				return false
			}
		}
		return true
	})
}

func TestFleetMigration_faults(t *testing.T) {
	s := newStack(t)
	first := s.start()
	names := s.onboard(30)
	first.stop(t)

	t.Run("SIGKILL mid-rollout", func(t *testing.T) {
		v := migrations.Latest + 1
		s.release(v)
		op := s.start()
		s.waitFor("the rollout under way", time.Minute, func() bool { return s.migrated(v) >= 3 })
		op.kill(t)
		if done := s.migrated(v); done == len(names) {
			t.Fatal("the rollout finished before the kill: no fault was tested")
		}
		restarted := s.start()
		s.complete(names, v)
		restarted.stop(t)
	})

	t.Run("leader dies mid-rollout", func(t *testing.T) {
		v := migrations.Latest + 2
		s.release(v)
		a, b := s.start(), s.start()
		s.waitFor("the rollout under way", time.Minute, func() bool { return s.migrated(v) >= 3 })
		leader, follower := a, b
		if b.said("fleet migration starting") {
			leader, follower = b, a
		}
		if !leader.said("fleet migration starting") || follower.said("fleet migration starting") {
			t.Fatalf("want exactly one replica running the rollout; logs:\n--- a:\n%s\n--- b:\n%s", a.log, b.log)
		}
		leader.kill(t)
		s.complete(names, v)
		if !follower.said("fleet migration starting") {
			t.Fatal("the follower finished the rollout without taking it over")
		}
		follower.stop(t)
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The operator is killed (SIGKILL) in the middle of a tenant's move between shards, once while the data
// is copied and once at the cut-over. Each time its successor finishes the move from the record it left:
// the tenant ends whole on the new shard, the old copy kept, and no replication left behind.
func TestMove_operatorKilled(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	shardURL := map[string]string{}
	shardDB := map[string]*pgx.Conn{"home": s.db}
	for _, shard := range []string{"east", "west"} {
		url, err := s.pg.NewDatabase(ctx, shard)
		must(t, err)
		shardURL[shard] = url
		conn, err := pgx.Connect(ctx, url)
		must(t, err)
		t.Cleanup(func() { conn.Close(ctx) })
		shardDB[shard] = conn
		must(t, manifests.DeclareDatabase(ctx, s.k8s, s.identity.Namespace, shard, url, ns))
	}
	app := &tenantryv1.ExpenseApp{}
	must(t, s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "expenses"}, app))
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Shards = []tenantryv1.ShardSpec{{Name: "east", ClusterDatabase: "east"}, {Name: "west", ClusterDatabase: "west"}}
	must(t, s.k8s.Patch(ctx, app, patch))
	op := s.start()
	must(t, s.k8s.Create(ctx, &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "mover", Namespace: ns},
		Spec: tenantryv1.TenantSpec{AppRef: tenantryv1.AppRef{Name: "expenses"}, Hosts: []string{"mover.example.com"}, Shard: "home",
			Admin: tenantryv1.Admin{Email: "admin@mover.example.com"}}}))
	tenant := func() *tenantryv1.Tenant {
		tn := &tenantryv1.Tenant{}
		must(t, s.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mover"}, tn))
		return tn
	}
	s.waitFor("the tenant Ready", time.Minute, func() bool {
		return meta.IsStatusConditionTrue(tenant().Status.Conditions, tenantryv1.ConditionReady)
	})
	schema := pgx.Identifier{registry.TenantName(s.database, ns, "mover")}.Sanitize()
	const seeded = 300000
	_, err := s.db.Exec(ctx, `INSERT INTO `+schema+`.departments (name) VALUES ('Sales');
INSERT INTO `+schema+`.funding_accounts (name, total_minor) VALUES ('Budget', 1000000000);
INSERT INTO `+schema+`.budgets (department_id, account_id, month, amount_minor) VALUES (1, 1, date_trunc('month', now()), 1000000000);
INSERT INTO `+schema+`.expenses (budget_id, spent_on, description, amount_minor, created_by)
SELECT 1, current_date, 'seed ' || g, 100, 1 FROM generate_series(1, `+fmt.Sprint(seeded)+`) g`)
	must(t, err)

	moveTo := func(shard string) {
		t.Helper()
		tn := tenant()
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Spec.Shard = shard
		must(t, s.k8s.Patch(ctx, tn, patch))
	}
	moved := func(to, from string) {
		t.Helper()
		s.waitFor("the move to "+to+" finished", 2*time.Minute, func() bool {
			tn := tenant()
			return tn.Status.Shard == to && meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionMoving) == nil
		})
		var rows int
		must(t, shardDB[to].QueryRow(ctx, `SELECT count(*) FROM `+schema+`.expenses`).Scan(&rows))
		if rows != seeded {
			t.Errorf("%d expenses on %s after the move, want %d", rows, to, seeded)
		}
		var kept, left int
		must(t, shardDB[from].QueryRow(ctx, `SELECT (SELECT count(*) FROM tenantry.moved_schemas WHERE name = 'mover' AND moved_to = $1),
       (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)`, to).Scan(&kept, &left))
		var subs int
		must(t, shardDB[to].QueryRow(ctx, `SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&subs))
		if kept != 1 || left != 0 || subs != 0 {
			t.Errorf("after the move to %s: %d copies recorded on %s (want 1), %d publications and slots there, %d subscriptions on %s",
				to, kept, from, left, subs, to)
		}
	}

	t.Run("killed while copying", func(t *testing.T) {
		moveTo("east")
		s.waitFor("the copy under way", time.Minute, func() bool {
			c := meta.FindStatusCondition(tenant().Status.Conditions, tenantryv1.ConditionMoving)
			return c != nil && strings.Contains(c.Message, "copying")
		})
		op.kill(t)
		if tenant().Status.Shard != "home" {
			t.Fatal("the move finished before the kill: no fault was tested")
		}
		op = s.start()
		moved("east", "home")
	})

	t.Run("killed at the cut-over", func(t *testing.T) {
		moveTo("west")
		s.waitFor("the cut-over", 2*time.Minute, func() bool { return op.said("tenant cut over") })
		op.kill(t)
		op = s.start()
		moved("west", "east")
	})
	op.stop(t)
}
