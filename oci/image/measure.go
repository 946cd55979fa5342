package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// SyntheticImage describes a generated image for MeasureImport.
type SyntheticImage struct {
	// Size is the total size of the files in the image, split evenly over
	// the layers.
	Size int64
	// Layers is the number of layers (default 4).
	Layers int
	// FileSize is the size of each file (default 4 MiB).
	FileSize int64
	// Gzip compresses the layers (at gzip.BestSpeed; the file data
	// compresses about 2:1, like binaries and libraries do).
	Gzip bool
	// Zstd compresses the layers with zstd (at its default level) instead.
	Zstd bool
	// Archive writes the image as an OCI archive tarball rather than an
	// OCI layout directory.
	Archive bool
}

// ImportMeasurement is the outcome of MeasureImport.
type ImportMeasurement struct {
	// Bytes is the uncompressed size of the image's layers.
	Bytes int64
	// InputBytes is the size of what Import read (blobs or archive).
	InputBytes int64
	// Duration is Import's wall time (generation not included).
	Duration time.Duration
	// MBPerSec is Bytes / Duration in MB/s (10^6 bytes).
	MBPerSec float64
}

// MeasureImport generates a synthetic image under workDir, imports it into a
// fresh store there, and reports the import's throughput. workDir should
// be empty and on the filesystem the real store will use; the caller
// removes it. It is what `tests/bench` calls; go test uses it with a few
// MiB only.
func MeasureImport(ctx context.Context, workDir string, img SyntheticImage) (ImportMeasurement, error) {
	if img.Size <= 0 {
		return ImportMeasurement{}, fmt.Errorf("synthetic image size must be positive")
	}
	src := filepath.Join(workDir, "src")
	if err := writeSyntheticImage(src, img); err != nil {
		return ImportMeasurement{}, fmt.Errorf("generating synthetic image: %w", err)
	}
	input := src
	if img.Archive {
		input = src + ".tar"
		if err := tarDir(src, input); err != nil {
			return ImportMeasurement{}, fmt.Errorf("generating synthetic archive: %w", err)
		}
	}
	s, err := Open(filepath.Join(workDir, "store"), Options{MaxImageBytes: 2*img.Size + 1<<30})
	if err != nil {
		return ImportMeasurement{}, err
	}
	defer s.Close()
	// Flush the generated input first, or the import's own syncfs would
	// pay for writing it. The input stays in the page cache, as an archive
	// just copied onto the appliance would be.
	if err := syncFS(workDir); err != nil {
		return ImportMeasurement{}, err
	}
	var read int64
	start := time.Now()
	im, err := s.Import(ctx, input, ImportOptions{Name: "ember.local/synthetic:latest", Progress: func(done, _ int64) { read = done }})
	d := time.Since(start)
	if err != nil {
		return ImportMeasurement{}, err
	}
	return ImportMeasurement{
		Bytes:      im.Size,
		InputBytes: read,
		Duration:   d,
		MBPerSec:   float64(im.Size) / 1e6 / d.Seconds(),
	}, nil
}

// writeSyntheticImage writes img as an OCI layout in dir.
func writeSyntheticImage(dir string, img SyntheticImage) error {
	if img.Layers <= 0 {
		img.Layers = 4
	}
	if img.FileSize <= 0 {
		img.FileSize = 4 << 20
	}
	lw, err := newLayoutWriter(dir)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	per := img.Size / int64(img.Layers)
	for i := range img.Layers {
		comp := uncompressed
		switch {
		case img.Zstd:
			comp = zstdCompressed
		case img.Gzip:
			comp = gzipped
		}
		err := lw.addLayer(comp, func(tw *tar.Writer) error {
			return syntheticFiles(tw, fmt.Sprintf("layer%d", i), per, img.FileSize, rng)
		})
		if err != nil {
			return err
		}
	}
	return lw.finish(layoutConfig{Entrypoint: []string{"/bin/true"}}, "ember.local/synthetic:latest")
}

