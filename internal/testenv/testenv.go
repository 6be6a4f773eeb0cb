// Package testenv finds what integration tests and benchmarks need from the machine.
package testenv

import (
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
