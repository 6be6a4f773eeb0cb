package controller

import (
	"context"
	"net/http"
	"testing"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/test/utils/monitoring"
)

// Every operator metric that the shipped alerts and dashboard name (config/prometheus,
// config/grafana) is on the running operator's /metrics once it has onboarded a tenant.
func TestMonitoring_operatorMetricsExposed(t *testing.T) {
	f := newFixture(t)
	must(t, k8s.Create(context.Background(), f.tenant("mon", "mon.example.com")))
	f.waitReady("mon")
	f.waitApp("its fleet counted", func(a *tenantryv1.ExpenseApp) bool { return a.Status.Tenants == 1 })

	resp, err := http.Get(metricsURL)
	must(t, err)
	defer resp.Body.Close()
	missing, checked, err := monitoring.Unexposed("../..", "operator", resp.Body)
	must(t, err)
	for _, m := range missing {
		t.Errorf("%s, which the operator does not expose", m)
	}
	if checked == 0 {
		t.Fatal("no operator metric named in the rules or the dashboard")
	}
}
