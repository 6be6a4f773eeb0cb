package controller

// One login cannot stall the operator: each test makes one database hang in a way the app's login can
// (it holds nothing more), and checks that the operator's work elsewhere goes on within seconds.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
)

// waitReadyWithin waits for Tenants to be Ready and fails if that takes longer than d.
func (f *fixture) waitReadyWithin(d time.Duration, names ...string) {
	f.t.Helper()
	start := time.Now()
	for _, n := range names {
		f.waitReady(n)
	}
	if took := time.Since(start); took > d {
		f.t.Fatalf("tenants %v took %s to be Ready, want at most %s", names, took.Round(time.Millisecond), d)
	}
}

// The registry's creation lock is a row lock only the admin login can take: the app's login cannot
// take it, and holding the advisory key an earlier release used stops nobody. A new ExpenseApp on the
// same database (another namespace) onboards its tenant meanwhile.
func TestHang_registryLock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("first", "first.example.com")))
	f.waitReady("first")
	conn := f.appLogin()
	tx, err := conn.Begin(ctx)
	must(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "SELECT version FROM tenantry.registry_version FOR UPDATE")
	if !isPermissionDenied(err) {
		t.Fatalf("the app login locking the registry's version row: %v, want permission denied", err)
	}
	_ = tx.Rollback(ctx)
	_, err = conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(0x74656e616e747279)) // the key releases before this one took
	must(t, err)

	other := f.sibling()
	must(t, k8s.Create(ctx, other.tenant("second", "second.example.com")))
	other.waitReadyWithin(15*time.Second, "second")
}

// An idle transaction of the app's login holds a read lock on tenantry.tenants. A new ExpenseApp on the
// same database checks the registry's version, finds it current and runs no DDL (which would queue
// behind that lock, and every read of the registry behind it): its tenant is Ready within seconds.
func TestHang_registryReadLock(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, f.tenant("first", "first.example.com")))
	f.waitReady("first")
	tx, err := f.appLogin().Begin(ctx)
	must(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "LOCK TABLE tenantry.tenants IN ACCESS SHARE MODE")
	must(t, err)

	other := f.sibling()
	must(t, k8s.Create(ctx, other.tenant("second", "second.example.com")))
	other.waitReadyWithin(15*time.Second, "second")
	if n := f.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`); n != 0 {
		t.Fatalf("%d sessions wait for a lock on the database", n)
	}
}

// A view that sleeps, planted in place of users in eight tenants of one database, hangs their usage
// measurements, which hold the operator's workers only up to its bound per database: tenants of another
// ExpenseApp on another database are onboarded meanwhile, within seconds. There, a tenant whose registry
// row its app's login keeps locked (through the function that records its version) reports
// DatabaseError naming the lock_timeout, and the others of its database go on.
func TestHang_oneDatabaseHoldsNoOther(t *testing.T) {
	stuck := newFixture(t)
	ctx := context.Background()
	var names []string
	for i := range 8 {
		name := fmt.Sprintf("slow%d", i)
		names = append(names, name)
		must(t, k8s.Create(ctx, stuck.tenant(name, name+".example.com")))
	}
	for _, n := range names {
		stuck.waitReady(n)
	}
	conn := stuck.appLogin()
	for _, n := range names {
		_, err := conn.Exec(ctx, fmt.Sprintf(`BEGIN; SET LOCAL ROLE %[1]s;
