// Package argocd tests the Argo CD health check of Tenantry's kinds with the Lua interpreter Argo CD
// itself embeds (gopher-lua).
package argocd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

func TestHealth(t *testing.T) {
	script, err := os.ReadFile("health.lua")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test cases")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(raw), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s does not start with '# want: <status>: <message part>'", f)
			}
			wantStatus, wantMsg, _ := strings.Cut(want, ": ")
			var obj map[string]any
			if err := yaml.Unmarshal(raw, &obj); err != nil {
				t.Fatal(err)
			}
			status, msg := run(t, string(script), obj)
			if status != wantStatus || !strings.Contains(msg, wantMsg) {
				t.Fatalf("health = %s %q, want %s with %q", status, msg, wantStatus, wantMsg)
			}
		})
	}
}

// The ConfigMap patch users apply carries the script verbatim, for both kinds.
func TestHealth_patchMatchesScript(t *testing.T) {
	script, _ := os.ReadFile("health.lua")
	raw, err := os.ReadFile("argocd-cm-patch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Tenant", "ExpenseApp"} {
		if got := cm.Data["resource.customizations.health.tenantry.dev_"+kind]; strings.TrimSpace(got) != strings.TrimSpace(string(script)) {
			t.Errorf("argocd-cm-patch.yaml's script for %s differs from health.lua", kind)
		}
	}
}

func run(t *testing.T, script string, obj map[string]any) (string, string) {
	t.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	fn, err := L.LoadString(script)
	if err != nil {
		t.Fatal(err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatal(err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("script returned %v, want a table", L.Get(-1))
	}
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

// toLua converts decoded YAML the way Argo CD hands objects to health scripts.
func toLua(ls *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := ls.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(ls, e))
		}
		return t
	case []any:
		t := ls.NewTable()
		for _, e := range v {
			t.Append(toLua(ls, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	return lua.LString("")
}
