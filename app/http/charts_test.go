package http

import (
	"strings"
	"testing"
	"time"

	"tenantry.dev/tenantry/app"
)

func TestCompact(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{75000, "EUR", "750"},
		{123456, "EUR", "1.2k"},
		{4500000, "EUR", "45k"},
		{123456789, "EUR", "1.2M"},
		{1500, "JPY", "1.5k"},
	}
	for _, tt := range tests {
		if got := compact(tt.minor, tt.currency); got != tt.want {
			t.Errorf("compact(%d, %s) = %q, want %q", tt.minor, tt.currency, got, tt.want)
		}
	}
}

// The charts escape department names and label what they show.
func TestCharts(t *testing.T) {
	svg := string(budgetChart([]app.DepartmentMonth{{Name: `R&D <"x">`, BudgetMinor: 100000, SpentMinor: 120000}}, "EUR"))
	if strings.Contains(svg, `<"x">`) || !strings.Contains(svg, "R&amp;D") {
		t.Fatalf("department name not escaped: %s", svg)
	}
	if !strings.Contains(svg, `class="over"`) {
		t.Fatal("spending over the budget is not marked")
	}
	trend := string(trendChart([]app.MonthTotal{{Month: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), SpentMinor: 75000}}, "EUR"))
	if !strings.Contains(trend, "November 2026: 750.00 EUR") || !strings.Contains(trend, ">750<") {
		t.Fatalf("trend chart: %s", trend)
	}
}
