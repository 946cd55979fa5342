package limits

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestLimitsDocumented fails when a limit is missing from docs/limits.md:
// every exported constant of this package, and the policy ranges of the
// RunPod contract (runpod/policy.go), must be named there, so that the page
// lists every limit.
func TestLimitsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/limits.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, pkg string
		least     int // a parse that finds fewer missed some
	}{
		{"limits.go", "limits", 20},
		{"../../runpod/policy.go", "runpod", 5},
	} {
		f, err := parser.ParseFile(token.NewFileSet(), tc.file, nil, 0)
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
		if len(names) < tc.least {
			t.Fatalf("%s: found %d exported constants, want at least %d", tc.file, len(names), tc.least)
		}
		for _, n := range names {
			if !strings.Contains(string(doc), "`"+tc.pkg+"."+n+"`") {
				t.Errorf("docs/limits.md does not mention `%s.%s` (%s): add it with its value, what enforces it and the error a client gets", tc.pkg, n, tc.file)
			}
		}
	}
}
