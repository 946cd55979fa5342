package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
)

// format writes an image set in one of the accepted input formats and
// returns the path to import.
type format struct {
	name  string
	write func(t *testing.T, dir string, imgs []*built, names []string) string
}

var formats = []format{
	{"docker-save legacy", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTar(t, filepath.Join(dir, "save.tar"), dockerFiles(t, imgs, tagLists(names), false), false)
	}},
	{"docker-save docker25", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTar(t, filepath.Join(dir, "save.tar"), dockerFiles(t, imgs, tagLists(names), true), false)
	}},
	{"docker-save gzipped", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTar(t, filepath.Join(dir, "save.tar.gz"), dockerFiles(t, imgs, tagLists(names), false), true)
	}},
	{"docker-save zstd archive", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTarWith(t, filepath.Join(dir, "save.tar.zst"), dockerFiles(t, imgs, tagLists(names), true), zstdCompressed)
	}},
	{"oci-layout dir", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeDir(t, filepath.Join(dir, "layout"), ociFiles(imgs, descs(imgs, names)))
	}},
	{"oci-archive", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTar(t, filepath.Join(dir, "oci.tar"), ociFiles(imgs, descs(imgs, names)), false)
	}},
	{"oci-archive zstd", func(t *testing.T, dir string, imgs []*built, names []string) string {
		return writeTarWith(t, filepath.Join(dir, "oci.tar.zst"), ociFiles(imgs, descs(imgs, names)), zstdCompressed)
	}},
}

func tagLists(names []string) [][]string {
	var out [][]string
	for _, n := range names {
		if n == "" {
			out = append(out, nil)
		} else {
			out = append(out, []string{n})
		}
	}
	return out
}

func descs(imgs []*built, names []string) []descriptor {
	var out []descriptor
	for i, img := range imgs {
		out = append(out, img.manifestDesc(names[i]))
	}
	return out
}

// TestImportFormats imports the two-layer test image from every format,
// with uncompressed, gzip and zstd layers, and checks the unpacked layers,
// the stored manifest and what Resolve returns.
func TestImportFormats(t *testing.T) {
	requireRoot(t)
	for _, f := range formats {
		for _, comp := range []compression{uncompressed, gzipped, zstdCompressed} {
			t.Run(f.name+[]string{" plain", " gzip", " zstd"}[comp], func(t *testing.T) {
				s := openStore(t, Options{})
				img := buildImageWith(t, comp, baseLayer(t), topLayer(t))
				path := f.write(t, t.TempDir(), []*built{img}, []string{"docker.io/library/hello:1.0"})
				var calls []int64
				var last, lastTotal int64
				got, err := s.Import(context.Background(), path, ImportOptions{Progress: func(done, total int64) {
					calls = append(calls, done)
					if done < last || done > total {
						t.Errorf("progress went %d -> %d of %d", last, done, total)
					}
					last, lastTotal = done, total
				}})
				if err != nil {
					t.Fatal(err)
				}
				if len(calls) == 0 || last != lastTotal {
					t.Errorf("progress: %d calls, last %d of %d; want a final call with done == total", len(calls), last, lastTotal)
				}
				if !slices.Equal(got.Names, []string{"hello:1.0"}) || got.ID != digestOf(img.config) {
					t.Errorf("imported %v id %s; want [hello:1.0] id %s", got.Names, got.ID, digestOf(img.config))
				}
				checkResolved(t, s, "hello:1.0", img)
				checkLayerDirs(t, s, "docker.io/library/hello:1.0")
				checkStoredManifest(t, s, got, img)
			})
		}
	}
}

