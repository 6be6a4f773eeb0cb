package install_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewManifest is what the test reads of the krew manifest hack/krew.sh writes.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// make build-installer packages the plugin for krew (hack/krew.sh): the manifest names each archive
// with its checksum, the archives are reproducible, and krew itself (the KREW binary that make test
// builds) installs the plugin from them into a krew root of its own, where it runs.
func TestKrew_manifestInstalls(t *testing.T) {
	krew := os.Getenv("KREW")
	if krew == "" {
		t.Fatal("KREW names no krew binary: run this test through make test, which builds one into bin/")
	}
	krew, err := filepath.Abs(krew)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	pack := func() []byte {
		cmd := exec.Command("hack/krew.sh")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "KREW_OUT="+out, "PLUGIN_PLATFORMS="+platform, "PLUGIN_VERSION=v0.0.1-test",
			"PLUGIN_URL=https://downloads.example.com/tenantry/v0.0.1-test")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hack/krew.sh: %v\n%s", err, b)
		}
		archive, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("kubectl-tenantry_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH)))
		if err != nil {
			t.Fatal(err)
		}
		return archive
	}
	archive := pack()
	raw, err := os.ReadFile(filepath.Join(out, "tenantry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatalf("the manifest is not YAML: %v", err)
	}
	sum := sha256.Sum256(archive)
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "tenantry" ||
		m.Spec.Version != "v0.0.1-test" || len(m.Spec.Platforms) != 1 {
		t.Fatalf("manifest: %+v", m)
	}
	p := m.Spec.Platforms[0]
	if p.Selector.MatchLabels["os"] != runtime.GOOS || p.Selector.MatchLabels["arch"] != runtime.GOARCH ||
		p.SHA256 != hex.EncodeToString(sum[:]) || p.Bin != "kubectl-tenantry" ||
		p.URI != fmt.Sprintf("https://downloads.example.com/tenantry/v0.0.1-test/kubectl-tenantry_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH) {
		t.Fatalf("manifest platform %+v, archive sha256 %x", p, sum)
	}
	if again := pack(); sha256.Sum256(again) != sum {
		t.Error("packing twice gave two archives: the manifest's checksum would not match a rebuilt release")
	}

	// krew installs it (checking the checksum) and links it into its bin/, where kubectl finds plugins.
	krewRoot := filepath.Join(t.TempDir(), "krew")
	install := exec.Command(krew, "install", "--manifest="+filepath.Join(out, "tenantry.yaml"),
		fmt.Sprintf("--archive=%s", filepath.Join(out, fmt.Sprintf("kubectl-tenantry_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH))))
	install.Env = append(os.Environ(), "KREW_ROOT="+krewRoot)
	if b, err := install.CombinedOutput(); err != nil {
		t.Fatalf("krew install: %v\n%s", err, b)
	}
	b, err := exec.Command(filepath.Join(krewRoot, "bin", "kubectl-tenantry"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(b), "kubectl-tenantry v0.0.1-test") {
		t.Fatalf("the installed plugin's version: %v\n%s", err, b)
	}
	for _, f := range []string{"kubectl_complete-tenantry", "kubectl-plugin.md"} {
		if _, err := os.Stat(filepath.Join(krewRoot, "store", "tenantry", "v0.0.1-test", f)); err != nil {
			t.Errorf("krew's store lacks %s: %v", f, err)
		}
	}
}
