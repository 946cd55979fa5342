package limits

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestLimitsDocumented fails when an exported constant of this package is
// missing from docs/limits.md, so that the page lists every limit.
func TestLimitsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/limits.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "limits.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			for _, n := range spec.(*ast.ValueSpec).Names {
				if n.IsExported() {
					names = append(names, n.Name)
				}
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("found %d exported constants in limits.go; the parse missed some", len(names))
	}
	for _, n := range names {
		if !strings.Contains(string(doc), "`limits."+n+"`") {
			t.Errorf("docs/limits.md does not mention `limits.%s`: add it with its value, what enforces it and the error a client gets", n)
		}
	}
}
