package debroot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPrune: a build removes only the older builds of its own purpose.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	keep := "rootfs-bookworm-python-aaaaaaaaaaaa"
	names := []string{
		keep,
		"rootfs-bookworm-python-bbbbbbbbbbbb",   // an older python build: removed
		"rootfs-bookworm-systemd-cccccccccccc",  // another purpose
		"rootfs-bookworm-pythonx-dddddddddddd",  // another purpose, same prefix
		"rootfs-bookworm-python-x-eeeeeeeeeeee", // not a name Get makes
		"rootfs-bookworm-ffffffffffff",          // before purposes
	}
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(dir, n, "var/lib/dpkg"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	prune(dir, "python", filepath.Join(dir, keep))
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := slices.Delete(slices.Clone(names), 1, 2)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("after prune: %v, want %v", left, want)
	}
}

// TestGetCached: a cached tree is found whatever the order of the
// packages, and a tree cached under the name used before purposes is taken
// over (renamed), not rebuilt. Nothing here runs debootstrap.
func TestGetCached(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Get needs root")
	}
	dir := t.TempDir()
	legacy := filepath.Join(dir, "rootfs-bookworm-"+treeHash([]string{"dbus", "systemd"}, Mirror()))
	if err := os.MkdirAll(filepath.Join(legacy, "var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(legacy, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, pkgs := range [][]string{{"systemd", "dbus"}, {"dbus", "systemd", "dbus"}} {
		fs, err := get(context.Background(), dir, Spec{Purpose: "systemd", Packages: pkgs})
		if err != nil {
			t.Fatal(err)
		}
		if !fs.Cached || filepath.Base(fs.Dir) != "rootfs-bookworm-systemd-"+filepath.Base(legacy)[len("rootfs-bookworm-"):] {
			t.Errorf("get %d: %+v, want the legacy tree, cached under the systemd purpose", i, fs)
		}
		if !slices.Equal(fs.Packages, []string{"dbus", "systemd"}) {
			t.Errorf("get %d: packages %v", i, fs.Packages)
		}
	}
	if _, err := os.Stat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the legacy name is still there: %v", err)
	}
}

func TestGetPurpose(t *testing.T) {
	for _, p := range []string{"", "Python", "py-3", "../x"} {
		if _, err := get(context.Background(), t.TempDir(), Spec{Purpose: p}); err == nil || errors.Is(err, ErrUnavailable) {
			t.Errorf("purpose %q: %v, want refused", p, err)
		}
	}
}
