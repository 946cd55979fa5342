package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/emberhq/ember/oci"
)

// indexVersion is the on-disk index format; bump it when a change is not
// backwards compatible and teach load to convert.
const indexVersion = 1

// index is the store's catalogue, kept in memory and written whole to
// index.json on every change. It is small (a record per image and per
// layer), so rewriting it atomically is simpler and safer than a database.
type index struct {
	Version int `json:"version"`
	// Names maps a canonical reference (NormalizeRef) to a manifest digest.
	Names map[string]string `json:"names"`
	// Images maps a manifest digest to the image. An image with no name left
	// (its name was re-pointed by a later import) stays until removed by ID,
	// so that GC never pulls layers from under a worker still running it.
	Images map[string]*imageRecord `json:"images"`
	// Layers maps a layer's diff ID to its unpacked directory.
	Layers map[string]*layerRecord `json:"layers"`
}

type imageRecord struct {
	// ID is the config digest (Docker's image ID).
	ID           string          `json:"id"`
	Config       oci.ImageConfig `json:"config"`
	Layers       []layerRef      `json:"layers"` // bottom (first applied) first
	Size         int64           `json:"size"`
	ManifestSize int64           `json:"manifestSize"`
	ConfigSize   int64           `json:"configSize"`
	Imported     time.Time       `json:"imported"`
}

// layerRef is one layer of an image: which content (diff ID) and which
// stored blob it came from (the same content may arrive compressed
// differently in different images).
type layerRef struct {
	DiffID   string `json:"diffID"`
	Blob     string `json:"blob"`
	BlobSize int64  `json:"blobSize"`
}

type layerRecord struct {
	// Dir is relative to the store root: "l/<hex prefix of the diff ID>".
	Dir string `json:"dir"`
	// Size is the layer's uncompressed tar size.
	Size int64 `json:"size"`
}

func newIndex() *index {
	return &index{
		Version: indexVersion,
		Names:   map[string]string{},
		Images:  map[string]*imageRecord{},
		Layers:  map[string]*layerRecord{},
	}
}

// loadIndex reads path, or returns an empty index when it does not exist yet.
func loadIndex(path string) (*index, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newIndex(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading image index: %w", err)
	}
	idx := newIndex()
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("image index %s is damaged: %w", path, err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("image index %s has version %d; this ember reads version %d", path, idx.Version, indexVersion)
	}
	return idx, nil
}

// clone returns a deep copy, so that a change can be prepared, written, and
// only then swapped in: a failed write leaves the in-memory index as it was.
func (x *index) clone() *index {
	c := newIndex()
	for k, v := range x.Names {
		c.Names[k] = v
	}
	for k, v := range x.Images {
		r := *v
		r.Layers = append([]layerRef(nil), v.Layers...)
		c.Images[k] = &r
	}
	for k, v := range x.Layers {
		r := *v
		c.Layers[k] = &r
	}
	return c
}

// namesOf returns the names pointing at manifest digest d.
func (x *index) namesOf(d string) []string {
	var names []string
	for n, md := range x.Names {
		if md == d {
			names = append(names, n)
		}
	}
	return names
}

// save writes the index to path atomically: a crash leaves either the old
// or the new file, never a torn one, and the new one is durable on return.
func (x *index) save(path string) error {
	b, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding image index: %w", err)
	}
	return writeFileAtomic(path, b)
}

// writeFileAtomic writes b to a temporary file beside path, fsyncs it,
// renames it over path and fsyncs the directory so the rename itself
// survives a power cut.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
