package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/tenantdb"
	"tenantry.dev/tenantry/test/utils/tenantdata"
)

// restoreInPlace creates a Restore of a tenant to a backup and waits until it reaches a final phase.
func (f *fixture) restoreInPlace(name, tenant, backupName string) *tenantryv1.Restore {
	f.t.Helper()
	must(f.t, k8s.Create(context.Background(), &tenantryv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: tenantryv1.RestoreSpec{Tenant: tenantryv1.LocalRef{Name: tenant}, Backup: tenantryv1.LocalRef{Name: backupName}}}))
	rs := &tenantryv1.Restore{}
	must(f.t, eventually(120*time.Second, func() error {
		must(f.t, k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, rs))
		if rs.Status.Phase != tenantryv1.RestoreCompleted && rs.Status.Phase != tenantryv1.RestoreFailed {
			return fmt.Errorf("phase %q: %+v", rs.Status.Phase, rs.Status.Conditions)
		}
		return nil
	}))
	return rs
}

// expenseTotal is how many expenses the app lists for a tenant.
func (a *runningApp) expenseTotal(t *testing.T, host, session string) int {
	t.Helper()
	status, body := a.call(t, host, "GET", "/api/v1/expenses", "", session)
	var list struct{ Total int }
	if status != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil {
		t.Fatalf("listing expenses of %s: %d %s", host, status, body)
	}
	return list.Total
}

