// Package install tests what a platform team installs: the Helm chart (dist/chart), the installer
// (dist/install.yaml) and the kustomize configuration (config/). The chart is linted and rendered with
// Helm's own Go SDK (no helm binary can be downloaded here); its CRDs and RBAC must be exactly the
// kustomize output's; every rendered manifest passes a server-side dry-run against a real API server;
// and the operator, run as the chart's ServiceAccount with nothing but the chart's RBAC, onboards
// tenants, also when it watches only some namespaces.
package install_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"tenantry.dev/tenantry/test/utils/manifests"
)

var root = filepath.Join("..", "..")

// chartDir is the chart a platform team installs.
var chartDir = filepath.Join(root, "dist", "chart")

// Release name and namespace of the chart in these tests: the names kustomize's config/default uses,
// so that both render the same objects.
const (
	releaseName      = "tenantry"
	releaseNamespace = "tenantry-system"
)

// everything turns on every optional part of the chart.
func everything(watch ...string) map[string]any {
	vals := map[string]any{
		"prometheus":    map[string]any{"enabled": true},
		"grafana":       map[string]any{"enabled": true},
		"networkPolicy": map[string]any{"enabled": true, "postgresCIDRs": []any{"10.10.0.0/16"}, "objectStoreCIDRs": []any{"10.20.0.0/16"}},
		"backup":        map[string]any{"objectStoreEndpoints": []any{"s3.internal.example.com", "10.20.0.5:8333"}},
		"databases":     map[string]any{"namespacedSecrets": true},
		"routePolicy": map[string]any{"deniedIngressAnnotations": []any{"*snippet*", "*/auth-*"},
			"allowedIngressAnnotations": []any{"cert-manager.io/*"}, "gatewayNamespaces": []any{"gateways", "edge"}},
	}
	if len(watch) > 0 {
		ns := make([]any, len(watch))
		for i, w := range watch {
			ns[i] = w
		}
		vals["watchNamespaces"] = ns
	}
	return vals
}

// render renders the chart as `helm template tenantry dist/chart -n tenantry-system` would.
func render(t *testing.T, vals map[string]any) []*unstructured.Unstructured {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	values, err := util.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace,
		IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(chrt, values)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, name := range names {
		if strings.HasSuffix(name, ".yaml") {
			out.WriteString("\n---\n" + files[name])
		}
	}
	objs, err := manifests.Decode(out.Bytes())
	if err != nil {
		t.Fatalf("the rendered chart is not YAML: %v", err)
	}
	return objs
}

// helm lint passes, strict (warnings fail too), with the defaults and with every option on.
func TestChart_lint(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "everything": everything("team-a", "team-b")} {
		l := action.NewLint()
		l.Strict, l.Namespace = true, releaseNamespace
		res := l.Run([]string{chartDir}, vals)
		for _, m := range res.Messages {
			t.Logf("%s: %s", name, m)
		}
		if len(res.Errors) > 0 {
			t.Errorf("%s: helm lint: %v", name, res.Errors)
		}
	}
}

// The chart's routePolicy and databases values reach the operator as its flags; left empty, the
// operator's defaults hold (no flag at all): no namespace names its database by a Secret of its own.
func TestChart_policyArgs(t *testing.T) {
	args := func(vals map[string]any) string {
		for _, o := range render(t, vals) {
			if o.GetKind() != "Deployment" {
				continue
			}
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				a, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
				return strings.Join(a, " ")
			}
		}
		t.Fatal("no Deployment rendered")
		return ""
	}
	got := args(everything())
	for _, want := range []string{"--denied-ingress-annotations=*snippet*,*/auth-*", "--allowed-ingress-annotations=cert-manager.io/*",
		"--gateway-namespaces=gateways,edge", "--namespaced-database-secrets"} {
		if !strings.Contains(got, want) {
			t.Errorf("operator args %q lack %q", got, want)
		}
	}
	if got := args(nil); strings.Contains(got, "ingress-annotations") || strings.Contains(got, "gateway-namespaces") ||
		strings.Contains(got, "namespaced-database-secrets") {
		t.Errorf("default values pass policy flags: %q", got)
	}
}

