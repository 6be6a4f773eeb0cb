// Package testenv finds what integration tests and benchmarks need from the machine.
package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnvtestAssets returns $KUBEBUILDER_ASSETS, or runs hack/envtest-assets.sh under the repository root to
// get etcd and kube-apiserver (built from the Go module proxy the first time) and returns their
// directory.
func EnvtestAssets(root string) (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	cmd := exec.Command(filepath.Join(root, "hack", "envtest-assets.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("getting envtest binaries (hack/envtest-assets.sh): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// GatewayAPI is the Gateway API release whose Go types the operator writes (go.mod requires the same);
// tests install its CRDs from it.
const GatewayAPI = "sigs.k8s.io/gateway-api@v1.6.3"

// ModuleDir returns the directory of a Go module version (module@version), from the module cache,
// downloading it from the Go module proxy the first time: how tests reach files that a project ships
// beside its Go code, such as the CRDs of the Prometheus Operator or the Gateway API.
func ModuleDir(moduleAtVersion string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", moduleAtVersion)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", moduleAtVersion, m.Error)
	}
	return m.Dir, nil
}
