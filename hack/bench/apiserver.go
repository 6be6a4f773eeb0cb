package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/controller"
)

// apiserverFloor measures what one Tenant status patch costs the API server, the floor under every
// per-tenant status write of the operator: n patches one after another from one client, with the CRDs
// as shipped and with their CEL rules removed.
func apiserverFloor(ctx context.Context, n int) error {
	fmt.Printf("## API server cost of a Tenant status patch (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| CRDs | patches | wall per patch | kube-apiserver CPU per patch |")
	fmt.Println("|---|---:|---:|---:|")
	for _, withCEL := range []bool{true, false} {
		crds, err := loadCRDs(withCEL)
		if err != nil {
			return err
		}
		wall, cpu, err := patchStatuses(ctx, crds, n)
		if err != nil {
			return err
		}
		name := "as shipped (OpenAPI + CEL)"
		if !withCEL {
			name = "without the CEL rules"
		}
		fmt.Printf("| %s | %d | %.2f ms | %.2f ms |\n", name, n, ms64(wall), ms64(cpu))
	}
	fmt.Println()
	return nil
}

func ms64(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadCRDs(withCEL bool) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, _ := filepath.Glob(filepath.Join("config", "crd", "bases", "*.yaml"))
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		if !withCEL {
			stripKey(m, "x-kubernetes-validations")
		}
		b, _ = yaml.Marshal(m)
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(b, crd); err != nil {
			return nil, err
		}
		crds = append(crds, crd)
	}
	return crds, nil
}

func stripKey(v any, key string) {
	switch v := v.(type) {
	case map[string]any:
		delete(v, key)
		for _, e := range v {
			stripKey(e, key)
		}
	case []any:
		for _, e := range v {
			stripKey(e, key)
		}
	}
}

func patchStatuses(ctx context.Context, crds []*apiextensionsv1.CustomResourceDefinition, n int) (time.Duration, time.Duration, error) {
	env := &envtest.Environment{CRDs: crds, BinaryAssetsDirectory: os.Getenv("KUBEBUILDER_ASSETS")}
	cfg, err := env.Start()
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS = -1
	k, err := client.New(cfg, client.Options{Scheme: controller.NewScheme()})
	if err != nil {
		return 0, 0, err
	}
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "floor"}}); err != nil {
		return 0, 0, err
	}
	tenants := make([]*tenantryv1.Tenant, n)
	for i := range tenants {
		tenants[i] = benchTenant("floor", fmt.Sprintf("t%05d", i))
		tenants[i].Spec.Branding = tenantryv1.Branding{PrimaryColor: "#0b5fff", LogoURL: "https://example.com/logo.png"}
		if err := k.Create(ctx, tenants[i]); err != nil {
			return 0, 0, err
		}
	}
	cpu0, err := processCPU("kube-apiserver")
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for _, t := range tenants {
		before := t.DeepCopy()
		// What the operator writes for a Ready tenant.
		for _, typ := range []string{"Registered", "SchemaReady", "MigrationsApplied", "AdminReady", "Routed", "Ready"} {
			t.Status.Conditions = append(t.Status.Conditions, metav1.Condition{Type: typ, Status: metav1.ConditionTrue,
				Reason: "Succeeded", Message: "Tenant is live at http://" + t.Spec.Hosts[0] + "/ (schema tenant_x, version 2)",
				LastTransitionTime: metav1.Now(), ObservedGeneration: 1})
		}
		t.Status.ObservedGeneration, t.Status.SchemaVersion, t.Status.Schema = 1, 2, "tenant_"+t.Name
		if err := k.Status().Patch(ctx, t, client.MergeFrom(before)); err != nil {
			return 0, 0, err
		}
	}
	wall := time.Since(start)
	cpu1, err := processCPU("kube-apiserver")
	if err != nil {
		return 0, 0, err
	}
	return wall / time.Duration(n), (cpu1 - cpu0) / time.Duration(n), nil
}

// processCPU is the CPU time used so far by the processes of that name (there is one kube-apiserver).
func processCPU(name string) (time.Duration, error) {
	out, err := exec.Command("pgrep", "-x", name).Output()
	if err != nil {
		return 0, fmt.Errorf("finding %s: %w", name, err)
	}
	var total time.Duration
	for _, pid := range strings.Fields(string(out)) {
		if _, f, err := procStat(pid); err == nil {
			total += cpuTicks(f[11:13]) // utime, stime
		}
	}
	return total, nil
}
