// Command mkimage packs a static binary into a single-layer OCI image and
// writes it as an OCI archive (a tar of an OCI image layout), so Ember can
// import a worker image without a registry or a container engine:
//
//	CGO_ENABLED=0 go build -o /tmp/worker ./examples/worker
//	go run ./examples/worker/mkimage -binary /tmp/worker -name ember/example-worker:latest -o worker.tar
//
// The binary lands at /worker, which is the image's entrypoint.
//
// With -rootfs it packs a whole root file system instead (a debootstrap
// tree, say), with files added by -add and the entrypoint given by
// -entrypoint:
//
//	go run ./examples/worker/mkimage -rootfs /srv/bookworm -exclude var/lib/apt/lists \
//	  -add handler.py:/worker.py -entrypoint '/usr/bin/python3 -u /worker.py' -name acme/py:1 -o py.tar
//
// The layer is built in memory: meant for images of a few hundred MB.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

func main() {
	bin := flag.String("binary", "", "static binary to pack (becomes /worker)")
	name := flag.String("name", "ember/example-worker:latest", "image reference recorded in the archive")
	out := flag.String("o", "worker-image.tar", "output archive")
	format := flag.String("format", "oci", "archive format: oci (an OCI image layout as a tar) or docker (the layout of `docker save`)")
	flag.StringVar(&layerCompression, "compress", "gzip", "layer compression of the oci format: gzip or zstd")
	flag.StringVar(&rootfs, "rootfs", "", "root file system directory to pack as the layer (device nodes and the contents of dev/, proc/, sys/ left out)")
	flag.Var(&excludes, "exclude", "path under -rootfs to leave out with its contents (repeatable)")
	flag.Var(&adds, "add", "SRC:DEST, a file to add to the image at DEST (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "the image's entrypoint, words separated by spaces (default /worker)")
	flag.Parse()
	if layerCompression != "gzip" && layerCompression != "zstd" {
		fmt.Fprintf(os.Stderr, "mkimage: -compress %q: want gzip or zstd\n", layerCompression)
		os.Exit(2)
	}
	if *format != "oci" && *format != "docker" {
		fmt.Fprintf(os.Stderr, "mkimage: -format %q: want oci or docker\n", *format)
		os.Exit(2)
	}
	dockerFormat = *format == "docker"
	if *bin == "" && rootfs == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -binary or -rootfs is required")
		os.Exit(2)
	}
	if err := run(*bin, *name, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// dockerFormat selects the `docker save` layout instead of an OCI layout.
var dockerFormat bool

// layerCompression is the OCI layer's compression: "gzip" or "zstd".
var layerCompression = "gzip"

// compressLayer compresses the layer tar with layerCompression and returns
// the blob and its media type.
func compressLayer(raw []byte) ([]byte, string, error) {
	var buf bytes.Buffer
	var zw io.WriteCloser
	mediaType := "application/vnd.oci.image.layer.v1.tar+" + layerCompression
	if layerCompression == "zstd" {
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			return nil, "", err
		}
		zw = w
	} else {
		zw = gzip.NewWriter(&buf)
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), mediaType, nil
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func run(binPath, name, out string) error {
	// The layer: /worker plus the directories a worker expects to exist,
	// or the -rootfs tree with /worker if given; then the -add files.
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	epoch := time.Unix(0, 0)
	type file struct {
		name string
		mode int64
		data []byte
	}
	var files []file
	if binPath != "" {
		binData, err := os.ReadFile(binPath)
		if err != nil {
			return err
		}
		files = append(files, file{"worker", 0o755, binData})
	}
	if rootfs != "" {
		if err := tarTree(tw, rootfs, excludes); err != nil {
			return err
		}
	} else {
		for _, dir := range []string{"tmp/", "etc/", "runpod-volume/"} {
			mode := int64(0o755)
			if dir == "tmp/" {
				mode = 0o1777
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: epoch}); err != nil {
				return err
			}
		}
		files = append(files,
			file{"etc/passwd", 0o644, []byte("root:x:0:0:root:/:/worker\nnobody:x:65534:65534:nobody:/:/worker\n")},
			file{"etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")})
	}
	for _, a := range adds {
		src, dest, _ := strings.Cut(a, ":")
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		st, err := os.Stat(src)
		if err != nil {
			return err
		}
		files = append(files, file{strings.TrimPrefix(dest, "/"), int64(st.Mode().Perm()), b})
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	diffID := digestOf(raw.Bytes())
	layer, layerType, err := compressLayer(raw.Bytes())
	if err != nil {
		return err
	}

	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": entrypointWords(),
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: layerType, Digest: digestOf(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType:   "application/vnd.oci.image.manifest.v1+json",
			Digest:      digestOf(manifest),
			Size:        int64(len(manifest)),
			Annotations: map[string]string{"org.opencontainers.image.ref.name": name},
		}},
	})
	if err != nil {
		return err
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	aw := tar.NewWriter(f)
	type entry struct {
		name string
		data []byte
	}
	entries := []entry{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"blobs/sha256/" + digestOf(config)[7:], config},
		{"blobs/sha256/" + digestOf(manifest)[7:], manifest},
		{"blobs/sha256/" + digestOf(layer)[7:], layer},
	}
	dirs := []string{"blobs/", "blobs/sha256/"}
	if dockerFormat {
		// docker save: manifest.json naming the config file and one
		// uncompressed layer tar per layer directory.
		layerDir := diffID[7:19] + "/"
		dm, err := json.Marshal([]map[string]any{{
			"Config":   digestOf(config)[7:] + ".json",
			"RepoTags": []string{name},
			"Layers":   []string{layerDir + "layer.tar"},
		}})
		if err != nil {
			f.Close()
			return err
		}
		entries = []entry{
			{"manifest.json", dm},
			{digestOf(config)[7:] + ".json", config},
			{layerDir + "layer.tar", raw.Bytes()},
		}
		dirs = []string{layerDir}
	}
	for _, dir := range dirs {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			f.Close()
			return err
		}
	}
	for _, e := range entries {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			f.Close()
			return err
		}
		if _, err := io.Copy(aw, bytes.NewReader(e.data)); err != nil {
			f.Close()
			return err
		}
	}
	if err := aw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
