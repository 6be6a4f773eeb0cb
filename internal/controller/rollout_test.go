package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
)

// slowRelease is the embedded migrations plus one that takes a moment per schema, so that a fault can
// land in the middle of a rollout.
func slowRelease(t *testing.T) {
	t.Helper()
	must(t, release.Set(releaseWith(t, `-- +goose Up
ALTER TABLE expenses ADD COLUMN receipt_url text;
SELECT pg_sleep(0.1);
`)))
}

// slowRollout onboards n tenants (named prefix00, prefix01, ...) and starts a release of slowRelease
// over them, one schema at a time, so that it is still under way when it returns: once the first
// schema is at the new version, next. The embedded release is back when the test ends.
func slowRollout(t *testing.T, f *fixture, prefix string, n int) (names []string, next int64) {
	t.Helper()
	ctx := context.Background()
	names = make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%02d", prefix, i)
		must(t, k8s.Create(ctx, f.tenant(names[i], names[i]+".example.com")))
	}
	for _, name := range names {
		f.waitReady(name)
	}
	app := f.getApp()
	patch := client.MergeFrom(app.DeepCopy())
	app.Spec.Migrations.MaxConcurrent = 1
	must(t, k8s.Patch(ctx, app, patch))
	t.Cleanup(func() { must(t, release.Set(migrations.FS())) })
	slowRelease(t)
	next = migrations.Latest + 1
	pokeAll(t, f, names)
	must(t, eventually(30*time.Second, func() error {
		if f.registryAt(next) == 0 {
			return errNotYet
		}
		return nil
	}))
	return names, next
}

// registryAt counts the fixture's tenants the registry records at version v or later.
func (f *fixture) registryAt(v int64) int {
	return f.count(`SELECT count(*) FROM tenantry.tenants WHERE namespace = $1 AND schema_version >= $2`, f.ns, v)
}

// PostgreSQL restarts in the middle of a rollout: the schemas it interrupted are tried again, the rollout
// completes without anyone stepping in, no schema is migrated twice, and every Tenant ends at the new
// version.
func TestRollout_databaseRestart(t *testing.T) {
	f := newFixture(t)
	names, next := slowRollout(t, f, "pr", 12)
	if done := f.registryAt(next); done == len(names) {
		t.Fatal("the rollout finished before PostgreSQL stopped: no fault was tested")
	}
	must(t, pg.Stop())
	restarted := false
	defer func() {
		if !restarted {
			_ = pg.Start()
		}
	}()
	time.Sleep(time.Second) // the rollout meets the outage (a fault, not a wait for a condition)
	must(t, pg.Start())
	restarted = true

	app := f.waitApp("every tenant at the new version", func(a *tenantryv1.ExpenseApp) bool {
		return a.Status.TenantsAtTarget == int32(len(names)) && a.Status.TargetSchemaVersion == next
	})
	if c := meta.FindStatusCondition(app.Status.Conditions, tenantryv1.ConditionFleetMigrated); c == nil || c.Status != "True" {
		t.Fatalf("FleetMigrated after the outage: %+v", c)
	}
	for _, n := range names {
		if rows := f.count(`SELECT count(*) FROM `+f.q(n)+`.goose_db_version WHERE version_id = $1`, next); rows != 1 {
			t.Errorf("%s: %d version rows for %d, want exactly one", n, rows, next)
		}
	}
	must(t, eventually(30*time.Second, func() error {
		for _, n := range names {
			if f.get(n).Status.SchemaVersion != next {
				return errNotYet
			}
		}
		return nil
	}))
}

// Ready tenants catch up with a rollout: an Ingress deleted under a tenant in the middle of the rollout
// is back afterwards, and every status shows the new version.
func TestRollout_readyTenantsCatchUp(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	names, next := slowRollout(t, f, "cu", 8)
	last := names[len(names)-1]
	must(t, k8s.Delete(ctx, &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: last}}))
	if f.registryAt(next) == len(names) {
		t.Fatal("the rollout finished before the Ingress went: nothing was tested")
	}
	must(t, eventually(30*time.Second, func() error {
		for _, n := range names {
			if v := f.get(n).Status.SchemaVersion; v != next {
				return fmt.Errorf("%s: status.schemaVersion %d, want %d", n, v, next)
			}
		}
		return k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: last}, &networkingv1.Ingress{})
	}))
}
