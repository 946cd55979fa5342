package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// The static test program that layer 1 carries. Run inside the merged
// root, it reports what it sees, which proves the overlay is usable as a
// container root filesystem, not only that files exist.
const helloSource = `package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	g, _ := os.ReadFile("/etc/greeting")
	_, err := os.Stat("/etc/remove-me")
	ents, _ := os.ReadDir("/data")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	fmt.Printf("greeting=%s removed=%v data=%v args=%v\n", strings.TrimSpace(string(g)), os.IsNotExist(err), names, os.Args[1:])
}
`

var (
	helloOnce sync.Once
	helloBin  []byte
	helloErr  error
)

// staticHello builds helloSource with CGO_ENABLED=0 once per test binary.
func staticHello(t testing.TB) []byte {
	t.Helper()
	helloOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ember-hello-")
		if err != nil {
			helloErr = err
			return
		}
		defer os.RemoveAll(dir)
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte(helloSource), 0o644)
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", "hello", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = fmt.Errorf("building static test program: %v\n%s", err, out)
			return
		}
		helloBin, helloErr = os.ReadFile(filepath.Join(dir, "hello"))
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloBin
}

// requireRoot skips tests that need root: whiteouts are 0:0 character
// devices (CAP_MKNOD), opaque dirs a trusted.* xattr (CAP_SYS_ADMIN).
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay whiteouts (mknod 0:0) and trusted.overlay.opaque xattrs; CI runs these tests as root")
	}
}