// syntheticFiles writes files totalling size bytes under dir.
func syntheticFiles(tw *tar.Writer, dir string, size, fileSize int64, rng *rand.Rand) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
		return err
	}
	for n := 0; size > 0; n++ {
		fs := min(fileSize, size)
		size -= fs
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/f%06d", dir, n), Mode: 0o644, Size: fs}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, halfCompressible{rng}, fs); err != nil {
			return err
		}
	}
	return nil
}

// halfCompressible yields 4 KiB blocks alternating random and repeated
// bytes: roughly 2:1 under gzip, like executables and shared libraries.
type halfCompressible struct{ rng *rand.Rand }

func (h halfCompressible) Read(p []byte) (int, error) {
	for i := 0; i < len(p); i += 8 {
		v := h.rng.Uint64()
		if (i/4096)%2 == 1 {
			v = 0x2e2e2e2e2e2e2e2e
		}
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return len(p), nil
}

// layoutConfig is the part of an image config a generated layout sets.
type layoutConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// layoutWriter writes an OCI image layout, streaming layers to disk so that
// synthetic images can be far larger than memory.
type layoutWriter struct {
	dir     string
	layers  []descriptor
	diffIDs []string
}

func newLayoutWriter(dir string) (*layoutWriter, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	return &layoutWriter{dir: dir}, nil
}

// addLayer writes one layer whose tar content gen produces.
func (lw *layoutWriter) addLayer(comp compression, gen func(*tar.Writer) error) error {
	f, err := os.CreateTemp(filepath.Join(lw.dir, "blobs", "sha256"), ".layer-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	blobHash, diffHash := sha256.New(), sha256.New()
	var out io.Writer = io.MultiWriter(f, blobHash)
	var zw io.WriteCloser
	switch comp {
	case gzipped:
		zw, _ = gzip.NewWriterLevel(out, gzip.BestSpeed)
		out = zw
	case zstdCompressed:
		if zw, err = zstd.NewWriter(out); err != nil {
			return err
		}
		out = zw
	}
	tw := tar.NewWriter(io.MultiWriter(out, diffHash))
	if err := gen(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	d := descriptor{MediaType: mediaTypeOCILayer, Digest: hashSum(blobHash), Size: st.Size()}
	switch comp {
	case gzipped:
		d.MediaType = mediaTypeOCILayerGzip
	case zstdCompressed:
		d.MediaType = mediaTypeOCILayerZstd
	}
	if err := os.Rename(f.Name(), lw.blob(d.Digest)); err != nil {
		return err
	}
	lw.layers = append(lw.layers, d)
	lw.diffIDs = append(lw.diffIDs, hashSum(diffHash))
	return nil
}

func (lw *layoutWriter) blob(digest string) string {
	return filepath.Join(lw.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// putJSON stores v as a blob and returns its descriptor.
func (lw *layoutWriter) putJSON(v any, mediaType string) (descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	d := descriptor{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}
	return d, os.WriteFile(lw.blob(d.Digest), b, 0o644)
}

// finish writes the config, manifest, index.json and oci-layout.
func (lw *layoutWriter) finish(c layoutConfig, refName string) error {
	var cfg configFile
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	cfg.Config.Entrypoint, cfg.Config.Cmd, cfg.Config.Env = c.Entrypoint, c.Cmd, c.Env
	cfg.Config.WorkingDir, cfg.Config.User = c.WorkingDir, c.User
	cfg.RootFS.Type, cfg.RootFS.DiffIDs = "layers", lw.diffIDs
	cd, err := lw.putJSON(cfg, mediaTypeOCIConfig)
	if err != nil {
		return err
	}
	md, err := lw.putJSON(ociManifest{SchemaVersion: 2, MediaType: mediaTypeOCIManifest, Config: cd, Layers: lw.layers}, mediaTypeOCIManifest)
	if err != nil {
		return err
	}
	if refName != "" {
		md.Annotations = map[string]string{annotationRefName: refName}
	}
	idx, err := json.Marshal(ociIndex{SchemaVersion: 2, MediaType: mediaTypeOCIIndex, Manifests: []descriptor{md}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lw.dir, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(lw.dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// tarDir writes the regular files and directories under dir into a tar
// file at dst, with paths relative to dir (an OCI archive, given a layout).
func tarDir(dir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(tw, in)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