// checkStoredManifest checks the stored image against what was built: diff IDs
// (the digests of the uncompressed tars), blob digests, and the manifest
// (the archive's, or the one synthesized for docker save) with the
// layers' compression in their media types.
func checkStoredManifest(t *testing.T, s *Store, got Image, img *built) {
	t.Helper()
	b, err := os.ReadFile(s.blobPath(got.Digest))
	if err != nil {
		t.Fatal(err)
	}
	var m ociManifest
	if err := decodeJSON(b, &m, "stored manifest"); err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != len(img.layers) || len(m.Layers) != len(img.layers) {
		t.Fatalf("%d image layers, %d manifest layers; want %d", len(got.Layers), len(m.Layers), len(img.layers))
	}
	for i, l := range got.Layers {
		if l.DiffID != img.diffIDs[i] || l.Blob != digestOf(img.layers[i]) {
			t.Errorf("layer %d: diff ID %s blob %s; want %s and %s", i, l.DiffID, l.Blob, img.diffIDs[i], digestOf(img.layers[i]))
		}
		if d := m.Layers[i]; d.MediaType != img.layerMT[i] || d.Digest != l.Blob {
			t.Errorf("manifest layer %d: %s %s; want %s %s", i, d.MediaType, d.Digest, img.layerMT[i], l.Blob)
		}
	}
}

// checkResolved checks Resolve's layer order (top first, short paths under
// l/) and config.
func checkResolved(t *testing.T, s *Store, ref string, img *built) {
	t.Helper()
	rfs, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(rfs.Layers) != len(img.diffIDs) {
		t.Fatalf("resolved %d layers, want %d", len(rfs.Layers), len(img.diffIDs))
	}
	for i, dir := range rfs.Layers {
		diff := img.diffIDs[len(img.diffIDs)-1-i]
		want := filepath.Join(s.Dir(), "l", strings.TrimPrefix(diff, "sha256:")[:12])
		if dir != want {
			t.Errorf("layer %d is %s, want %s (top first, l/<12 hex>)", i, dir, want)
		}
	}
	want := oci.ImageConfig{Entrypoint: testConfig.Entrypoint, Cmd: testConfig.Cmd, Env: testConfig.Env, WorkingDir: testConfig.WorkingDir, User: testConfig.User}
	if !equalConfig(rfs.Config, want) {
		t.Errorf("config %+v, want %+v", rfs.Config, want)
	}
}

func equalConfig(a, b oci.ImageConfig) bool {
	return slices.Equal(a.Entrypoint, b.Entrypoint) && slices.Equal(a.Cmd, b.Cmd) && slices.Equal(a.Env, b.Env) &&
		a.WorkingDir == b.WorkingDir && a.User == b.User
}

// checkLayerDirs checks the unpacked test image in overlay format.
func checkLayerDirs(t *testing.T, s *Store, ref string) {
	t.Helper()
	rfs, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	top, base := rfs.Layers[0], rfs.Layers[1]
	checkWhiteout(t, filepath.Join(top, "etc/remove-me"))
	checkOpaque(t, filepath.Join(top, "data"), true)
	checkOpaque(t, filepath.Join(top, "etc"), false)
	checkContent(t, filepath.Join(top, "etc/greeting"), "hello from layer 2\n")
	checkContent(t, filepath.Join(base, "etc/greeting"), "hello from layer 1\n")
	checkContent(t, filepath.Join(base, "etc/remove-me"), "doomed\n")

	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(base, "etc/greeting"), &a)
	unix.Lstat(filepath.Join(base, "etc/greeting.hard"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d, nlink %d; want one inode, 2 links", a.Ino, b.Ino, a.Nlink)
	}
	if l, err := os.Readlink(filepath.Join(base, "etc/greeting.link")); err != nil || l != "greeting" {
		t.Errorf("symlink: %q, %v", l, err)
	}
	st, err := os.Stat(filepath.Join(base, "bin/hello"))
	if err != nil || st.Mode().Perm() != 0o755 || !st.ModTime().Equal(testTime) {
		t.Errorf("bin/hello: %v %v", st, err)
	}
}

