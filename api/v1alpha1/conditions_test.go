package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// Every condition reason is documented here, is set somewhere by a reconciler, and is the only kind of
// reason they set: each call that sets a reason (a condition, a step's error) names one of these
// constants, never a string of its own or another package's.
func TestReasons_documentedAndUsed(t *testing.T) {
	fset := token.NewFileSet()
	conditions, err := parser.ParseFile(fset, "conditions.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, decl := range conditions.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for _, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Reason") {
					continue
				}
				declared[name.Name] = true
				if vs.Doc == nil || !strings.HasPrefix(vs.Doc.Text(), name.Name+":") {
					t.Errorf("%s has no doc comment saying, after %q, the one situation it names", name.Name, name.Name+":")
				}
			}
		}
	}

	// Where a reason is set: the argument of these functions, or the reason field of a literal.
	reasonArg := map[string]int{"retryErr": 0, "waitErr": 0, "stallErr": 0, "asStepError": 1, "setCondition": 3, "setAppCondition": 3}
	used := map[string]bool{}
	files, err := filepath.Glob("../../internal/controller/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no controller sources: %v", err)
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		check := func(e ast.Expr) {
			switch e := e.(type) {
			case *ast.Ident: // a helper handing on its parameter
				if e.Name == "reason" || e.Name == "fallbackReason" {
					return
				}
			case *ast.BasicLit: // a pending step, which sets no reason
				if e.Value == `""` {
					return
				}
			case *ast.SelectorExpr:
				if x, ok := e.X.(*ast.Ident); ok && x.Name == "tenantryv1" && strings.HasPrefix(e.Sel.Name, "Reason") {
					return
				}
				if e.Sel.Name == "reason" { // a step error's own reason, handed on
					return
				}
			}
			t.Errorf("%s: a reason that is not one of api/v1alpha1's Reason constants", fset.Position(e.Pos()))
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "tenantryv1" && strings.HasPrefix(n.Sel.Name, "Reason") {
					used[n.Sel.Name] = true
				}
			case *ast.CallExpr:
				if fn, ok := n.Fun.(*ast.Ident); ok {
					if i, ok := reasonArg[fn.Name]; ok && i < len(n.Args) {
						check(n.Args[i])
					}
				}
			case *ast.KeyValueExpr:
				if key, ok := n.Key.(*ast.Ident); ok && (key.Name == "reason" || key.Name == "Reason") {
					if _, isCompare := n.Value.(*ast.BinaryExpr); !isCompare {
						check(n.Value)
					}
				}
			}
			return true
		})
	}
	for name := range declared {
		if !used[name] {
			t.Errorf("%s is declared but no reconciler sets it", name)
		}
	}
}
