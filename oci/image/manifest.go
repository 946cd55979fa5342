package image

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
)

// The JSON documents of the OCI image spec and of `docker save`, reduced to
// the fields the store reads. They are declared here rather than taken from
// github.com/opencontainers/image-spec because its specs-go/v1 package pulls
// in github.com/opencontainers/go-digest, a module this repository does not
// require yet; the field names follow the spec exactly.

// Media types the store recognises.
const (
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	mediaTypeOCILayer       = "application/vnd.oci.image.layer.v1.tar"
	mediaTypeOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaTypeOCILayerZstd   = "application/vnd.oci.image.layer.v1.tar+zstd"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
)

// Annotations that name an image inside an OCI layout. containerd's (also
// written by `docker save` since Docker 25) carries the full reference;
// the OCI one is often only a tag, so containerd's is preferred.
const (
	annotationRefName       = "org.opencontainers.image.ref.name"
	annotationContainerdRef = "io.containerd.image.name"
)

// Bounds for the JSON documents, read whole into memory. Real configs with
// long histories are a few hundred KiB.
const (
	maxJSONSize = 16 << 20
	// maxIndexDepth bounds nested image indexes (index -> index -> ...).
	maxIndexDepth = 4
)

type descriptor struct {
	MediaType   string            `json:"mediaType,omitempty"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type ociLayout struct {
	ImageLayoutVersion string `json:"imageLayoutVersion"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []descriptor `json:"manifests"`
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

// configFile is an image config (OCI or Docker, which agree on these fields).
type configFile struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User       string   `json:"User,omitempty"`
		Env        []string `json:"Env,omitempty"`
		Entrypoint []string `json:"Entrypoint,omitempty"`
		Cmd        []string `json:"Cmd,omitempty"`
		WorkingDir string   `json:"WorkingDir,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// dockerManifestEntry is one element of a `docker save` manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// decodeJSON unmarshals b into v, naming what was being read on failure.
func decodeJSON(b []byte, v any, what string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is not valid JSON: %w", what, err)
	}
	return nil
}

// isIndexMediaType reports whether a descriptor points at an image index
// (a multi-platform list) rather than a single image's manifest.
func isIndexMediaType(mt string) bool {
	return mt == mediaTypeOCIIndex || mt == mediaTypeDockerList
}

// checkManifest refuses manifests that are not container images (artifacts,
// schema 1) before any of their blobs are read.
func checkManifest(m *ociManifest) error {
	if m.SchemaVersion != 2 {
		return fmt.Errorf("manifest schemaVersion %d is not supported (want 2)", m.SchemaVersion)
	}
	switch m.MediaType {
	case "", mediaTypeOCIManifest, mediaTypeDockerManifest:
	default:
		return fmt.Errorf("manifest media type %q is not an image manifest", m.MediaType)
	}
	switch m.Config.MediaType {
	case mediaTypeOCIConfig, mediaTypeDockerConfig:
	default:
		return fmt.Errorf("config media type %q is not a container image config (an artifact?)", m.Config.MediaType)
	}
	if len(m.Layers) == 0 {
		return fmt.Errorf("image has no layers: nothing to run")
	}
	for _, l := range m.Layers {
		if err := checkLayerMediaType(l.MediaType); err != nil {
			return err
		}
	}
	return nil
}

// checkLayerMediaType accepts tar layers, uncompressed or compressed with
// gzip or zstd, distributable or not (tar, tar+gzip, tar+zstd and their
// nondistributable twins); the compression is then detected from the
// bytes, as Docker does. The rest is refused with a message saying why.
func checkLayerMediaType(mt string) error {
	switch {
	case strings.Contains(mt, ".tar") || strings.Contains(mt, "rootfs.diff"):
		return nil
	default:
		return fmt.Errorf("layer media type %q is not an image layer", mt)
	}
}

// checkConfig refuses configs that cannot run here: another OS or CPU, or a
// rootfs that does not list one diff ID per layer.
func checkConfig(c *configFile, layers int) error {
	if c.OS != "" && c.OS != "linux" {
		return fmt.Errorf("image is for os %q, not linux", c.OS)
	}
	if c.Architecture != "" && c.Architecture != runtime.GOARCH {
		return fmt.Errorf("image is for architecture %q, this machine is %q", c.Architecture, runtime.GOARCH)
	}
	if c.RootFS.Type != "layers" {
		return fmt.Errorf("config rootfs type %q is not \"layers\"", c.RootFS.Type)
	}
	if len(c.RootFS.DiffIDs) != layers {
		return fmt.Errorf("config lists %d layer diff IDs but the manifest has %d layers", len(c.RootFS.DiffIDs), layers)
	}
	for _, d := range c.RootFS.DiffIDs {
		if _, err := parseDigest(d); err != nil {
			return fmt.Errorf("config diff ID: %w", err)
		}
	}
	return nil
}

// platformMatches reports whether a descriptor from an image index is for
// this machine. Descriptors without a platform match (single-image indexes
// often omit it); attestation manifests ("unknown/unknown") do not.
func platformMatches(p *platform) bool {
	return p == nil || (p.OS == "linux" && p.Architecture == runtime.GOARCH)
}
