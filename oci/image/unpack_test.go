package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// unpackEntries unpacks one layer built from ents into a fresh directory.
func unpackEntries(t *testing.T, ents []tent) string {
	t.Helper()
	dir := t.TempDir()
	m := newMeter(1<<30, &imageBudget{limit: 1 << 30})
	if err := newUnpacker(dir, m).unpack(context.Background(), tar.NewReader(bytes.NewReader(layerTar(t, ents...)))); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	return dir
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func missing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("%s exists (%v), want it absent", p, err)
	}
}

// TestUnpackSemantics covers tar semantics within one layer, in overlay
// format: later entries replace earlier ones, whiteouts only hide lower
// layers, metadata lands as the archive says.
func TestUnpackSemantics(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		ents  []tent
		check func(t *testing.T, dir string)
	}{
		{"whiteout then file of the same name keeps the file",
			[]tent{fileEnt(".wh.f", ""), fileEnt("f", "new")},
			func(t *testing.T, dir string) { checkContent(t, filepath.Join(dir, "f"), "new") }},
		{"file then whiteout of the same name keeps the file",
			[]tent{fileEnt("f", "new"), fileEnt(".wh.f", "")},
			func(t *testing.T, dir string) { checkContent(t, filepath.Join(dir, "f"), "new") }},
		{"whiteout then directory makes it opaque",
			[]tent{fileEnt(".wh.d", ""), dirEnt("d/"), fileEnt("d/x", "x")},
			func(t *testing.T, dir string) {
				checkOpaque(t, filepath.Join(dir, "d"), true)
				checkContent(t, filepath.Join(dir, "d/x"), "x")
			}},
		{"whiteout then implicit directory makes it opaque",
			[]tent{fileEnt(".wh.d", ""), fileEnt("d/x", "x")},
			func(t *testing.T, dir string) { checkOpaque(t, filepath.Join(dir, "d"), true) }},
		{"whiteout in an implicit directory",
			[]tent{fileEnt("a/b/.wh.c", "")},
			func(t *testing.T, dir string) {
				checkWhiteout(t, filepath.Join(dir, "a/b/c"))
				if st := lstat(t, filepath.Join(dir, "a/b")); st.Mode&0o777 != 0o755 {
					t.Errorf("implicit dir mode %o, want 755", st.Mode&0o777)
				}
			}},
		{"opaque marker on a directory given later",
			[]tent{fileEnt("d/.wh..wh..opq", ""), tent{name: "d/", typ: tar.TypeDir, mode: 0o700}},
			func(t *testing.T, dir string) {
				checkOpaque(t, filepath.Join(dir, "d"), true)
				if st := lstat(t, filepath.Join(dir, "d")); st.Mode&0o777 != 0o700 {
					t.Errorf("dir mode %o, want 700", st.Mode&0o777)
				}
			}},
		{"opaque marker at the layer root",
			[]tent{fileEnt(".wh..wh..opq", "")},
			func(t *testing.T, dir string) { checkOpaque(t, dir, true) }},
		{"AUFS metadata is ignored",
			[]tent{dirEnt(".wh..wh.plnk/"), fileEnt(".wh..wh.plnk/1.2", "x"), fileEnt(".wh..wh.aufs", ""), fileEnt("d/.wh..wh.x", "")},
			func(t *testing.T, dir string) {
				missing(t, filepath.Join(dir, ".wh..wh.aufs"))
				missing(t, filepath.Join(dir, ".wh..wh.plnk"))
				missing(t, filepath.Join(dir, "d"))
			}},
		{"directory replaced by a file",
			[]tent{dirEnt("d/"), fileEnt("d/x", "x"), fileEnt("d", "file")},
			func(t *testing.T, dir string) { checkContent(t, filepath.Join(dir, "d"), "file") }},
		{"later file replaces earlier",
			[]tent{fileEnt("f", "one"), fileEnt("./f", "two")},
			func(t *testing.T, dir string) { checkContent(t, filepath.Join(dir, "f"), "two") }},
		{"symlink replaced by a directory",
			[]tent{symEnt("s", "/etc"), dirEnt("s/"), fileEnt("s/x", "x")},
			func(t *testing.T, dir string) { checkContent(t, filepath.Join(dir, "s/x"), "x") }},
		{"setuid survives chown",
			[]tent{{name: "su", body: "x", mode: 0o4755, uid: 1000, gid: 1001}},
			func(t *testing.T, dir string) {
				st := lstat(t, filepath.Join(dir, "su"))
				if st.Mode&0o7777 != 0o4755 || st.Uid != 1000 || st.Gid != 1001 {
					t.Errorf("mode %o owner %d:%d, want 4755 1000:1001", st.Mode&0o7777, st.Uid, st.Gid)
				}
			}},
		{"read-only directory gets its mode after its children",
			[]tent{{name: "ro/", typ: tar.TypeDir, mode: 0o555}, fileEnt("ro/x", "x")},
			func(t *testing.T, dir string) {
				st, _ := os.Stat(filepath.Join(dir, "ro"))
				if st.Mode().Perm() != 0o555 || !st.ModTime().Equal(testTime) {
					t.Errorf("ro: %v %v, want 555 at %v", st.Mode(), st.ModTime(), testTime)
				}
			}},
		{"user xattrs kept, trusted ones from the archive dropped",
			[]tent{{name: "f", body: "x", pax: map[string]string{
				"SCHILY.xattr.user.k":                   "v",
				"SCHILY.xattr.trusted.overlay.opaque":   "y",
				"SCHILY.xattr.trusted.overlay.redirect": "/etc",
			}}},
			func(t *testing.T, dir string) {
				buf := make([]byte, 16)
				if n, err := unix.Lgetxattr(filepath.Join(dir, "f"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
					t.Errorf("user.k = %q, %v", buf[:n], err)
				}
				for _, k := range []string{"trusted.overlay.opaque", "trusted.overlay.redirect"} {
					if _, err := unix.Lgetxattr(filepath.Join(dir, "f"), k, buf); err == nil {
						t.Errorf("%s was set from the archive", k)
					}
				}
			}},
		{"fifo and hardlink to a symlink",
			[]tent{{name: "p", typ: tar.TypeFifo}, symEnt("s", "/nowhere"), linkEnt("h", "s")},
			func(t *testing.T, dir string) {
				if st := lstat(t, filepath.Join(dir, "p")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
					t.Errorf("p mode %o, want fifo", st.Mode)
				}
				if l, _ := os.Readlink(filepath.Join(dir, "h")); l != "/nowhere" {
					t.Errorf("h -> %q, want the symlink's hardlink", l)
				}
			}},
		{"layer root metadata",
			[]tent{{name: "./", typ: tar.TypeDir, mode: 0o750}, fileEnt("x", "x")},
			func(t *testing.T, dir string) {
				if st := lstat(t, dir); st.Mode&0o777 != 0o750 {
					t.Errorf("root mode %o, want 750", st.Mode&0o777)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, unpackEntries(t, tc.ents)) })
	}
}
