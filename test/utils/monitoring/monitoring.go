// Package monitoring reads the alert rules and the dashboard that Tenantry ships (config/prometheus,
// config/grafana), so that tests can parse every PromQL expression with Prometheus's own parser and
// check every metric it names against what the operator and the app really expose.
package monitoring

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Files of the repository that hold PromQL.
const (
	RulesFile     = "config/prometheus/rules.yaml"
	DashboardFile = "config/grafana/tenantry-dashboard.json"
)

// Expr is one PromQL expression and where it is written.
type Expr struct {
	Where string // e.g. "config/prometheus/rules.yaml: alert TenantryRolloutHalted"
	Query string
}

// Load reads every expression of the rules and the dashboard under root (the repository).
func Load(root string) ([]Expr, error) {
	var exprs []Expr
	b, err := os.ReadFile(filepath.Join(root, RulesFile))
	if err != nil {
		return nil, err
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert, Record, Expr string
				}
			}
		}
	}
	if err := yaml.Unmarshal(b, &rule); err != nil {
		return nil, fmt.Errorf("%s: %w", RulesFile, err)
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, Expr{Where: fmt.Sprintf("%s: alert %s%s", RulesFile, r.Alert, r.Record), Query: r.Expr})
		}
	}
	if b, err = os.ReadFile(filepath.Join(root, DashboardFile)); err != nil {
		return nil, err
	}
	type panel struct {
		Title   string
		Targets []struct{ Expr string }
		Panels  json.RawMessage
	}
	var dash struct{ Panels []panel }
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("%s: %w", DashboardFile, err)
	}
	for len(dash.Panels) > 0 {
		p := dash.Panels[0]
		dash.Panels = dash.Panels[1:]
		for _, t := range p.Targets {
			exprs = append(exprs, Expr{Where: fmt.Sprintf("%s: panel %q", DashboardFile, p.Title), Query: t.Expr})
		}
		if len(p.Panels) > 0 { // a collapsed row holds its panels
			var inner []panel
			if err := json.Unmarshal(p.Panels, &inner); err != nil {
				return nil, fmt.Errorf("%s: panel %q: %w", DashboardFile, p.Title, err)
			}
			dash.Panels = append(dash.Panels, inner...)
		}
	}
	return exprs, nil
}

// MetricNames parses query and returns the metric names its selectors name, sorted.
func MetricNames(query string) ([]string, error) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(query)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					seen[m.Value] = true
				}
			}
		}
		return nil
	})
	if len(seen) == 0 {
		return nil, fmt.Errorf("%q names no metric", query)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Component says who exposes a metric: "app" (the expense app's tenantry_app_*), "prometheus" (up,
// which Prometheus makes for each target), or "operator" (everything else: Tenantry's own, and
// controller-runtime's, Go's and the process's).
func Component(name string) string {
	switch {
	case strings.HasPrefix(name, "tenantry_app_"):
		return "app"
	case name == "up":
		return "prometheus"
	}
	return "operator"
}

// Scrape parses a /metrics response in Prometheus's text format into its families, by name.
func Scrape(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Unexposed checks the metrics that the rules and dashboard under root name for one component (see
// Component) against a scrape of it: it returns each one missing, as "<where> names <metric>", and how
// many it checked (0 means the files name none of that component's metrics, itself worth failing on).
func Unexposed(root, component string, scrape io.Reader) (missing []string, checked int, err error) {
	families, err := Scrape(scrape)
	if err != nil {
		return nil, 0, err
	}
	exprs, err := Load(root)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range exprs {
		names, err := MetricNames(e.Query)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", e.Where, err)
		}
		for _, n := range names {
			if Component(n) != component {
				continue
			}
			checked++
			if !Exposed(families, n) {
				missing = append(missing, e.Where+" names "+n)
			}
		}
	}
	return missing, checked, nil
}

// Exposed says whether families (a scrape, by family name) hold name: the family itself, or a
// histogram's or summary's _bucket, _sum or _count series.
func Exposed(families map[string]*dto.MetricFamily, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := families[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM ||
			(suffix != "_bucket" && f.GetType() == dto.MetricType_SUMMARY)) {
			return true
		}
	}
	return false
}
