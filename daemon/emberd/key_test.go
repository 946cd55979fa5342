package emberd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	good := "ember_" + strings.Repeat("3", 40)
	for _, tt := range []struct {
		name, content string
		mode          os.FileMode
		err           []string // substrings of the error; nil for none
	}{
		{"good", good + "\n", 0o600, nil},
		{"owner read-only", good, 0o400, nil},
		{"exactly 32", strings.Repeat("k", 32), 0o600, nil},
		{"readable by others", good, 0o644, []string{"mode 0644", "chmod 600 " + filepath.Join(dir, "readable_by_others")}},
		{"readable by group", good, 0o640, []string{"chmod 600"}},
		{"one character", "x\n", 0o600, []string{"1 characters, under the 32", "delete the file to have a new one made", "or write a longer key"}},
		{"31 characters", strings.Repeat("k", 31), 0o600, []string{"31 characters"}},
		{"empty", "\n", 0o600, []string{"is empty", "delete it"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			k, err := LoadOrCreateKey(path)
			if tt.err == nil {
				if err != nil || k != strings.TrimSpace(tt.content) {
					t.Fatalf("LoadOrCreateKey = %q, %v", k, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q with mode %v", tt.content, tt.mode)
			}
			for _, s := range tt.err {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if c := strings.TrimSpace(tt.content); len(c) > 8 && strings.Contains(err.Error(), c) {
				t.Errorf("error %q quotes the key", err)
			}
		})
	}
	// Missing: made, 0600, long enough, and accepted on the next start.
	path := filepath.Join(dir, "sub", "api.key")
	k, err := LoadOrCreateKey(path)
	if err != nil || len(k) < 32 || !strings.HasPrefix(k, "ember_") {
		t.Fatalf("created %q, %v", k, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("created with mode %v", fi.Mode().Perm())
	}
	if k2, err := LoadOrCreateKey(path); err != nil || k2 != k {
		t.Errorf("reloaded %q, %v", k2, err)
	}
}
