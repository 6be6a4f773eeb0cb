package monitoring

import (
	"strings"
	"testing"
)

// Every alert and every dashboard panel parses with Prometheus's own parser and names a metric.
func TestLoad_everyExpressionParses(t *testing.T) {
	exprs, err := Load("../../..")
	if err != nil {
		t.Fatal(err)
	}
	alerts, panels := 0, 0
	for _, e := range exprs {
		if strings.Contains(e.Where, "alert ") {
			alerts++
		} else {
			panels++
		}
		if _, err := MetricNames(e.Query); err != nil {
			t.Errorf("%s: %v", e.Where, err)
		}
	}
	// What the issue asks alerts for: tenants not Ready, a halted rollout, migration failures, the app
	// down or failing, the database unreachable; and (the drift issue) drifted schemas and planted code.
	for _, want := range []string{"TenantryTenantsNotReady", "TenantryRolloutHalted", "TenantryMigrationsFailing",
		"TenantryAppDown", "TenantryAppServerErrors", "TenantryDatabaseUnreachable", "TenantryCodePlanted", "TenantrySchemaDrift"} {
		found := false
		for _, e := range exprs {
			found = found || strings.HasSuffix(e.Where, "alert "+want)
		}
		if !found {
			t.Errorf("no alert %s", want)
		}
	}
	if alerts == 0 || panels == 0 {
		t.Fatalf("%d alerts and %d panel queries loaded", alerts, panels)
	}
}

// The parser is the judge: a broken expression is an error, not a name.
func TestMetricNames(t *testing.T) {
	names, err := MetricNames(`sum(rate(a_total{x="1"}[5m])) / ignoring(state) b{state="max"} > 0 or absent(up == 1)`)
	if err != nil || strings.Join(names, ",") != "a_total,b,up" {
		t.Fatalf("MetricNames = %v, %v", names, err)
	}
	if _, err := MetricNames(`sum(rate(a_total[5m])`); err == nil {
		t.Fatal("an unbalanced expression parsed")
	}
	if _, err := MetricNames(`vector(1)`); err == nil {
		t.Fatal("an expression naming no metric passed")
	}
}
