package controller

import (
	"io/fs"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

func fsReadDir(fsys fs.FS) (map[string][]byte, error) {
	out := map[string][]byte{}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, err
		}
		out[e.Name()] = b
	}
	return out, nil
}

func fleetTenant(name string, version int64, failed bool) tenantryv1.Tenant {
	t := tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}}
	t.Status.SchemaVersion = version
	if failed {
		t.Status.Conditions = []metav1.Condition{{Type: tenantryv1.ConditionMigrationsApplied, Status: metav1.ConditionFalse,
			Reason: tenantryv1.ReasonMigrationFailed}}
	}
	return t
}

// The fleet's counts: a tenant is at the target by its status or by what the rollout did since; a
// failed one is named, whether the rollout or an earlier attempt recorded the failure.
func TestFleetStatus(t *testing.T) {
	tenants := []tenantryv1.Tenant{fleetTenant("a", 3, false), fleetTenant("b", 2, false), fleetTenant("c", 2, false),
		fleetTenant("d", 2, true), fleetTenant("e", 0, false)}
	view := rolloutView{versions: map[string]int64{"a": 3, "b": 3, "c": 2, "d": 2}, failed: []string{"c"}}
	atTarget, failed := fleetStatus(tenants, view, 3)
	if atTarget != 2 || strings.Join(failed, ",") != "c" {
		t.Fatalf("fleetStatus = %d at target, failed %v; want 2 (a by status, b by the rollout) and [c]", atTarget, failed)
	}
	// Without a rollout, a failure recorded in status still counts.
	atTarget, failed = fleetStatus(tenants, rolloutView{}, 3)
	if atTarget != 1 || strings.Join(failed, ",") != "d" {
		t.Fatalf("fleetStatus without a rollout = %d, %v; want 1 and [d]", atTarget, failed)
	}
	app := &tenantryv1.ExpenseApp{}
	app.Spec.Migrations.MaxFailures = 0
	if msg := haltMessage(app, 3, []string{"c", "d"}); !strings.Contains(msg, "2 tenant(s) failed (c, d)") ||
		!strings.Contains(msg, "budget of 0") {
		t.Fatalf("halt message %q", msg)
	}
}