func checkWhiteout(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("whiteout %s: %v", p, err)
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout %s: mode %o rdev %d; want a 0:0 character device", p, st.Mode, st.Rdev)
	}
}

func checkOpaque(t *testing.T, dir string, want bool) {
	t.Helper()
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(dir, overlayOpaqueXattr, buf)
	got := err == nil && string(buf[:n]) == "y"
	if got != want {
		t.Errorf("%s opaque = %v (%v), want %v", dir, got, err, want)
	}
}

func checkContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", p, b, err, want)
	}
}

// TestOverlayMount mounts the resolved layers as overlayfs, checks the
// merged view and runs the static program from layer 1 inside it.
func TestOverlayMount(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	img := buildImage(t, true, baseLayer(t), topLayer(t))
	path := writeDir(t, t.TempDir(), ociFiles([]*built{img}, descs([]*built{img}, []string{"hello"})))
	if _, err := s.Import(context.Background(), path, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	rfs, err := s.Resolve("hello")
	if err != nil {
		t.Fatal(err)
	}
	merged := mountOverlay(t, rfs.Layers)
	if _, err := os.Lstat(filepath.Join(merged, "etc/remove-me")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whited-out file: %v, want not exist", err)
	}
	checkContent(t, filepath.Join(merged, "etc/greeting"), "hello from layer 2\n")
	checkContent(t, filepath.Join(merged, "etc/greeting.hard"), "hello from layer 1\n")
	ents, _ := os.ReadDir(filepath.Join(merged, "data"))
	if len(ents) != 1 || ents[0].Name() != "new1" {
		t.Errorf("opaque /data shows %v, want only new1", ents)
	}

	cmd := exec.Command(rfs.Config.Entrypoint[0], rfs.Config.Cmd...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: merged}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	want := "greeting=hello from layer 2 removed=true data=[new1] args=[from-cmd]\n"
	if err != nil || string(out) != want {
		t.Errorf("running /bin/hello in the merged root: %q, %v; want %q", out, err, want)
	}
}

// mountOverlay mounts layers (top first) with a private upper directory
// and returns the merged directory, unmounted at the end of the test.
func mountOverlay(t *testing.T, layers []string) string {
	t.Helper()
	work := t.TempDir()
	merged, upper, wd := filepath.Join(work, "m"), filepath.Join(work, "u"), filepath.Join(work, "w")
	for _, d := range []string{merged, upper, wd} {
		os.Mkdir(d, 0o755)
	}
	opts := "lowerdir=" + strings.Join(layers, ":") + ",upperdir=" + upper + ",workdir=" + wd
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay (%s): %v", opts, err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	return merged
}

// TestRepeatedLayers imports an image with the same layer at two places,
// as images with several empty layers have. docker save stores the copy as
// a symlink. The layer is unpacked once and listed once (at the top), which
// overlayfs needs and which keeps the merged view exact: here the upper
// copy re-creates a file the layer between them deleted.
func TestRepeatedLayers(t *testing.T) {
	requireRoot(t)
	again := layerTar(t, fileEnt("f", "from the repeated layer"))
	del := layerTar(t, fileEnt(".wh.f", ""), fileEnt("g", "g"))
	img := buildImage(t, false, again, del, again)
	for _, f := range []format{formats[0], formats[4]} {
		t.Run(f.name, func(t *testing.T) {
			s := openStore(t, Options{})
			if _, err := s.Import(context.Background(), f.write(t, t.TempDir(), []*built{img}, []string{"rep"}), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			rfs, err := s.Resolve("rep")
			if err != nil {
				t.Fatal(err)
			}
			if len(rfs.Layers) != 2 || countEntries(t, filepath.Join(s.Dir(), "l")) != 2 {
				t.Fatalf("resolved %v; want the two distinct layers", rfs.Layers)
			}
			merged := mountOverlay(t, rfs.Layers)
			checkContent(t, filepath.Join(merged, "f"), "from the repeated layer")
			checkContent(t, filepath.Join(merged, "g"), "g")
		})
	}
}

// TestSharedLayers imports two images sharing their base layer, from
// different formats, and checks the base is unpacked and stored once and,
// where the archive promises its digest, not even read again.
func TestSharedLayers(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	a := buildImage(t, true, baseLayer(t), topLayer(t))
	b := buildImage(t, true, baseLayer(t), otherTop(t))
	pa := writeTar(t, filepath.Join(t.TempDir(), "a.tar"), ociFiles([]*built{a}, descs([]*built{a}, []string{"a"})), false)
	pb := writeDir(t, t.TempDir(), ociFiles([]*built{b}, descs([]*built{b}, []string{"b"})))
	if _, err := s.Import(context.Background(), pa, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	var total int64
	if _, err := s.Import(context.Background(), pb, ImportOptions{Progress: func(_, t int64) { total = t }}); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(b.layers[1])); total != want {
		t.Errorf("second import read %d bytes, want %d (its own top layer only)", total, want)
	}
	ra, _ := s.Resolve("a")
	rb, _ := s.Resolve("b")
	if ra.Layers[1] != rb.Layers[1] {
		t.Errorf("base layer dirs differ: %s, %s", ra.Layers[1], rb.Layers[1])
	}
	if n := countEntries(t, filepath.Join(s.Dir(), "l")); n != 3 {
		t.Errorf("l/ holds %d layers, want 3 (one shared base, two tops)", n)
	}
	// 3 layer blobs, 2 configs, 2 manifests.
	if n := countEntries(t, filepath.Join(s.Dir(), "blobs/sha256")); n != 7 {
		t.Errorf("blobs/sha256 holds %d blobs, want 7", n)
	}
	// The same image again from a docker-save archive (no promised layer
	// digests): it is hashed, not unpacked again.
	pd := writeTar(t, filepath.Join(t.TempDir(), "d.tar"), dockerFiles(t, []*built{a}, [][]string{{"a-again"}}, false), false)
	if _, err := s.Import(context.Background(), pd, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := countEntries(t, filepath.Join(s.Dir(), "l")); n != 3 {
		t.Errorf("after re-import l/ holds %d layers, want 3", n)
	}
	rd, _ := s.Resolve("a-again")
	if !slices.Equal(rd.Layers, ra.Layers) {
		t.Errorf("re-imported image layers %v, want %v", rd.Layers, ra.Layers)
	}
}

func countEntries(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRemoveAndGC checks that Remove refuses while in use, removes names
// and images, and that GC frees exactly what nothing references.
func TestRemoveAndGC(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	a := buildImage(t, true, baseLayer(t), topLayer(t))
	b := buildImage(t, false, baseLayer(t), otherTop(t))
	importBuilt(t, s, a, "a:1")
	importBuilt(t, s, a, "a:2")
	importBuilt(t, s, b, "b")

	inUse := func(ref string) bool { return ref == "a:1" }
	if err := s.Remove("a:1", inUse); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove in-use a:1: %v, want ErrInUse", err)
	}
	if err := s.Remove(digestOf(a.config), inUse); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove by ID while a:1 is in use: %v, want ErrInUse", err)
	}
	if err := s.Remove("a:2", inUse); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve("a:1"); err != nil {
		t.Errorf("a:1 after removing the a:2 name: %v", err)
	}
	if _, err := s.Resolve("a:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve removed name: %v, want ErrNotFound", err)
	}
	if st, err := s.GC(); err != nil || st.Layers != 0 || st.Blobs != 0 {
		t.Errorf("GC with everything referenced: %+v, %v; want nothing removed", st, err)
	}
	if err := s.Remove("a:1", func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	// a's top layer; its top blob, config and manifest (b's base blob is
	// uncompressed, a's gzipped: a's base blob goes too).
	if st.Layers != 1 || st.Blobs != 4 {
		t.Errorf("GC after removing a: %+v, want 1 layer and 4 blobs", st)
	}
	checkResolved(t, s, "b", b)
	if err := s.Remove("b", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"l", "blobs/sha256", "tmp"} {
		if n := countEntries(t, filepath.Join(s.Dir(), d)); n != 0 {
			t.Errorf("%s holds %d entries after removing everything and GC", d, n)
		}
	}
	if len(s.List()) != 0 {
		t.Errorf("List after removing everything: %v", s.List())
	}
}

// TestRetaggedImageSurvivesGC: importing another image under a used name
// leaves the old image unnamed but kept (a worker may still run it), until
// it is removed by ID.
func TestRetaggedImageSurvivesGC(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	a := buildImage(t, true, baseLayer(t), topLayer(t))
	b := buildImage(t, true, baseLayer(t), otherTop(t))
	old := importBuilt(t, s, a, "app")
	importBuilt(t, s, b, "app")
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	list := s.List()
	if len(list) != 2 || len(list[1].Names) != 0 || list[1].ID != old.ID {
		t.Fatalf("List after re-tag: %+v; want the old image kept without a name", list)
	}
	if _, err := s.Resolve(old.ID); err != nil {
		t.Errorf("old image by ID: %v", err)
	}
	if err := s.Remove(old.ID[:19], func(ref string) bool { return ref == old.ID }); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove old image in use (by ID prefix): %v, want ErrInUse", err)
	}
	if err := s.Remove(old.ID, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.GC(); st.Layers != 1 {
		t.Errorf("GC removed %d layers, want 1 (the old top)", st.Layers)
	}
}

func importBuilt(t *testing.T, s *Store, img *built, name string) Image {
	t.Helper()
	path := writeDir(t, t.TempDir(), ociFiles([]*built{img}, descs([]*built{img}, []string{""})))
	got, err := s.Import(context.Background(), path, ImportOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReopenAndRepair checks the index survives a reopen, debris of a crash
// is cleaned, one process at a time holds the store, and a layer directory
// that went missing is reported and repaired by importing again.
func TestReopenAndRepair(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "images")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := buildImage(t, true, baseLayer(t), topLayer(t))
	importBuilt(t, s, img, "hello")
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("second Open: %v, want in use by another process", err)
	}
	s.Close()
	os.MkdirAll(filepath.Join(dir, "tmp/import-123/layers/x"), 0o755)
	os.MkdirAll(filepath.Join(dir, "l/0123456789ab"), 0o755)
	os.WriteFile(filepath.Join(dir, "blobs/sha256", strings.Repeat("0", 64)), []byte("torn"), 0o644)

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := countEntries(t, filepath.Join(dir, "tmp")); n != 0 {
		t.Errorf("tmp/ after Open holds %d entries", n)
	}
	checkResolved(t, s, "hello", img)
	if st, err := s.GC(); err != nil || st.Layers != 1 || st.Blobs != 1 {
		t.Errorf("GC of crash debris: %+v, %v; want 1 layer, 1 blob", st, err)
	}
	rfs, _ := s.Resolve("hello")
	os.RemoveAll(rfs.Layers[0])
	if _, err := s.Resolve("hello"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Resolve with a missing layer: %v, want damaged", err)
	}
	importBuilt(t, s, img, "hello")
	checkLayerDirs(t, s, "hello")
}

// TestArchiveSelection covers archives with several images and naming.
func TestArchiveSelection(t *testing.T) {
	requireRoot(t)
	a := buildImage(t, true, baseLayer(t), topLayer(t))
	b := buildImage(t, true, baseLayer(t), otherTop(t))
	for _, f := range []format{formats[0], formats[3]} {
		t.Run(f.name, func(t *testing.T) {
			path := f.write(t, t.TempDir(), []*built{a, b}, []string{"a:1", "b:1"})
			s := openStore(t, Options{})
			_, err := s.Import(context.Background(), path, ImportOptions{})
			if !errors.Is(err, ErrNameRequired) || !strings.Contains(err.Error(), "a:1") {
				t.Errorf("import of a two-image archive without a name: %v; want ErrNameRequired listing the names", err)
			}
			got, err := s.Import(context.Background(), path, ImportOptions{Name: "b:1"})
			if err != nil || got.ID != digestOf(b.config) {
				t.Fatalf("import b:1: %+v, %v", got, err)
			}
			unnamed := f.write(t, t.TempDir(), []*built{a}, []string{""})
			if _, err := s.Import(context.Background(), unnamed, ImportOptions{}); !errors.Is(err, ErrNameRequired) || !strings.Contains(err.Error(), "give a name") {
				t.Errorf("import of an unnamed image: %v; want a request for a name", err)
			}
			if got, err := s.Import(context.Background(), unnamed, ImportOptions{Name: "given/name:7"}); err != nil || got.Names[0] != "given/name:7" {
				t.Errorf("import with a given name: %+v, %v", got, err)
			}
		})
	}
}

// TestMultiPlatformIndex imports from a nested index holding this
// platform, another one and an attestation, named at the top level.
func TestMultiPlatformIndex(t *testing.T) {
	requireRoot(t)
	mine := buildImage(t, true, baseLayer(t), topLayer(t))
	other := buildImage(t, true, layerTar(t, fileEnt("x", "y")))
	other.setConfig(t, func(c *configFile) { c.Architecture = "s390x" })
	arch := "arm64"
	if arch == goarch() {
		arch = "amd64"
	}
	list := ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex, Manifests: []descriptor{
		{MediaType: mediaTypeOCIManifest, Digest: digestOf(other.manifest), Size: int64(len(other.manifest)), Platform: &platform{OS: "linux", Architecture: arch}},
		{MediaType: mediaTypeOCIManifest, Digest: digestOf(mine.manifest), Size: int64(len(mine.manifest)), Platform: &platform{OS: "linux", Architecture: goarch()}},
		{MediaType: mediaTypeOCIManifest, Digest: digestOf(other.manifest), Size: int64(len(other.manifest)), Platform: &platform{OS: "unknown", Architecture: "unknown"}},
	}}
	lb := mustJSON(t, list)
	mine.extra[digestOf(lb)] = lb
	top := descriptor{MediaType: mediaTypeOCIIndex, Digest: digestOf(lb), Size: int64(len(lb)),
		Annotations: map[string]string{annotationContainerdRef: "registry.local:5000/team/app:2", annotationRefName: "2"}}
	path := writeDir(t, t.TempDir(), ociFiles([]*built{mine, other}, []descriptor{top}))
	s := openStore(t, Options{})
	got, err := s.Import(context.Background(), path, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != digestOf(mine.config) || !slices.Equal(got.Names, []string{"registry.local:5000/team/app:2"}) {
		t.Errorf("imported %+v; want this platform's image named by the containerd annotation", got)
	}
}

// TestConcurrentUse runs imports, removals and readers at once (under
// -race), and two imports sharing a base layer.
func TestConcurrentUse(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	a := buildImage(t, true, baseLayer(t), topLayer(t))
	b := buildImage(t, true, baseLayer(t), otherTop(t))
	pa := writeDir(t, t.TempDir(), ociFiles([]*built{a}, descs([]*built{a}, []string{"a"})))
	pb := writeTar(t, filepath.Join(t.TempDir(), "b.tar"), ociFiles([]*built{b}, descs([]*built{b}, []string{"b"})), true)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, img := range s.List() {
					if _, err := s.Resolve(img.Digest); err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
					}
				}
				s.Inspect("a")
			}
		}()
	}
	var imports sync.WaitGroup
	for _, p := range []string{pa, pb, pa, pb} {
		imports.Add(1)
		go func() {
			defer imports.Done()
			if _, err := s.Import(context.Background(), p, ImportOptions{}); err != nil {
				t.Error(err)
			}
			s.GC()
		}()
	}
	imports.Wait()
	close(stop)
	readers.Wait()
	if n := countEntries(t, filepath.Join(s.Dir(), "l")); n != 3 {
		t.Errorf("l/ holds %d layers, want 3", n)
	}
	checkResolved(t, s, "a", a)
	checkResolved(t, s, "b", b)
}

