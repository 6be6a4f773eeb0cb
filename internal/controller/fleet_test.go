package controller

import (
	"io/fs"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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

func TestFleet_acquire(t *testing.T) {
	app := &tenantryv1.ExpenseApp{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"}}
	app.Spec.Migrations = tenantryv1.MigrationsSpec{Canary: 1, MaxFailures: 1}
	behind := []tenantryv1.Tenant{fleetTenant("a", 2, false), fleetTenant("b", 2, false), fleetTenant("c", 2, false)}
	tests := []struct {
		name     string
		tenants  []tenantryv1.Tenant
		inFlight int
		want     string // "" allowed, else part of the error
	}{
		{"first tenant is the canary", behind, 0, ""},
		{"others wait for the canary", behind, 1, "canary"},
		{"after the canary, everyone", []tenantryv1.Tenant{fleetTenant("a", 3, false), fleetTenant("b", 2, false), fleetTenant("c", 2, false)}, 5, ""},
		{"failures within the budget", []tenantryv1.Tenant{fleetTenant("a", 3, false), fleetTenant("b", 2, true), fleetTenant("c", 2, false)}, 0, ""},
		{"failures over the budget halt", []tenantryv1.Tenant{fleetTenant("a", 3, false), fleetTenant("b", 2, false), fleetTenant("c", 2, true), fleetTenant("d", 2, true)}, 0, "halted: 2 tenant(s) failed (c, d)"},
		{"a failed tenant may retry in a halt", []tenantryv1.Tenant{fleetTenant("a", 3, false), fleetTenant("b", 2, true), fleetTenant("c", 2, true)}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Fleet{inFlight: map[types.NamespacedName]int{{Namespace: "ns", Name: "app"}: tt.inFlight}}
			err := f.acquire(app, &tt.tenants[1], tt.tenants, 3)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("acquire: %v, want allowed", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("acquire: %v, want an error with %q", err, tt.want)
			}
		})
	}
}