// A tenant deletes expenses by mistake after its backup, and is put back to the backup in place while
// the app serves and writes to it and to another tenant: the other tenant's writes all succeed, the
// restored tenant serves the backup's expenses and takes writes again; its sessions end, and its
// revoked token, deactivated member and changed password stay as they are now; its schema as it was
// is kept, out of the tenant's reach, until the Restore goes.
func TestRestore_inPlaceWhileOthersWrite(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.withObjectStore()
	acmeHost, globexHost := "acme."+f.ns+".restore.test", "globex."+f.ns+".restore.test"
	must(t, k8s.Create(ctx, f.tenant("acme", acmeHost)))
	must(t, k8s.Create(ctx, f.tenant("globex", globexHost)))
	f.waitReady("acme")
	f.waitReady("globex")
	server := startApp(t, f)
	acme, globex := server.signIn(t, f, "acme"), server.signIn(t, f, "globex")
	budget := server.setupBudget(t, acmeHost, acme)
	for i := range 20 {
		status, body := server.call(t, acmeHost, "POST", "/api/v1/expenses",
			fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":"kept %d","amountMinor":100}`, budget, time.Now().Format("2006-01-02"), i), acme)
		if status != http.StatusCreated {
			t.Fatalf("creating an expense: %d %s", status, body)
		}
	}
	// An API token, which will be revoked after the backup; a member, who will be deactivated.
	var tokenID, memberID int64
	must(t, f.db.QueryRow(ctx, `INSERT INTO `+f.q("acme")+`.api_tokens (user_id, name, token_hash)
SELECT min(id), 'ci', '\x0b0b' FROM `+f.q("acme")+`.users RETURNING id`).Scan(&tokenID))
	must(t, f.db.QueryRow(ctx, `INSERT INTO `+f.q("acme")+`.users (email, name, role, password_hash)
VALUES ('leaver@acme.test', 'Leaver', 'member', 'old-hash') RETURNING id`).Scan(&memberID))
	f.backUp("before-mistake", "acme")
	before, err := tenantdata.Dump(ctx, f.db, f.schema("acme"), "expenses")
	must(t, err)
	// The mistake: half the expenses deleted. Meanwhile the token was revoked, the member left and the
	// admin's password changed.
	_, err = f.db.Exec(ctx, `DELETE FROM `+f.q("acme")+`.expenses WHERE id % 2 = 0;
UPDATE `+f.q("acme")+`.api_tokens SET revoked_at = now();
UPDATE `+f.q("acme")+`.users SET active = false, password_hash = 'new-hash' WHERE email = 'leaver@acme.test'`)
	must(t, err)
	if n := server.expenseTotal(t, acmeHost, acme); n != 10 {
		t.Fatalf("after the mistake acme lists %d expenses", n)
	}

	// Both tenants are written to all along: the other's writes all succeed, and the restored tenant's
	// fail at most while its schema is swapped.
	writer := startWriter(server, globexHost, globex, server.setupBudget(t, globexHost, globex), "during-restore-")
	own := startWriter(server, acmeHost, acme, budget, "own-")
	time.Sleep(300 * time.Millisecond)
	rs := f.restoreInPlace("undo", "acme", "before-mistake")
	time.Sleep(300 * time.Millisecond)
	res, ownRes := writer.Stop(), own.Stop()
	if rs.Status.Phase != tenantryv1.RestoreCompleted {
		t.Fatalf("restore %s: %s (%+v)", rs.Status.Phase, rs.Status.Error, rs.Status.Conditions)
	}
	if len(res.Acked) < 10 || res.Errors > 0 || res.Refusals > 0 {
		t.Fatalf("the other tenant's writes during the restore: %d acknowledged, %d refused, %d errors %q", len(res.Acked), res.Refusals, res.Errors, res.Unexpected)
	}
	// The restored tenant's own writes: acknowledged until the swap (into the schema replaced), then
	// refused, since every session ends with the restore (its users sign in again).
	t.Logf("the restored tenant's own writer: %d acknowledged, %d refused, %d other answers %q", len(ownRes.Acked), ownRes.Refusals, ownRes.Errors, ownRes.Unexpected)
	if len(ownRes.Acked) == 0 {
		t.Fatal("the restored tenant took no write while its backup was being restored beside it")
	}
	if rs.Status.Rows == 0 || rs.Status.WritesPaused == nil || rs.Status.PreviousSchema == "" || rs.Status.KeepUntil == nil ||
		!meta.IsStatusConditionTrue(rs.Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatalf("Restore status %+v", rs.Status)
	}
	t.Logf("restored %d rows; acme's writes paused %s; the other tenant wrote %d expenses meanwhile", rs.Status.Rows, rs.Status.WritesPaused.Duration, len(res.Acked))

	// Sessions end with the restore: the old one is refused, a new sign-in works.
	if status, _ := server.call(t, acmeHost, "GET", "/api/v1/expenses", "", acme); status != http.StatusUnauthorized {
		t.Fatalf("a session from before the restore answers %d, want 401", status)
	}
	acme = server.signIn(t, f, "acme")
	// A write that was waiting for the swap (its session checked before it) went to the restored schema.
	landed := f.count(`SELECT count(*) FROM ` + f.q("acme") + `.expenses WHERE description LIKE 'own-%'`)
	if n := server.expenseTotal(t, acmeHost, acme); n != 20+landed {
		t.Fatalf("after the restore acme lists %d expenses, want the backup's 20 and the %d written during the swap", n, landed)
	}
	// No credential went back in time.
	var revoked bool
	var active bool
	var hash string
	must(t, f.db.QueryRow(ctx, `SELECT (SELECT revoked_at IS NOT NULL FROM `+f.q("acme")+`.api_tokens WHERE id = $1),
       active, password_hash FROM `+f.q("acme")+`.users WHERE id = $2`, tokenID, memberID).Scan(&revoked, &active, &hash))
	if !revoked || active || hash != "new-hash" {
		t.Fatalf("after the restore: token revoked %v, leaver active %v with hash %q; want revoked, inactive, the new hash", revoked, active, hash)
	}
	after, err := tenantdata.Dump(ctx, f.db, f.schema("acme"), "expenses")
	must(t, err)
	after = slices.DeleteFunc(after, func(row string) bool { return strings.Contains(row, ",own-") })
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("the restored expenses are not the backup's")
	}
	status, body := server.call(t, acmeHost, "POST", "/api/v1/expenses",
		fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":"after","amountMinor":100}`, budget, time.Now().Format("2006-01-02")), acme)
	if status != http.StatusCreated {
		t.Fatalf("writing to the restored tenant: %d %s", status, body)
	}
	// The schema as it was is kept, with the mistake in it (and the writes acknowledged before the
	// swap), and neither the tenant's role nor the app's login reaches it.
	if n := f.count(`SELECT count(*) FROM ` + pgx.Identifier{rs.Status.PreviousSchema}.Sanitize() + `.expenses WHERE description NOT LIKE 'own-%'`); n != 10 {
		t.Fatalf("the kept schema holds %d expenses, want the 10 left by the mistake", n)
	}
	app := f.appLogin()
	for _, stmt := range []string{
		`SELECT count(*) FROM ` + pgx.Identifier{rs.Status.PreviousSchema}.Sanitize() + `.expenses`,
		`GRANT ALL ON ALL TABLES IN SCHEMA ` + pgx.Identifier{rs.Status.PreviousSchema}.Sanitize() + ` TO PUBLIC`,
		`CREATE TABLE ` + pgx.Identifier{rs.Status.PreviousSchema}.Sanitize() + `.planted (x int)`,
	} {
		if _, err := app.Exec(ctx, `BEGIN; SET LOCAL ROLE `+f.q("acme")+`; `+stmt+`; COMMIT`); err == nil ||
			!strings.Contains(err.Error(), "permission denied for schema") {
			t.Errorf("the tenant's role on the kept schema: %s: %v, want permission denied for the schema", stmt, err)
		}
		_, _ = app.Exec(ctx, "ROLLBACK")
	}

	must(t, k8s.Delete(ctx, rs))
	must(t, eventually(30*time.Second, func() error {
		if f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, rs.Status.PreviousSchema) != 0 {
			return errNotYet
		}
		return nil
	}))
}