func TestImportCancel(t *testing.T) {
	s := openStore(t, Options{})
	img := buildImage(t, true, layerTar(t, fileEnt("f", "x")))
	path := writeDir(t, t.TempDir(), ociFiles([]*built{img}, descs([]*built{img}, []string{"c"})))
	before := snapshot(t, s.Dir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Import(ctx, path, ImportOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled import: %v", err)
	}
	if after := snapshot(t, s.Dir()); !slices.Equal(before, after) {
		t.Errorf("cancelled import left files:\n%s", diffLists(before, after))
	}
}

func TestNormalizeRef(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"ubuntu", "ubuntu:latest", ""},
		{"ubuntu:22.04", "ubuntu:22.04", ""},
		{"docker.io/library/ubuntu:22.04", "ubuntu:22.04", ""},
		{"index.docker.io/library/ubuntu", "ubuntu:latest", ""},
		{"library/ubuntu", "ubuntu:latest", ""},
		{"docker.io/runpod/worker:1", "runpod/worker:1", ""},
		{"registry.local:5000/team/app", "registry.local:5000/team/app:latest", ""},
		{"localhost/app:v1", "localhost/app:v1", ""},
		{"app@sha256:" + strings.Repeat("a", 64), "app@sha256:" + strings.Repeat("a", 64), ""},
		{"", "", "empty"},
		{"my.reg_istry/x", "", "invalid registry domain"},
		{"UPPER", "", "invalid repository name"},
		{"a/../b", "", "invalid repository name"},
		{"app:bad tag", "", "invalid tag"},
		{"app@sha256:zz", "", "invalid digest"},
		{"-app", "", "invalid repository name"},
	} {
		got, err := NormalizeRef(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NormalizeRef(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestMeasureImport(t *testing.T) {
	for _, tc := range []SyntheticImage{
		{Size: 4 << 20, Layers: 2, FileSize: 1 << 20},
		{Size: 4 << 20, Layers: 3, FileSize: 512 << 10, Gzip: true, Archive: true},
	} {
		m, err := MeasureImport(context.Background(), t.TempDir(), tc)
		if err != nil {
			t.Fatal(err)
		}
		if m.Bytes < tc.Size || m.MBPerSec <= 0 || m.InputBytes <= 0 {
			t.Errorf("MeasureImport(%+v) = %+v", tc, m)
		}
		t.Logf("%+v: %.1f MB/s (%d bytes in %v)", tc, m.MBPerSec, m.Bytes, m.Duration)
	}
}

// BenchmarkImport reports import throughput for a 256 MiB image; run with
// go test -run '^$' -bench Import ./oci/image/.
func BenchmarkImport(b *testing.B) {
	for _, comp := range []compression{uncompressed, gzipped, zstdCompressed} {
		b.Run([]string{"plain", "gzip", "zstd"}[comp], func(b *testing.B) {
			for range b.N {
				img := SyntheticImage{Size: 256 << 20, Gzip: comp == gzipped, Zstd: comp == zstdCompressed}
				m, err := MeasureImport(context.Background(), b.TempDir(), img)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(m.MBPerSec, "MB/s")
			}
		})
	}
}

func goarch() string { return runtime.GOARCH }

func diffLists(a, b []string) string {
	var out bytes.Buffer
	for _, x := range b {
		if !slices.Contains(a, x) {
			out.WriteString("+ " + x + "\n")
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			out.WriteString("- " + x + "\n")
		}
	}
	return out.String()
}
