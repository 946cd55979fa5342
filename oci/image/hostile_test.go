package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// goodLayer is a harmless new layer placed under each hostile one, so that
// a refused import has already unpacked something it must remove.
func goodLayer(t testing.TB) []byte {
	return layerTar(t, dirEnt("good/"), fileEnt("good/file", strings.Repeat("good ", 1000)))
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// hostileCase is an image the store must refuse.
type hostileCase struct {
	name string
	// top is the hostile layer, put over goodLayer in a gzip OCI layout
	// named "hostile"; or image builds the whole input itself.
	top   []tent
	image func(t *testing.T, dir string) string
	opts  Options
	want  string // regexp the error must match
	is    error
}

// layoutOf writes b as an OCI layout named "hostile".
func layoutOf(t *testing.T, dir string, b *built) string {
	return writeDir(t, filepath.Join(dir, "layout"), ociFiles([]*built{b}, descs([]*built{b}, []string{"hostile"})))
}

// tweak builds goodLayer + top (gzip unless plain) and lets edit damage it.
func tweak(plain bool, top func(t testing.TB) []byte, edit func(t *testing.T, b *built)) func(t *testing.T, dir string) string {
	return func(t *testing.T, dir string) string {
		b := buildImage(t, !plain, goodLayer(t), top(t))
		edit(t, b)
		return layoutOf(t, dir, b)
	}
}

func smallTop(t testing.TB) []byte {
	return layerTar(t, fileEnt("top", strings.Repeat("x", 8192)))
}

func editManifest(t *testing.T, b *built, edit func(*ociManifest)) {
	var m ociManifest
	if err := decodeJSON(b.manifest, &m, "manifest"); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	b.manifest = mustJSON(t, m)
}

var hostileCases = []hostileCase{
	{name: "dot-dot entry", top: []tent{fileEnt("../escape", "x")}, want: "escapes the layer root", is: ErrHostile},
	{name: "nested dot-dot entry", top: []tent{fileEnt("a/../../escape", "x")}, want: "escapes the layer root", is: ErrHostile},
	{name: "absolute path", top: []tent{fileEnt("/etc/passwd", "x")}, want: "absolute path", is: ErrHostile},
	{name: "write through symlink to root", top: []tent{symEnt("evil", "/"), fileEnt("evil/etc/owned", "x")}, want: "through a symlink", is: ErrHostile},
	{name: "write through relative symlink", top: []tent{symEnt("evil", "../../../../.."), fileEnt("evil/owned", "x")}, want: "through a symlink", is: ErrHostile},
	{name: "whiteout through symlink", top: []tent{symEnt("evil", "/etc"), fileEnt("evil/.wh.passwd", "")}, want: "through a symlink", is: ErrHostile},
	{name: "opaque through symlink", top: []tent{symEnt("evil", "/etc"), fileEnt("evil/.wh..wh..opq", "")}, want: "through a symlink", is: ErrHostile},
	{name: "write through inner symlink", top: []tent{dirEnt("d/"), symEnt("s", "d"), fileEnt("s/x", "y")}, want: "through a symlink", is: ErrHostile},
	{name: "hardlink outside", top: []tent{linkEnt("x", "../../../etc/passwd")}, want: "target outside the layer", is: ErrHostile},
	{name: "hardlink absolute", top: []tent{linkEnt("x", "/etc/passwd")}, want: "target outside the layer", is: ErrHostile},
	{name: "hardlink to a later entry", top: []tent{linkEnt("x", "later"), fileEnt("later", "y")}, want: "not an earlier entry", is: ErrHostile},
	{name: "hardlink through symlink", top: []tent{symEnt("s", "/etc"), linkEnt("x", "s/passwd")}, want: "not an earlier entry", is: ErrHostile},
	{name: "hardlink to directory", top: []tent{dirEnt("d/"), linkEnt("x", "d")}, want: "directory", is: ErrHostile},
	{name: "char device", top: []tent{dirEnt("dev/"), {name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3}}, want: "device entries are refused", is: ErrHostile},
	{name: "block device", top: []tent{{name: "sda", typ: tar.TypeBlock, major: 8}}, want: "device entries are refused", is: ErrHostile},
	{name: "0:0 char device posing as whiteout", top: []tent{{name: "etc", typ: tar.TypeChar}}, want: "device entries are refused", is: ErrHostile},
	{name: "entry under a file", top: []tent{fileEnt("a", "x"), fileEnt("a/b", "y")}, want: "not a directory", is: ErrHostile},
	{name: "invalid whiteout", top: []tent{fileEnt(".wh..", "")}, want: "invalid whiteout", is: ErrHostile},
	{name: "layer root is a file", top: []tent{fileEnt(".", "x")}, want: "layer root entry", is: ErrHostile},
	{
		name: "layer bomb", top: []tent{{name: "zeros", zeros: 4 << 20}},
		opts: Options{MaxLayerBytes: 1 << 20, MaxImageBytes: 64 << 20}, want: "limit of 1048576 bytes per layer", is: ErrTooLarge,
	},
	{
		name: "sparse-looking bomb: many empty files", top: manyFiles(4000),
		opts: Options{MaxLayerBytes: 1 << 20, MaxImageBytes: 64 << 20}, want: "per layer", is: ErrTooLarge,
	},
	{
		name: "image bomb",
		image: func(t *testing.T, dir string) string {
			half := layerTar(t, tent{name: "zeros", zeros: 700 << 10})
			half2 := layerTar(t, tent{name: "zeros2", zeros: 700 << 10})
			return layoutOf(t, dir, buildImage(t, true, goodLayer(t), half, half2))
		},
		opts: Options{MaxLayerBytes: 1 << 20, MaxImageBytes: 1200 << 10}, want: "bytes per image", is: ErrTooLarge,
	},
	{
		name: "layer blob tampered", want: "blob digest mismatch", is: ErrDigestMismatch,
		image: tweak(true, smallTop, func(t *testing.T, b *built) {
			evil := layerTar(t, fileEnt("top", strings.Repeat("y", 8192)))
			b.replace[digestOf(b.layers[1])] = evil
		}),
	},
	{
		name: "diff ID mismatch", want: "diff ID is .* the content is", is: ErrDigestMismatch,
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.setConfig(t, func(c *configFile) { c.RootFS.DiffIDs[1] = digestOf([]byte("something else")) })
		}),
	},
	{
		name: "config tampered", want: "config: digest mismatch", is: ErrDigestMismatch,
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.replace[digestOf(b.config)] = bytes.Replace(b.config, []byte("/bin/hello"), []byte("/bin/evil!"), 1)
		}),
	},
	{
		name: "manifest tampered", want: "manifest: digest mismatch", is: ErrDigestMismatch,
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.replace[digestOf(b.manifest)] = bytes.Replace(b.manifest, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)
		}),
	},
	{
		name: "layer size lies", want: "the manifest says",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.sizes[1] = int64(len(b.layers[1])) - 1
			b.rebuildManifest(t)
		}),
	},
	{
		name: "truncated gzip layer", want: "unexpected EOF",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = gz(b.layers[1])
			b.layers[1] = b.layers[1][:len(b.layers[1])/2]
			b.layerMT[1] = mediaTypeOCILayerGzip
			b.rebuildManifest(t)
		}),
	},
	{
		name: "truncated tar layer", want: "unexpected EOF",
		image: tweak(true, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = b.layers[1][:len(b.layers[1])/2]
			b.rebuildManifest(t)
		}),
	},
	{
		name: "garbage after gzip stream", want: "gzip: invalid header",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = append(gz(b.layers[1]), "garbage after the end of the gzip stream"...)
			b.rebuildManifest(t)
		}),
	},
	{
		name: "digest with a path in it", want: "invalid digest",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			editManifest(t, b, func(m *ociManifest) { m.Layers[1].Digest = "sha256:../../../../etc/passwd" })
		}),
	},
	{
		name: "missing layer blob", want: "no such file",
		image: tweak(false, smallTop, func(t *testing.T, b *built) { b.omit[digestOf(b.layers[1])] = true }),
	},
	{
		name: "zstd stream corrupt", want: "layer 2 .*zstd stream is corrupt",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = append(slices.Clone(zstdMagic), bytes.Repeat([]byte{0xff}, 64)...)
			b.layerMT[1] = mediaTypeOCILayerZstd
			b.rebuildManifest(t)
		}),
	},
	{
		name: "zstd stream damaged mid-way", want: "layer 2 .*zstd stream is corrupt",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			z := compress(t, zstdCompressed, layerTar(t, fileEnt("top", strings.Repeat("abcdefgh", 4096))))
			for i := len(z) / 2; i < len(z)/2+16; i++ {
				z[i] ^= 0x5a
			}
			b.layers[1] = z
			b.rebuildManifest(t)
		}),
	},
	{
		// A frame header asking for a 2 GiB window (window log 31) and
		// holding one empty block: refused before any memory is taken.
		name: "zstd window over the limit", want: "zstd stream declares a window larger than the limit of 128 MiB",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = append(slices.Clone(zstdMagic), 0x00, 0xa8, 0x01, 0x00, 0x00)
			b.rebuildManifest(t)
		}),
	},
	{
		// A single-segment frame takes its window from the content size it
		// declares (here 1 GiB), which the window limit alone misses.
		name: "zstd single-segment frame declaring 1 GiB", want: "zstd stream declares a window larger than the limit of 128 MiB",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = append(slices.Clone(zstdMagic), 0xa0, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00)
			b.rebuildManifest(t)
		}),
	},
	{
		name: "zstd layer bomb", want: "limit of 1048576 bytes per layer", is: ErrTooLarge,
		opts: Options{MaxLayerBytes: 1 << 20, MaxImageBytes: 64 << 20},
		image: func(t *testing.T, dir string) string {
			return layoutOf(t, dir, buildImageWith(t, zstdCompressed, goodLayer(t), layerTar(t, tent{name: "zeros", zeros: 4 << 20})))
		},
	},
	{
		name: "bzip2 content", want: "bzip2- or xz-compressed, which is not supported",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.layers[1] = append([]byte("BZh91AY&SY"), b.layers[1]...)
			b.rebuildManifest(t)
		}),
	},
	{
		name: "other architecture", want: `architecture "s390x"`,
		image: tweak(false, smallTop, func(t *testing.T, b *built) { b.setConfig(t, func(c *configFile) { c.Architecture = "s390x" }) }),
	},
	{
		name: "diff IDs do not match layers", want: "lists 1 layer diff IDs but the manifest has 2",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			b.setConfig(t, func(c *configFile) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] })
		}),
	},
	{
		name: "artifact, not an image", want: "not a container image config",
		image: tweak(false, smallTop, func(t *testing.T, b *built) {
			editManifest(t, b, func(m *ociManifest) { m.Config.MediaType = "application/vnd.cncf.helm.config.v1+json" })
		}),
	},
	{
		name: "no name", want: "give a name", is: ErrNameRequired,
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, true, goodLayer(t), smallTop(t))
			return writeDir(t, filepath.Join(dir, "layout"), ociFiles([]*built{b}, descs([]*built{b}, []string{""})))
		},
	},
	{
		name: "truncated OCI archive", want: "unexpected EOF|not exist",
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, true, goodLayer(t), smallTop(t))
			return truncateFile(t, writeTar(t, filepath.Join(dir, "oci.tar"), ociFiles([]*built{b}, descs([]*built{b}, []string{"hostile"})), false))
		},
	},
	{
		name: "truncated docker-save archive", want: "unexpected EOF|not exist",
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, false, goodLayer(t), smallTop(t))
			return truncateFile(t, writeTar(t, filepath.Join(dir, "save.tar"), dockerFiles(t, []*built{b}, [][]string{{"hostile"}}, false), false))
		},
	},
	{
		name: "device entry in the outer archive", want: "unexpected type", is: ErrHostile,
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, true, goodLayer(t), smallTop(t))
			files := append(ociFiles([]*built{b}, descs([]*built{b}, []string{"hostile"})), file{name: "dev-null", typ: tar.TypeChar})
			return writeTar(t, filepath.Join(dir, "oci.tar"), files, false)
		},
	},
	{
		name: "outer archive bomb", want: "bytes per image", is: ErrTooLarge,
		opts: Options{MaxImageBytes: 1 << 20},
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, true, goodLayer(t), smallTop(t))
			files := append(ociFiles([]*built{b}, descs([]*built{b}, []string{"hostile"})), file{name: "junk", body: make([]byte, 2<<20)})
			return writeTar(t, filepath.Join(dir, "oci.tar.gz"), files, true)
		},
	},
	{
		name: "zstd outer archive bomb", want: "bytes per image", is: ErrTooLarge,
		opts: Options{MaxImageBytes: 1 << 20},
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, true, goodLayer(t), smallTop(t))
			files := append(ociFiles([]*built{b}, descs([]*built{b}, []string{"hostile"})), file{name: "junk", body: make([]byte, 2<<20)})
			return writeTarWith(t, filepath.Join(dir, "oci.tar.zst"), files, zstdCompressed)
		},
	},
	{
		name: "zstd outer archive window over the limit", want: "reading archive: zstd stream declares a window larger than the limit of 128 MiB",
		image: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "oci.tar.zst")
			if err := os.WriteFile(p, append(slices.Clone(zstdMagic), 0x00, 0xa8, 0x01, 0x00, 0x00), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		},
	},
	{
		name: "docker-save layer aliasing another with a different diff ID", want: "same file as layer",
		image: func(t *testing.T, dir string) string {
			b := buildImage(t, false, goodLayer(t), smallTop(t))
			files := dockerFiles(t, []*built{b}, [][]string{{"hostile"}}, false)
			for i, f := range files {
				if strings.HasPrefix(f.name, strings.TrimPrefix(digestOf(b.layers[1]), "sha256:")+"/layer.tar") {
					files[i] = file{name: f.name, link: "../" + strings.TrimPrefix(digestOf(b.layers[0]), "sha256:") + "/layer.tar"}
				}
			}
			return writeTar(t, filepath.Join(dir, "save.tar"), files, false)
		},
	},
}

