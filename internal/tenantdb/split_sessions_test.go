package tenantdb

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The two kinds of session stay apart in the code, not only at run time: TenantSession has no way to
// the admin pool (no field of type *DB), and of DB's methods only the ones that open and close the
// tenant sessions' pool touch it (DB.tenant); everything else reaches a tenant schema through Session.
// The tenant login itself, acting as no tenant, is used by these alone: Session (which switches to the
// tenant), GrantWorker (which only makes sure it exists) and ShapeDigests (catalog rows only).
func TestSessions_keptApartInTheCode(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"tenantLogin": true, "Close": true}
	loginUsers := map[string]bool{"Session": true, "GrantWorker": true, "ShapeDigests": true}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			if g, ok := decl.(*ast.GenDecl); ok {
				for _, spec := range g.Specs {
					ts, ok := spec.(*ast.TypeSpec)
					if !ok || ts.Name.Name != "TenantSession" {
						continue
					}
					for _, field := range ts.Type.(*ast.StructType).Fields.List {
						if star, ok := field.Type.(*ast.StarExpr); ok && isIdent(star.X, "DB") {
							t.Errorf("%s: TenantSession holds a *DB, and so the admin pool", name)
						}
					}
				}
			}
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil || allowed[fn.Name.Name] {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "tenantLogin" && !loginUsers[fn.Name.Name] {
					t.Errorf("%s: %s uses the operator's tenant login acting as no tenant (%s): only %v may",
						name, fn.Name.Name, fset.Position(sel.Pos()), loginUsers)
				}
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "tenant" {
					if isIdent(sel.X, "db") {
						t.Errorf("%s: %s uses the tenant sessions' pool directly (%s); go through Session",
							name, fn.Name.Name, fset.Position(sel.Pos()))
					}
				}
				return true
			})
		}
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