ALTER TABLE %[1]s.users RENAME TO users_real;
CREATE VIEW %[1]s.users AS SELECT * FROM %[1]s.users_real WHERE pg_sleep(3600) IS NOT NULL;
COMMIT`, stuck.q(n)))
		must(t, err)
	}
	defer func() {
		// The sleeping measurements are cancelled, not left to the statement timeout.
		_, _ = stuck.db.Exec(ctx, `SELECT pg_cancel_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event = 'PgSleep'`)
	}()
	for _, n := range names {
		tn := stuck.get(n)
		patch := client.MergeFrom(tn.DeepCopy())
		tn.Status.Usage = &tenantryv1.TenantUsage{MeasuredAt: metav1.NewTime(time.Now().Add(-2 * time.Hour))}
		must(t, k8s.Status().Patch(ctx, tn, patch))
	}
	pokeAll(t, stuck, names)
	must(t, eventually(20*time.Second, func() error {
		if n := stuck.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'`); n == 0 {
			return errNotYet
		}
		return nil
	}))

	// Meanwhile, another app on another database onboards.
	other := newFixture(t)
	must(t, k8s.Create(ctx, other.tenant("locked", "locked.example.com")))
	other.waitReady("locked")
	var others []string
	for i := range 3 {
		name := fmt.Sprintf("fine%d", i)
		others = append(others, name)
		must(t, k8s.Create(ctx, other.tenant(name, name+".example.com")))
	}
	other.waitReadyWithin(15*time.Second, others...)
	sleeping := stuck.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'`)
	if sleeping == 0 || sleeping > databases.PerDatabase {
		t.Fatalf("%d usage measurements sleep in the stuck database while the other onboards, want between 1 and the bound per database, %d",
			sleeping, databases.PerDatabase)
	}

	// The locked tenant: its registry row held by a transaction of the app's login, as the tenant.
	lockTx, err := other.appLogin().Begin(ctx)
	must(t, err)
	defer func() { _ = lockTx.Rollback(ctx) }()
	_, err = lockTx.Exec(ctx, "SET LOCAL ROLE "+other.q("locked")+"; SELECT tenantry.record_schema_version(1000000)")
	must(t, err)
	tn := other.get("locked")
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.DisplayName = "Locked out"
	must(t, k8s.Patch(ctx, tn, patch))

	locked := other.waitCondition("locked", tenantryv1.ConditionReady, metav1.ConditionFalse, tenantryv1.ReasonDatabaseError)
	if c := findCondition(locked, tenantryv1.ConditionReady); !strings.Contains(c.Message, "lock_timeout") {
		t.Fatalf("the locked tenant's Ready message does not name the lock timeout: %q", c.Message)
	}
	_ = lockTx.Rollback(ctx)
	other.waitReady("locked")
	var display string
	must(t, other.db.QueryRow(ctx, `SELECT display_name FROM tenantry.tenants WHERE schema_name = $1`, other.schema("locked")).Scan(&display))
	if display != "Locked out" {
		t.Fatalf("registry display name %q after the lock went, want the new one", display)
	}
}

// Another app's login on the same database cannot learn the key of goose's lock for a new schema (a MAC
// under a secret it may not read), and tries the lock of a release's migration (the tenant's own registry
// row, which replaced an advisory key it could compute): it may not act as the tenant, so it cannot take
// it, and the release goes through.
func TestHang_migrationLockOfAnotherApp(t *testing.T) {
	a := newFixture(t)
	b := a.sibling()
	ctx := context.Background()
	must(t, k8s.Create(ctx, b.tenant("victim", "victim.example.com")))
	b.waitReady("victim")
	conn := a.appLogin()
	// The key of goose's lock for a new schema is derived from a secret the app's login may not read.
	if _, err := conn.Exec(ctx, "SELECT migration_secret FROM tenantry.registry_version"); !isPermissionDenied(err) {
		t.Fatalf("the app's login reading the registry's migration secret: %v, want permission denied", err)
	}
	if err := setRole(conn, b.schema("victim")); !isPermissionDenied(err) {
		t.Fatalf("app A's login acting as app B's tenant: %v, want permission denied", err)
	}
	tx, err := conn.Begin(ctx)
	must(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, "SELECT tenantry.lock_own_row()") // as itself: no row is its own
	must(t, err)

	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nCREATE TABLE receipts (id int);\n")))
	pokeAll(t, b, []string{"victim"})
	must(t, eventually(20*time.Second, func() error {
		if b.get("victim").Status.SchemaVersion != migrations.Latest+1 {
			return errNotYet
		}
		return nil
	}))
}