// key names an object by kind, namespace and name.
func key(o *unstructured.Unstructured) string {
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// essence is what an object of the CRD and RBAC kinds means: everything but its metadata's labels and
// annotations (which say who made it: Helm's labels, its keep policy).
func essence(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
	c.SetLabels(nil)
	c.SetAnnotations(nil)
	return c.Object
}

// The chart's CRDs and RBAC are exactly the kustomize output's, both ways: installing either gives the
// operator the same API and the same rights.
func TestChart_sameCRDsAndRBACAsKustomize(t *testing.T) {
	kinds := append([]string{"CustomResourceDefinition"}, manifests.RBACKinds...)
	fromKustomize, err := manifests.Kustomize(filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*unstructured.Unstructured{}
	for _, o := range manifests.Select(fromKustomize, kinds...) {
		if o.GetKind() != "Namespace" { // Helm installs into a namespace; it does not own it
			want[key(o)] = o
		}
	}
	got := map[string]*unstructured.Unstructured{}
	for _, o := range manifests.Select(render(t, nil), kinds...) {
		got[key(o)] = o
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("the chart has no %s", k)
			continue
		}
		if !reflect.DeepEqual(essence(g), essence(w)) {
			t.Errorf("%s differs:\nchart:     %v\nkustomize: %v", k, essence(g), essence(w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart has %s, which kustomize does not", k)
		}
	}
	if len(want) < 8 {
		t.Fatalf("only %d CRDs and RBAC objects compared", len(want))
	}
}

// The chart's copies of the CRDs, the manager's Role, the alerts and the dashboard are the ones in
// config/ (make manifests copies them), and dist/install.yaml is config/default as kustomize builds it
// (make build-installer writes it).
func TestDist_upToDate(t *testing.T) {
	same := func(a, b string) {
		t.Helper()
		x, err := os.ReadFile(filepath.Join(root, a))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(root, b))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs from %s: run make manifests", b, a)
		}
	}
	crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, c := range crds {
		same(filepath.Join("config", "crd", "bases", filepath.Base(c)), filepath.Join("dist", "chart", "files", "crds", filepath.Base(c)))
	}
	same("config/rbac/role.yaml", "dist/chart/files/manager-role.yaml")
	same("config/prometheus/rules.yaml", "dist/chart/files/alerts.yaml")
	same("config/grafana/tenantry-dashboard.json", "dist/chart/files/tenantry-dashboard.json")

	built, err := manifests.Kustomize(filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installer, err := manifests.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(installer) != len(built) {
		t.Fatalf("dist/install.yaml has %d objects, config/default %d: run make build-installer", len(installer), len(built))
	}
	byKey := map[string]*unstructured.Unstructured{}
	for _, o := range built {
		byKey[key(o)] = o
	}
	for _, o := range installer {
		if b, ok := byKey[key(o)]; !ok || !reflect.DeepEqual(o.Object, b.Object) {
			t.Errorf("dist/install.yaml: %s differs from config/default's: run make build-installer", key(o))
		}
	}
}

// Values the chart cannot mean are refused by its schema, naming the value, before anything renders: a
// misspelt key is not silently ignored.
func TestChart_valuesSchema(t *testing.T) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vals map[string]any
		want string
	}{
		{map[string]any{"watchNamespace": []any{"team-a"}}, "watchNamespace"},
		{map[string]any{"watchNamespaces": "team-a"}, "watchNamespaces"},
		{map[string]any{"watchNamespaces": []any{"Team_A"}}, "watchNamespaces"},
		{map[string]any{"manager": map[string]any{"replicas": -1}}, "replicas"},
		{map[string]any{"networkPolicy": map[string]any{"postgresPorts": []any{70000}}}, "postgresPorts"},
		{map[string]any{"routePolicy": map[string]any{"gatewayNamespaces": []any{"Gateways!"}}}, "gatewayNamespaces"},
		{map[string]any{"routePolicy": map[string]any{"deniedAnnotations": []any{"*snippet*"}}}, "deniedAnnotations"},
		{map[string]any{"backup": map[string]any{"objectStoreEndpoints": []any{"https://s3.example.com"}}}, "objectStoreEndpoints"},
	} {
		_, err := util.ToRenderValues(chrt, c.vals, common.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace,
			IsInstall: true}, common.DefaultCapabilities)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: %v, want an error naming %s", c.vals, err, c.want)
		}
	}
}
