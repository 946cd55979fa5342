package runc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckInit(t *testing.T) {
	dir := t.TempDir()
	exe, plain := filepath.Join(dir, "ember-init"), filepath.Join(dir, "plain")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, wantErr string
	}{
		{exe, ""},
		{"bin/ember-init", "not an absolute path"},
		{filepath.Join(dir, "missing"), "no such file"},
		{plain, "not an executable file"},
		{dir, "not an executable file"},
	} {
		err := checkInit(tc.path)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("checkInit(%s) = %v, want an error containing %q", tc.path, err, tc.wantErr)
		}
	}
}