// The object store goes away while a restore in place fills its staging schema: the Restore fails,
// the tenant is exactly as it was (every row, and writable), and the staging schema is gone.
func TestRestore_inPlaceFailsHalfway(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	server, _ := f.withObjectStore()
	f.bigTenant("steady")
	f.backUp("full", "steady")
	_, err := f.db.Exec(ctx, `DELETE FROM `+f.q("steady")+`.expenses WHERE id % 3 = 0`)
	must(t, err)
	want := map[string][]string{}
	for _, table := range tenantdata.Tables {
		want[table], err = tenantdata.Dump(ctx, f.db, f.schema("steady"), table)
		must(t, err)
	}

	must(t, k8s.Create(ctx, &tenantryv1.Restore{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "doomed"},
		Spec: tenantryv1.RestoreSpec{Tenant: tenantryv1.LocalRef{Name: "steady"}, Backup: tenantryv1.LocalRef{Name: "full"}}}))
	rs := &tenantryv1.Restore{}
	must(t, eventually(60*time.Second, func() error {
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "doomed"}, rs))
		if rs.Status.Phase != tenantryv1.RestoreRunning {
			return errNotYet
		}
		return nil
	}))
	// The store goes once the staging schema is being filled.
	staging, _ := tenantdb.RestoreSchemas(f.schema("steady"), string(rs.UID))
	must(t, eventually(30*time.Second, func() error {
		if f.count(`SELECT count(*) FROM pg_tables WHERE schemaname = $1`, staging) == 0 {
			return errNotYet
		}
		return nil
	}))
	server.Kill()
	defer func() { must(t, server.Restart()) }()
	must(t, eventually(120*time.Second, func() error {
		must(t, k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "doomed"}, rs))
		if rs.Status.Phase != tenantryv1.RestoreFailed {
			return fmt.Errorf("phase %s", rs.Status.Phase)
		}
		return nil
	}))
	t.Logf("the failed restore: %s", rs.Status.Error)
	for _, table := range tenantdata.Tables {
		got, err := tenantdata.Dump(ctx, f.db, f.schema("steady"), table)
		must(t, err)
		if fmt.Sprint(got) != fmt.Sprint(want[table]) {
			t.Errorf("after the failed restore, table %s holds %d rows, it held %d", table, len(got), len(want[table]))
		}
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, staging); n != 0 {
		t.Error("the failed restore left its staging schema")
	}
	app := f.appLogin()
	if _, err := app.Exec(ctx, `BEGIN; SET LOCAL ROLE `+f.q("steady")+`; INSERT INTO `+f.q("steady")+
		`.departments (name) VALUES ('still writable'); COMMIT`); err != nil {
		t.Fatalf("the tenant is not writable after the failed restore: %v", err)
	}
	if !meta.IsStatusConditionTrue(f.get("steady").Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatal("the tenant is not Ready after the failed restore")
	}
}
