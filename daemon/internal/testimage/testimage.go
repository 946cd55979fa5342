// Package testimage writes tiny container images for tests of the image
// API: single-layer OCI archives (a tar of an OCI image layout, what
// examples/worker/mkimage writes) and OCI layout directories, built in
// memory with no registry or container engine.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Image describes an image to build.
type Image struct {
	// Name is recorded as the layout's org.opencontainers.image.ref.name
	// annotation; empty leaves the image unnamed (importing it then needs
	// a name).
	Name string
	// Files are the layer's regular files, path to content (mode 0755
	// when the path is "bin/..." or "worker", 0644 otherwise). Keys may
	// also be hostile ("../escape"): the archive holds what it is told.
	Files map[string]string
	// Gzip compresses the layer blob.
	Gzip bool
	// Created is the config's "created"; zero leaves it out.
	Created time.Time
	// Entrypoint, Cmd, Env, WorkingDir and User go into the config.
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
}

// Built is an image's blobs and digests.
type Built struct {
	Layer, Config, Manifest, Index []byte
	// LayerDigest is the blob digest, DiffID the uncompressed layer's,
	// ConfigDigest the image ID, ManifestDigest the manifest's.
	LayerDigest, DiffID, ConfigDigest, ManifestDigest string
}

// Digest returns "sha256:<hex>" of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var epoch = time.Unix(0, 0)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Build makes the image's blobs.
func (img Image) Build() (*Built, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	names := make([]string, 0, len(img.Files))
	for n := range img.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := int64(0o644)
		if n == "worker" || filepath.Dir(n) == "bin" {
			mode = 0o755
		}
		body := img.Files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(body)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := &Built{DiffID: Digest(raw.Bytes()), Layer: raw.Bytes()}
	mediaType := "application/vnd.oci.image.layer.v1.tar"
	if img.Gzip {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(raw.Bytes())
		if err := zw.Close(); err != nil {
			return nil, err
		}
		b.Layer = gz.Bytes()
		mediaType += "+gzip"
	}
	b.LayerDigest = Digest(b.Layer)

	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
			"WorkingDir": img.WorkingDir,
			"User":       img.User,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{b.DiffID}},
	}
	if !img.Created.IsZero() {
		cfg["created"] = img.Created.UTC().Format(time.RFC3339Nano)
	}
	var err error
	if b.Config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	b.ConfigDigest = Digest(b.Config)
	b.Manifest, err = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: b.ConfigDigest, Size: int64(len(b.Config))},
		"layers":        []descriptor{{MediaType: mediaType, Digest: b.LayerDigest, Size: int64(len(b.Layer))}},
	})
	if err != nil {
		return nil, err
	}
	b.ManifestDigest = Digest(b.Manifest)
	md := descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: b.ManifestDigest, Size: int64(len(b.Manifest))}
	if img.Name != "" {
		md.Annotations = map[string]string{"org.opencontainers.image.ref.name": img.Name}
	}
	b.Index, err = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{md},
	})
	return b, err
}

// layoutFiles are the files of the OCI layout, in archive order.
func (b *Built) layoutFiles() []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", b.Index},
		{"blobs/sha256/" + b.ConfigDigest[7:], b.Config},
		{"blobs/sha256/" + b.ManifestDigest[7:], b.Manifest},
		{"blobs/sha256/" + b.LayerDigest[7:], b.Layer},
	}
}

// Archive returns the image as an OCI archive.
func (b *Built) Archive() ([]byte, error) {
	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range b.layoutFiles() {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := aw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// WriteLayout writes the image as an OCI layout directory at dir.
func (b *Built) WriteLayout(dir string) error {
	for _, f := range b.layoutFiles() {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Archive builds img and returns it as an OCI archive.
func Archive(img Image) (*Built, []byte, error) {
	b, err := img.Build()
	if err != nil {
		return nil, nil, err
	}
	a, err := b.Archive()
	return b, a, err
}
