package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
	"tenantry.dev/tenantry/internal/registry"
)

// waitDrift waits until a Tenant's drift was compared after the time given, and returns the Tenant.
func (f *fixture) waitDrift(name string, after time.Time) *tenantryv1.Tenant {
	f.t.Helper()
	var tn *tenantryv1.Tenant
	err := eventually(30*time.Second, func() error {
		tn = f.get(name)
		if d := tn.Status.Drift; d == nil || !d.CheckedAt.After(after) {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("Tenant %s: no drift comparison after %s: %+v", name, after, tn.Status.Drift)
	}
	return tn
}

// waitDriftAt waits until a Tenant's schema was compared with the release at a version, and returns it.
func (f *fixture) waitDriftAt(name string, version int64) *tenantryv1.Tenant {
	f.t.Helper()
	var tn *tenantryv1.Tenant
	if err := eventually(30*time.Second, func() error {
		if tn = f.get(name); tn.Status.Drift == nil || tn.Status.Drift.SchemaVersion != version {
			return errNotYet
		}
		return nil
	}); err != nil {
		f.t.Fatalf("Tenant %s: not compared at version %d: %+v", name, version, tn.Status.Drift)
	}
	return tn
}

// askPass asks the fixture's ExpenseApp for a pass over its fleet now (AnnotationCheckDrift), and
// returns a time before the pass.
func (f *fixture) askPass() time.Time {
	f.t.Helper()
	before := time.Now().Add(-time.Second) // times are written at second precision
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	if app.Annotations == nil {
		app.Annotations = map[string]string{}
	}
	app.Annotations[AnnotationCheckDrift] = fmt.Sprint(time.Now().UnixNano())
	must(f.t, k8s.Patch(context.Background(), app, patch))
	return before
}

// waitPass waits until the fixture's ExpenseApp records a pass that began after the time given.
func (f *fixture) waitPass(after time.Time) *tenantryv1.ExpenseApp {
	f.t.Helper()
	return f.waitApp("a drift pass recorded", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.Drift != nil && a.Status.Drift.CheckedAt.After(after)
	})
}

// Each tenant's schema is compared with the release's once it is Ready; an unchanged fleet shows no
// drift. A compromised app login, acting as one tenant, plants a trigger (with its function) and a view,
// adds a column, drops an index and changes a default: the next comparison finds and describes each,
// calls the code planted, leaves the tenant Ready, and is counted on the ExpenseApp. The other tenant
// is untouched. The opt-in repair refuses while code is planted, then makes the dropped index again, and
// drops nothing.
func TestTenantReconciler_schemaDrift(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	start := time.Now().Add(-time.Second)
	for _, n := range []string{"steady", "hacked"} {
		must(t, k8s.Create(ctx, f.tenant(n, n+"."+f.ns+".drift.test")))
	}
	for _, n := range []string{"steady", "hacked"} {
		f.waitReady(n)
		tn := f.waitDrift(n, start)
		if d := tn.Status.Drift; d.Differences != 0 || d.Planted != 0 || len(d.Details) != 0 || d.SchemaVersion != release.Target() {
			t.Fatalf("Tenant %s just onboarded: drift %+v, want none at version %d", n, d, release.Target())
		}
		if c := meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSchemaDrift); c == nil ||
			c.Status != metav1.ConditionFalse || c.Reason != tenantryv1.ReasonMatchesRelease {
			t.Fatalf("Tenant %s just onboarded: SchemaDrift %+v, want False (MatchesRelease)", n, c)
		}
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`,
		registry.ShapeName(f.database, f.ns, "expenses")); n != 0 {
		t.Fatal("the scratch schema of the release's shape is still there")
	}

	app := f.appLogin()
	_, err := app.Exec(ctx, `BEGIN; SET LOCAL ROLE `+f.q("hacked")+`; SET LOCAL search_path = `+f.q("hacked")+`;
CREATE FUNCTION keep_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER keep_copy BEFORE INSERT ON expenses FOR EACH ROW EXECUTE FUNCTION keep_copy();
CREATE VIEW all_users AS SELECT email, password_hash FROM users;
ALTER TABLE departments ADD COLUMN cost_centre text;
DROP INDEX expenses_spent_on_idx;
ALTER TABLE budgets ALTER COLUMN amount_minor SET DEFAULT 100;
COMMIT`)
	must(t, err)
	steadyBefore := f.get("steady").Status.Drift
	after := f.askPass()
	pass := f.waitPass(after).Status.Drift
	var tn *tenantryv1.Tenant
	must(t, eventually(10*time.Second, func() error {
		if tn = f.get("hacked"); tn.Status.Drift.Differences == 0 {
			return errNotYet // the pass hands the tenant its comparison; it records it a moment later
		}
		return nil
	}))
	d := tn.Status.Drift
	want := []string{
		"planted function keep_copy() (code the release does not have)",
		"planted trigger expenses.keep_copy (code the release does not have): CREATE TRIGGER keep_copy BEFORE INSERT ON <schema>.expenses FOR EACH ROW EXECUTE FUNCTION <schema>.keep_copy()",
		"planted view all_users (code the release does not have): SELECT users.email, users.password_hash FROM <schema>.users;",
		"changed column budgets.amount_minor: default 100, not none",
		"extra column departments.cost_centre: text",
		"missing index expenses_spent_on_idx",
	}
	if !slices.Equal(d.Details, want) || d.Differences != 6 || d.Planted != 3 {
		t.Fatalf("drift: %d differences, %d planted:\n  %s\nwant 6, 3:\n  %s", d.Differences, d.Planted,
			strings.Join(d.Details, "\n  "), strings.Join(want, "\n  "))
	}
	c := meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSchemaDrift)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != tenantryv1.ReasonCodePlanted ||
		!strings.Contains(c.Message, "3 object(s) of code") || !strings.Contains(c.Message, "and 3 more") {
		t.Fatalf("SchemaDrift = %+v, want True (CodePlanted) saying what was planted", c)
	}
	if !meta.IsStatusConditionTrue(tn.Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatal("a drifted tenant is no longer Ready")
	}
	f.waitApp("a drifted and planted tenant counted", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.DriftedTenants == 1 && a.Status.PlantedTenants == 1
	})
	// The pass read the unchanged tenant's digest alone, and wrote nothing to it.
	if pass.Compared != 2 || pass.ReadInFull != 1 || pass.Error != "" {
		t.Fatalf("the pass: %+v, want 2 compared, 1 read in full", pass)
	}
	if s := f.get("steady"); !equality.Semantic.DeepEqual(s.Status.Drift, steadyBefore) ||
		!meta.IsStatusConditionFalse(s.Status.Conditions, tenantryv1.ConditionSchemaDrift) {
		t.Fatalf("the unchanged tenant: %+v, before the pass %+v", s.Status.Drift, steadyBefore)
	}

	// The opt-in repair refuses while planted code is there (what it makes again could call it), and
	// drops nothing. Once a person removed the code, it makes the release's missing index again.
	repair := func(token string) *tenantryv1.TenantDrift {
		t.Helper()
		tn := f.get("hacked")
		patch := client.MergeFrom(tn.DeepCopy())
		if tn.Annotations == nil {
			tn.Annotations = map[string]string{}
		}
		tn.Annotations[AnnotationRepairSchema] = token
		must(t, k8s.Patch(ctx, tn, patch))
		must(t, eventually(30*time.Second, func() error {
			if tn = f.get("hacked"); tn.Status.Drift.Repaired != token {
				return errNotYet
			}
			return nil
		}))
		return tn.Status.Drift
	}
	if d := repair("ticket-42"); !strings.Contains(d.RepairMessage, "remove it first") || d.Differences != 6 || d.Planted != 3 {
		t.Fatalf("a repair with planted code: %+v", d)
	}
	if n := f.count(`SELECT count(*) FROM pg_proc WHERE proname = 'keep_copy' AND pronamespace = $1::regnamespace`,
		f.schema("hacked")); n != 1 {
		t.Fatal("the repair dropped the planted function: nothing is dropped but by a person")
	}
	_, err = app.Exec(ctx, `BEGIN; SET LOCAL ROLE `+f.q("hacked")+`; SET LOCAL search_path = `+f.q("hacked")+`;
DROP TRIGGER keep_copy ON expenses; DROP FUNCTION keep_copy(); DROP VIEW all_users; COMMIT`)
	must(t, err)
	d = repair("ticket-43")
	if d.RepairMessage != "made again: index expenses_spent_on_idx" || d.Differences != 2 || d.Planted != 0 ||
		slices.Contains(d.Details, "missing index expenses_spent_on_idx") {
		t.Fatalf("after the repair: %+v", d)
	}

	// A release: each tenant is compared again once migrated, with the new release's shape.
	defer func() { must(t, release.Set(migrations.FS())) }()
	must(t, release.Set(releaseWith(t, "-- +goose Up\nALTER TABLE expenses ADD COLUMN receipt_url text;\n")))
	pokeAll(t, f, []string{"steady", "hacked"})
	if d := f.waitDriftAt("steady", migrations.Latest+1).Status.Drift; d.Differences != 0 {
		t.Fatalf("the untouched tenant after a release: %+v", d)
	}
	if d := f.waitDriftAt("hacked", migrations.Latest+1).Status.Drift; d.Differences != 2 {
		t.Fatalf("the hot-fixed tenant after a release: %+v", d)
	}
}

// The app's login plants a trigger in a tenant's schema, then holds a lock on one of its tables so that
// the schema cannot be read: the pass reports the tenant as not compared (SchemaDrift Unknown,
// CompareFailed, counted on the ExpenseApp) instead of keeping the comparison that said it matched, and
// the tenant stays Ready. Once the lock goes, the next pass finds the trigger.
func TestDriftPass_aLockedSchemaIsReportedNotHidden(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	start := time.Now().Add(-time.Second)
	must(t, k8s.Create(ctx, f.tenant("locked", "locked."+f.ns+".drift.test")))
	f.waitReady("locked")
	f.waitDrift("locked", start)
	app := f.appLogin()
	_, err := app.Exec(ctx, `BEGIN; SET LOCAL ROLE `+f.q("locked")+`; SET LOCAL search_path = `+f.q("locked")+`;
CREATE FUNCTION keep_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER keep_copy BEFORE INSERT ON expenses FOR EACH ROW EXECUTE FUNCTION keep_copy();
COMMIT`)
	must(t, err)
	tx, err := app.Begin(ctx)
	must(t, err)
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+f.q("locked")+"; LOCK TABLE "+f.q("locked")+".users IN ACCESS EXCLUSIVE MODE")
	must(t, err)

	pass := f.waitPass(f.askPass()).Status.Drift
	if pass.Failed != 1 || pass.Compared != 0 {
		t.Fatalf("the pass with the schema locked: %+v, want it counted as not compared", pass)
	}
	must(t, eventually(10*time.Second, func() error {
		c := meta.FindStatusCondition(f.get("locked").Status.Conditions, tenantryv1.ConditionSchemaDrift)
		if c == nil || c.Status != metav1.ConditionUnknown || c.Reason != tenantryv1.ReasonCompareFailed {
			return fmt.Errorf("SchemaDrift %+v", c)
		}
		return nil
	}))
	if !meta.IsStatusConditionTrue(f.get("locked").Status.Conditions, tenantryv1.ConditionReady) {
		t.Fatal("a tenant whose schema could not be compared is no longer Ready")
	}

	must(t, tx.Rollback(ctx))
	f.waitPass(f.askPass())
	must(t, eventually(10*time.Second, func() error {
		tn := f.get("locked")
		if c := meta.FindStatusCondition(tn.Status.Conditions, tenantryv1.ConditionSchemaDrift); c == nil ||
			c.Reason != tenantryv1.ReasonCodePlanted || tn.Status.Drift.Planted != 2 {
			return fmt.Errorf("SchemaDrift %+v, drift %+v", c, tn.Status.Drift)
		}
		return nil
	}))
}
