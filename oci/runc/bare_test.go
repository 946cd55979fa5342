package runc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunBare: a bare run of a program that succeeds is timed phase by
// phase; one that fails says how it exited.
func TestRunBare(t *testing.T) {
	e := newTestRuntime(t, nil)
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"/probe", "true"}, ""},
		{[]string{"/probe", "exit", "3"}, "the program "},
	} {
		root := filepath.Join(e.work, fmt.Sprintf("bare-%d", idCounter.Add(1)))
		if err := os.CopyFS(root, os.DirFS(probeDir)); err != nil {
			t.Fatal(err)
		}
		p, err := e.r.RunBare(root, filepath.Base(root), tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%v: %v; want an error with %q", tt.args, err, tt.wantErr)
		case tt.wantErr == "" && (p.Create <= 0 || p.Run <= 0 || p.Wait <= 0 || p.Destroy <= 0 || p.Total < p.Create+p.Run+p.Wait+p.Destroy):
			t.Errorf("%v: implausible phases %+v", tt.args, p)
		}
	}
}