func manyFiles(n int) []tent {
	out := make([]tent, n)
	for i := range out {
		out[i] = fileEnt(fmt.Sprintf("f%05d", i), "")
	}
	return out
}

func truncateFile(t *testing.T, p string) string {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, st.Size()*2/3); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileArchives imports each hostile case into a store that already
// holds an image, and checks the refusal names the problem and that the
// store is exactly as before: nothing new, nothing shared removed.
func TestHostileArchives(t *testing.T) {
	// As root the seed has whiteouts and an opaque dir: special files a
	// cleanup gone wrong could trip over. The refusals themselves need no
	// root, so the table also runs without it.
	seedBase := layerTar(t, dirEnt("etc/"), fileEnt("etc/remove-me", "x"), dirEnt("data/"), fileEnt("data/old1", "x"))
	seedTop := topLayer(t)
	if os.Geteuid() != 0 {
		seedTop = otherTop(t)
	}
	seedImg := buildImage(t, true, seedBase, seedTop)
	seedPath := writeDir(t, t.TempDir(), ociFiles([]*built{seedImg}, descs([]*built{seedImg}, []string{"seed"})))
	for _, tc := range hostileCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "images")
			seed, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := seed.Import(context.Background(), seedPath, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			seed.Close()
			opts := tc.opts
			if opts.Parallelism == 0 {
				opts.Parallelism = 1 // the good layer is fully unpacked before the hostile one fails
			}
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var path string
			if tc.image != nil {
				path = tc.image(t, t.TempDir())
			} else {
				path = layoutOf(t, t.TempDir(), buildImage(t, true, goodLayer(t), layerTar(t, tc.top...)))
			}
			before := snapshot(t, dir)
			_, err = s.Import(context.Background(), path, ImportOptions{})
			if err == nil {
				t.Fatal("hostile import succeeded")
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if after := snapshot(t, dir); !slices.Equal(before, after) {
				t.Errorf("refused import changed the store:\n%s", diffLists(before, after))
			}
			if _, err := s.Resolve("seed"); err != nil {
				t.Errorf("seed image after refused import: %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}
