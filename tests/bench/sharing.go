package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"

	"github.com/emberhq/ember/oci/image"
)

// sharedBaseFigure imports two images that share a 64 MiB base layer and
// differ in a small top layer, and compares the disk the store uses with
// the sum of the two images' sizes.
func sharedBaseFigure(ctx context.Context, tmp string) error {
	rnd := rand.New(rand.NewSource(1))
	base := make([]byte, 64<<20)
	rnd.Read(base)
	baseLayer := tarOf(map[string][]byte{"opt/model.bin": base})
	st, err := image.Open(filepath.Join(tmp, "shared-store"), image.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	var sum int64
	for i, name := range []string{"bench/a:1", "bench/b:1"} {
		top := tarOf(map[string][]byte{"app/handler": []byte(fmt.Sprintf("handler %d\n", i))})
		dir := filepath.Join(tmp, fmt.Sprintf("layout-%d", i))
		if err := writeLayout(dir, name, [][]byte{baseLayer, top}); err != nil {
			return err
		}
		img, err := st.Import(ctx, dir, image.ImportOptions{})
		if err != nil {
			return err
		}
		sum += img.Size
	}
	used := diskUsage(filepath.Join(tmp, "shared-store"))
	fmt.Printf("%-52s %12s\n", "two images sharing a 64 MiB base: their sizes", fmt.Sprintf("%.1f MiB", float64(sum)/(1<<20)))
	fmt.Printf("%-52s %12s\n", "  disk the store uses for both (blobs + layers)", fmt.Sprintf("%.1f MiB", float64(used)/(1<<20)))
	return nil
}

func tarOf(files map[string][]byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	return b.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// writeLayout writes an OCI image layout with uncompressed layers.
func writeLayout(dir, name string, layers [][]byte) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(b []byte) (string, error) {
		d := sha(b)
		return d, os.WriteFile(filepath.Join(blobs, d[7:]), b, 0o644)
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var layerDescs []desc
	var diffIDs []string
	for _, l := range layers {
		d, err := put(l)
		if err != nil {
			return err
		}
		layerDescs = append(layerDescs, desc{"application/vnd.oci.image.layer.v1.tar", d, int64(len(l)), nil})
		diffIDs = append(diffIDs, d)
	}
	config, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/app/handler"}}, "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cd, err := put(config)
	if err != nil {
		return err
	}
	manifest, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{"application/vnd.oci.image.config.v1+json", cd, int64(len(config)), nil}, "layers": layerDescs})
	md, err := put(manifest)
	if err != nil {
		return err
	}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{"application/vnd.oci.image.manifest.v1+json", md, int64(len(manifest)),
		map[string]string{"org.opencontainers.image.ref.name": name}}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// diskUsage sums the allocated size of the files under dir, each inode
// once.
func diskUsage(dir string) int64 {
	seen := map[uint64]bool{}
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}