// tent is one tar entry for test layers.
type tent struct {
	name     string
	typ      byte
	body     string
	zeros    int64 // body of this many zero bytes instead
	mode     int64
	link     string
	uid, gid int
	major    int64
	minor    int64
	pax      map[string]string
}

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// layerTar builds an uncompressed layer tar from entries.
func layerTar(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: testTime, PAXRecords: e.pax, Format: tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		var body io.Reader
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body)) + e.zeros
			body = io.MultiReader(strings.NewReader(e.body), io.LimitReader(zeroReader{}, e.zeros))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("layer tar %s: %v", e.name, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func dirEnt(name string) tent          { return tent{name: name, typ: tar.TypeDir} }
func fileEnt(name, body string) tent   { return tent{name: name, body: body} }
func linkEnt(name, target string) tent { return tent{name: name, typ: tar.TypeLink, link: target} }
func symEnt(name, target string) tent  { return tent{name: name, typ: tar.TypeSymlink, link: target} }

// baseLayer is layer 1 of the test images: the static program and files
// that layer 2 deletes, overrides and hides.
func baseLayer(t testing.TB) []byte {
	return layerTar(t,
		dirEnt("bin/"),
		tent{name: "bin/hello", body: string(staticHello(t)), mode: 0o755},
		dirEnt("etc/"),
		fileEnt("etc/greeting", "hello from layer 1\n"),
		fileEnt("etc/remove-me", "doomed\n"),
		linkEnt("etc/greeting.hard", "etc/greeting"),
		symEnt("etc/greeting.link", "greeting"),
		dirEnt("data/"),
		fileEnt("data/old1", "old\n"),
		dirEnt("data/sub/"),
		fileEnt("data/sub/old2", "old\n"),
	)
}

// topLayer is layer 2: a whiteout, an opaque directory, an override.
func topLayer(t testing.TB) []byte {
	return layerTar(t,
		dirEnt("etc/"),
		fileEnt("etc/.wh.remove-me", ""),
		fileEnt("etc/greeting", "hello from layer 2\n"),
		dirEnt("data/"),
		fileEnt("data/.wh..wh..opq", ""),
		fileEnt("data/new1", "new\n"),
	)
}

// otherTop is layer 2 of a second image sharing the base layer.
func otherTop(t testing.TB) []byte {
	return layerTar(t, dirEnt("etc/"), fileEnt("etc/other", "other image\n"))
}

var testConfig = layoutConfig{
	Entrypoint: []string{"/bin/hello"},
	Cmd:        []string{"from-cmd"},
	Env:        []string{"PATH=/bin", "GREETING=yes"},
	WorkingDir: "/data",
	User:       "1000:1000",
}

// built is an image as blobs, ready to be written in any format. Tests
// that need a hostile image change it between buildImage and writing.
type built struct {
	layers   [][]byte // blobs, bottom first
	layerMT  []string
	diffIDs  []string
	config   []byte
	manifest []byte
	extra    map[string][]byte // more blobs (indexes) by digest
	// sizes overrides layer descriptor sizes (hostile cases).
	sizes map[int]int64
	// replace writes other content under a blob's digest; omit leaves a
	// blob out (hostile cases).
	replace map[string][]byte
	omit    map[string]bool
}

// buildImage gzips the layers if asked and writes config and manifest.
func buildImage(t testing.TB, gz bool, layers ...[]byte) *built {
	t.Helper()
	if gz {
		return buildImageWith(t, gzipped, layers...)
	}
	return buildImageWith(t, uncompressed, layers...)
}

// buildImageWith compresses the layers with comp and writes config and
// manifest.
func buildImageWith(t testing.TB, comp compression, layers ...[]byte) *built {
	t.Helper()
	b := &built{extra: map[string][]byte{}, sizes: map[int]int64{}, replace: map[string][]byte{}, omit: map[string]bool{}}
	for _, l := range layers {
		b.diffIDs = append(b.diffIDs, digestOf(l))
		b.layers = append(b.layers, compress(t, comp, l))
		b.layerMT = append(b.layerMT, map[compression]string{
			uncompressed: mediaTypeOCILayer, gzipped: mediaTypeOCILayerGzip, zstdCompressed: mediaTypeOCILayerZstd,
		}[comp])
	}
	b.setConfig(t, func(*configFile) {})
	return b
}

// compress returns b compressed with comp.
func compress(t testing.TB, comp compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch comp {
	case uncompressed:
		return b
	case gzipped:
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
	case zstdCompressed:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(b)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// setConfig rebuilds config and manifest, letting edit change the config.
func (b *built) setConfig(t testing.TB, edit func(*configFile)) {
	t.Helper()
	var c configFile
	c.Architecture, c.OS = runtime.GOARCH, "linux"
	c.Config.Entrypoint, c.Config.Cmd, c.Config.Env = testConfig.Entrypoint, testConfig.Cmd, testConfig.Env
	c.Config.WorkingDir, c.Config.User = testConfig.WorkingDir, testConfig.User
	c.RootFS.Type, c.RootFS.DiffIDs = "layers", append([]string(nil), b.diffIDs...)
	edit(&c)
	b.config = mustJSON(t, c)
	b.rebuildManifest(t)
}

func (b *built) rebuildManifest(t testing.TB) {
	t.Helper()
	m := ociManifest{SchemaVersion: 2, MediaType: mediaTypeOCIManifest,
		Config: descriptor{MediaType: mediaTypeOCIConfig, Digest: digestOf(b.config), Size: int64(len(b.config))}}
	for i, l := range b.layers {
		d := descriptor{MediaType: b.layerMT[i], Digest: digestOf(l), Size: int64(len(l))}
		if s, ok := b.sizes[i]; ok {
			d.Size = s
		}
		m.Layers = append(m.Layers, d)
	}
	b.manifest = mustJSON(t, m)
}

func (b *built) manifestDesc(refName string) descriptor {
	d := descriptor{MediaType: mediaTypeOCIManifest, Digest: digestOf(b.manifest), Size: int64(len(b.manifest))}
	if refName != "" {
		d.Annotations = map[string]string{annotationRefName: refName}
	}
	return d
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// file is one file of an archive or layout being written.
type file struct {
	name string
	body []byte
	link string // symlink target instead of a body
	typ  byte   // overrides the entry type (hostile outer archives)
}

// ociFiles lays out images as an OCI layout: oci-layout, index.json and
// blobs. Each image's manifest descriptor is given.
func ociFiles(imgs []*built, descs []descriptor) []file {
	seen := map[string]bool{}
	files := []file{{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)}}
	for _, img := range imgs {
		add := func(b []byte) {
			d := digestOf(b)
			if r, ok := img.replace[d]; ok {
				b = r
			}
			if !seen[d] && !img.omit[d] {
				seen[d] = true
				files = append(files, file{name: "blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), body: b})
			}
		}
		for _, l := range img.layers {
			add(l)
		}
		add(img.config)
		add(img.manifest)
		for _, e := range img.extra {
			add(e)
		}
	}
	idx, _ := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex, Manifests: descs})
	return append(files, file{name: "index.json", body: idx})
}

// dockerFiles lays out images as `docker save` does: legacy (<id>/layer.tar,
// <config hex>.json, duplicate layers as symlinks) or Docker 25's (blob
// paths, with an OCI index beside manifest.json).
func dockerFiles(t testing.TB, imgs []*built, tags [][]string, modern bool) []file {
	t.Helper()
	var files []file
	var entries []dockerManifestEntry
	seen := map[string]string{}
	for i, img := range imgs {
		e := dockerManifestEntry{RepoTags: tags[i]}
		if modern {
			files = append(files, ociFiles([]*built{img}, []descriptor{img.manifestDesc("")})...)
			e.Config = "blobs/sha256/" + strings.TrimPrefix(digestOf(img.config), "sha256:")
		} else {
			e.Config = strings.TrimPrefix(digestOf(img.config), "sha256:") + ".json"
			files = append(files, file{name: e.Config, body: img.config})
		}
		for j, l := range img.layers {
			hex := strings.TrimPrefix(digestOf(l), "sha256:")
			switch {
			case modern:
				e.Layers = append(e.Layers, "blobs/sha256/"+hex)
				continue
			case seen[hex] != "":
				id := fmt.Sprintf("%x", j+100*i+1)
				files = append(files, file{name: id + "/layer.tar", link: "../" + seen[hex] + "/layer.tar"})
				e.Layers = append(e.Layers, id+"/layer.tar")
				continue
			}
			seen[hex] = hex
			files = append(files, file{name: hex + "/VERSION", body: []byte("1.0")}, file{name: hex + "/layer.tar", body: l})
			e.Layers = append(e.Layers, hex+"/layer.tar")
		}
		entries = append(entries, e)
	}
	files = append(files, file{name: "manifest.json", body: mustJSON(t, entries)})
	return dedupFiles(files)
}

func dedupFiles(files []file) []file {
	seen := map[string]bool{}
	var out []file
	for _, f := range files {
		if !seen[f.name] {
			seen[f.name] = true
			out = append(out, f)
		}
	}
	return out
}

// writeDir writes files under dir.
func writeDir(t testing.TB, dir string, files []file) string {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else {
			err = os.WriteFile(p, f.body, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeTar writes files as a tarball at path, gzipped if asked.
func writeTar(t testing.TB, path string, files []file, gz bool) string {
	t.Helper()
	if gz {
		return writeTarWith(t, path, files, gzipped)
	}
	return writeTarWith(t, path, files, uncompressed)
}

// writeTarWith writes files as a tarball at path, compressed with comp.
func writeTarWith(t testing.TB, path string, files []file, comp compression) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, ModTime: testTime, Typeflag: tar.TypeReg, Size: int64(len(f.body))}
		if f.link != "" {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, f.link, 0
		}
		if f.typ != 0 {
			hdr.Typeflag, hdr.Size = f.typ, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			tw.Write(f.body)
		}
	}
	tw.Close()
	if err := os.WriteFile(path, compress(t, comp, buf.Bytes()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// snapshot lists every path under root with its type and size, to compare
// a store before and after a refused import.
func snapshot(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		size := info.Size()
		if d.IsDir() {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %v %d", rel, info.Mode().Type(), size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
