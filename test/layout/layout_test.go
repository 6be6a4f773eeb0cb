// Package layout checks the repository's layers (docs/architecture.md): what ships links no harness, the
// operator and the app meet only in the registry's contract and the packages both need, and no import
// runs back up.
package layout

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "tenantry.dev/tenantry/"

// deps lists the module's own packages that pkg links, itself included.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath", "./"+pkg)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var own []string
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct{ ImportPath string }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if rest, ok := strings.CutPrefix(p.ImportPath, module); ok {
			own = append(own, rest)
		}
	}
	if len(own) == 0 {
		t.Fatalf("go list found nothing of %s", pkg)
	}
	return own
}

func TestLayout_layers(t *testing.T) {
	for _, c := range []struct {
		pkg    string
		forbid []string // prefixes of packages it must not link
		allow  []string // exceptions to them
		why    string
	}{
		{"cmd/manager", []string{"test/", "hack/"}, nil, "the operator's binary links no test or dev harness"},
		{"cmd/app", []string{"test/", "hack/"}, nil, "the app's binary links no test or dev harness"},
		{"internal/controller", []string{"app/"}, []string{"app/migrations"},
			"the operator reaches the app only through the registry's contract and the release's migrations"},
		{"internal/tenantdb", []string{"app/"}, []string{"app/migrations"}, "nor does its SQL"},
		{"app/http", []string{"internal/controller", "internal/tenantdb"}, nil, "the app links none of the operator"},
		{"internal/registry", []string{"internal/", "app/"}, []string{"internal/registry"}, "the contract depends on neither side"},
	} {
		for _, dep := range deps(t, c.pkg) {
			for _, f := range c.forbid {
				if strings.HasPrefix(dep, f) && !slices.Contains(c.allow, dep) {
					t.Errorf("%s links %s: %s", c.pkg, dep, c.why)
				}
			}
		}
	}
}
