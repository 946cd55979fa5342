package runpod

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestPolicyDocumented fails when a constant of policy.go is missing from
// docs/limits.md.
func TestPolicyDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/limits.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "policy.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			for _, id := range spec.(*ast.ValueSpec).Names {
				n++
				if !strings.Contains(string(doc), "`runpod."+id.Name+"`") {
					t.Errorf("docs/limits.md does not mention `runpod.%s`", id.Name)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no constants found in policy.go")
	}
}
