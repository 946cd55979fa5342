// Package image is Ember's image store: it imports images from `docker
// save` tarballs and OCI image layouts (directories or archives) without a
// registry, keeps their blobs content-addressed and verified, unpacks each
// layer once into a read-only directory in overlayfs lowerdir format, and
// resolves image references to those directories for the container runtime
// (it implements oci.Images).
//
// On-disk layout under the store's directory:
//
//	index.json        the catalogue (names, images, layers), replaced atomically
//	lock              flock'd by the process that has the store open
//	blobs/sha256/<h>  manifests, configs and layer blobs, verified on import
//	l/<h12>           one unpacked layer per diff ID; short names keep many
//	                  lowerdirs within overlayfs's one-page mount options
//	tmp/              imports in progress; emptied on Open
//
// Unpacked layers carry whiteouts as overlayfs does (0:0 character devices
// and the trusted.overlay.opaque xattr), which needs root.
package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
)

// DefaultMaxImageBytes caps what one image may unpack to unless Options
// says otherwise: above any real GPU worker image, below a full disk.
const DefaultMaxImageBytes int64 = 64 << 30

// Sentinel errors, for callers that map them to API answers.
var (
	ErrNotFound       = errors.New("image not found")
	ErrInUse          = errors.New("image in use")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrNameRequired   = errors.New("image name required")
)

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// MaxImageBytes caps the unpacked size of one image (all its layers),
	// and the size of a staged archive. Default DefaultMaxImageBytes.
	MaxImageBytes int64
	// MaxLayerBytes caps the unpacked size of one layer. Default
	// MaxImageBytes.
	MaxLayerBytes int64
	// Parallelism is how many layers are unpacked at once. Default: the
	// number of CPUs, at most 4 (gzip is single-threaded per layer; more
	// than a few streams only contend for the disk).
	Parallelism int
}

func (o Options) withDefaults() Options {
	if o.MaxImageBytes <= 0 {
		o.MaxImageBytes = DefaultMaxImageBytes
	}
	if o.MaxLayerBytes <= 0 || o.MaxLayerBytes > o.MaxImageBytes {
		o.MaxLayerBytes = o.MaxImageBytes
	}
	if o.Parallelism <= 0 {
		o.Parallelism = min(runtime.GOMAXPROCS(0), 4)
	}
	return o
}

// Store is an image store opened on a directory. It is safe for concurrent
// use. One process at a time may have a directory open (the in-memory index
// is authoritative), which Open enforces with a lock file.
type Store struct {
	root string
	opts Options
	lock *os.File

	// importMu serializes imports with each other and with GC: an import's
	// decisions (which layers and blobs already exist) hold until it
	// commits, and GC never sees an import's uncommitted files.
	importMu sync.Mutex
	// mu guards idx. Readers (Resolve, List, Inspect) take it shared and
	// are never blocked by an import's unpacking, only by its commit.
	mu  sync.RWMutex
	idx *index

	// pullMu guards pulls, the work directories under tmp/ of pulls that
	// are downloading (without importMu), which cleanTmp leaves alone.
	pullMu sync.Mutex
	pulls  map[string]bool
}

// Image describes an imported image.
type Image struct {
	// Names are the canonical references that point at the image (sorted);
	// empty for an image whose name a later import took over.
	Names []string
	// ID is the config digest, Docker's image ID.
	ID string
	// Digest is the manifest digest.
	Digest string
	Config oci.ImageConfig
	// Layers are bottom (first applied) first, as in the manifest.
	Layers []Layer
	// Size is the sum of the layers' uncompressed tar sizes.
	Size     int64
	Imported time.Time
}

// Layer is one unpacked layer of an image.
type Layer struct {
	DiffID string
	// Blob is the digest of the stored (possibly compressed) layer blob.
	Blob string
	// Dir is the unpacked layer's directory (absolute).
	Dir  string
	Size int64
}

// GCStats says what GC removed.
type GCStats struct {
	Layers int
	Blobs  int
	// Bytes is the size of the removed blobs plus the uncompressed size of
	// the removed layers that were still recorded.
	Bytes int64
}

var _ oci.Images = (*Store)(nil)

// Open opens (creating it if needed) the store in dir. It takes the store's
// lock, removes what interrupted imports left in tmp/, and loads the index.
func Open(dir string, opts Options) (*Store, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", dir, err)
	}
	for _, d := range []string{root, filepath.Join(root, "blobs", "sha256"), filepath.Join(root, "l"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("image store %s: %w", root, err)
		}
	}
	lock, err := lockStore(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: root, opts: opts.withDefaults(), lock: lock}
	if err := s.cleanTmp(); err != nil {
		lock.Close()
		return nil, err
	}
	if s.idx, err = loadIndex(s.indexPath()); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// lockStore takes an exclusive flock on root/lock, so that a second
// process (say, an offline `ember image import` while emberd runs) fails
// with a clear error instead of overwriting the other's index.
func lockStore(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("image store %s is in use by another process", root)
		}
		return nil, fmt.Errorf("locking image store %s: %w", root, err)
	}
	return f, nil
}

// Close releases the store's lock. The Store must not be used afterwards.
func (s *Store) Close() error {
	return s.lock.Close()
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.root }

func (s *Store) indexPath() string { return filepath.Join(s.root, "index.json") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }
func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.root, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// cleanTmp removes interrupted imports and index temp files. Callers hold
// importMu or have the store to themselves (Open).
func (s *Store) cleanTmp() error {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	s.pullMu.Lock()
	defer s.pullMu.Unlock()
	for _, e := range entries {
		if s.pulls[e.Name()] {
			continue
		}
		if err := removeAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return fmt.Errorf("image store: clearing tmp: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(s.root, ".index.json.tmp-*"))
	for _, p := range stale {
		os.Remove(p)
	}
	return nil
}

// Resolve implements oci.Images: the image's layer directories, top layer
// first (overlayfs lowerdir order), and its config. It fails if a layer
// directory has gone missing, rather than let a container start on a
// partial root filesystem.
//
// A layer that occurs more than once in an image (typically an empty one)
// is listed once, at its topmost position: overlayfs refuses a repeated
// lowerdir (ELOOP, "conflicting lowerdir path"), and dropping the lower
// copies changes nothing in the merged view, since whatever a lower copy
// could show, the identical upper copy already shows.
func (s *Store) Resolve(ref string) (oci.RootFS, error) {
	img, err := s.Inspect(ref)
	if err != nil {
		return oci.RootFS{}, err
	}
	fsys := oci.RootFS{Config: img.Config, Layers: make([]string, 0, len(img.Layers))}
	seen := map[string]bool{}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		dir := img.Layers[i].Dir
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return oci.RootFS{}, fmt.Errorf("image %s is damaged: layer %s is missing (%v); import it again", ref, img.Layers[i].DiffID, err)
		}
		fsys.Layers = append(fsys.Layers, dir)
	}
	return fsys, nil
}

// Inspect describes the image ref names: a name ("ubuntu:22.04"), a name
// with a digest, an image ID or manifest digest ("sha256:<hex>"), or a
// unique hex prefix of either of at least 12 digits.
func (s *Store) Inspect(ref string) (Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	digest, _, err := s.lookup(ref)
	if err != nil {
		return Image{}, err
	}
	return s.image(digest), nil
}

// List returns every image, named ones sorted by first name, then unnamed
// ones by digest.
func (s *Store) List() []Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	imgs := make([]Image, 0, len(s.idx.Images))
	for d := range s.idx.Images {
		imgs = append(imgs, s.image(d))
	}
	sort.Slice(imgs, func(i, j int) bool {
		a, b := imgs[i], imgs[j]
		if (len(a.Names) == 0) != (len(b.Names) == 0) {
			return len(a.Names) > 0
		}
		if len(a.Names) > 0 && a.Names[0] != b.Names[0] {
			return a.Names[0] < b.Names[0]
		}
		return a.Digest < b.Digest
	})
	return imgs
}

// lookup finds the manifest digest ref names. byName reports whether it
// matched a name (so Remove drops only that name). Callers hold mu.
func (s *Store) lookup(ref string) (digest string, byName bool, err error) {
	if canon, err := NormalizeRef(ref); err == nil {
		if _, d, ok := strings.Cut(canon, "@"); ok {
			if _, found := s.idx.Images[d]; found {
				return d, false, nil
			}
		} else if d, found := s.idx.Names[canon]; found {
			return d, true, nil
		}
	}
	hex, ok := idPrefix(ref)
	if !ok {
		return "", false, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	var match string
	for d, rec := range s.idx.Images {
		if strings.HasPrefix(d, "sha256:"+hex) || strings.HasPrefix(rec.ID, "sha256:"+hex) {
			if match != "" && match != d {
				return "", false, fmt.Errorf("image %q is ambiguous: it prefixes more than one image's ID", ref)
			}
			match = d
		}
	}
	if match == "" {
		return "", false, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	return match, false, nil
}

// image builds the public description of the image with manifest digest d.
// Callers hold mu.
func (s *Store) image(d string) Image {
	rec := s.idx.Images[d]
	names := s.idx.namesOf(d)
	sort.Strings(names)
	img := Image{
		Names:    names,
		ID:       rec.ID,
		Digest:   d,
		Config:   cloneConfig(rec.Config),
		Size:     rec.Size,
		Imported: rec.Imported,
	}
	for _, l := range rec.Layers {
		lr := s.idx.Layers[l.DiffID]
		layer := Layer{DiffID: l.DiffID, Blob: l.Blob}
		if lr != nil {
			layer.Dir = filepath.Join(s.root, lr.Dir)
			layer.Size = lr.Size
		}
		img.Layers = append(img.Layers, layer)
	}
	return img
}

// cloneConfig copies the slices so callers cannot alter the index.
func cloneConfig(c oci.ImageConfig) oci.ImageConfig {
	c.Entrypoint = append([]string(nil), c.Entrypoint...)
	c.Cmd = append([]string(nil), c.Cmd...)
	c.Env = append([]string(nil), c.Env...)
	return c
}

// Remove deletes ref. If ref is a name, only that name goes (the image
// stays while other names point at it); if it is an ID or digest, the image
// and all its names go. inUse is asked about every name being removed and,
// when the image itself goes, about its ID ("sha256:<config hex>"): return
// true for any that a worker runs, and Remove refuses with ErrInUse.
// Names are canonical (compare with NormalizeRef of the worker's image).
// Disk space comes back with GC.
func (s *Store) Remove(ref string, inUse func(ref string) bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	digest, byName, err := s.lookup(ref)
	if err != nil {
		return err
	}
	next := s.idx.clone()
	rec := next.Images[digest]
	var names []string
	if byName {
		canon, _ := NormalizeRef(ref)
		names = []string{canon}
	} else {
		names = next.namesOf(digest)
	}
	for _, n := range names {
		delete(next.Names, n)
	}
	check := names
	if len(next.namesOf(digest)) == 0 {
		delete(next.Images, digest)
		check = append(check, rec.ID)
	}
	if inUse != nil {
		for _, n := range check {
			if inUse(n) {
				return fmt.Errorf("removing image %s: %w by a worker (%s)", ref, ErrInUse, n)
			}
		}
	}
	if err := next.save(s.indexPath()); err != nil {
		return fmt.Errorf("removing image %s: %w", ref, err)
	}
	s.idx = next
	return nil
}

// GC deletes layer directories and blobs no image references, and anything
// interrupted imports left behind. It waits for an import in progress.
//
// GC cannot know which layers running containers use; it relies on images
// staying in the index while they run: Remove asks inUse, and an image
// whose name a later import takes over stays (unnamed) until removed by ID.
func (s *Store) GC() (GCStats, error) {
	s.importMu.Lock()
	defer s.importMu.Unlock()
	if err := s.cleanTmp(); err != nil {
		return GCStats{}, err
	}
	liveDirs, liveBlobs, stats, err := s.dropUnusedLayers()
	if err != nil {
		return stats, err
	}
	if err := s.sweep(filepath.Join(s.root, "l"), func(name string) bool { return liveDirs["l/"+name] }, &stats.Layers, nil); err != nil {
		return stats, err
	}
	err = s.sweep(filepath.Join(s.root, "blobs", "sha256"), func(name string) bool { return liveBlobs[name] }, &stats.Blobs, &stats.Bytes)
	return stats, err
}

// dropUnusedLayers removes layer records no image uses from the index
// (written before any directory goes, so the index never points at a
// deleted layer) and returns the layer directories and blob hexes still in
// use.
func (s *Store) dropUnusedLayers() (liveDirs, liveBlobs map[string]bool, stats GCStats, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	usedLayers := map[string]bool{}
	liveBlobs = map[string]bool{}
	for d, rec := range s.idx.Images {
		liveBlobs[strings.TrimPrefix(d, "sha256:")] = true
		liveBlobs[strings.TrimPrefix(rec.ID, "sha256:")] = true
		for _, l := range rec.Layers {
			usedLayers[l.DiffID] = true
			liveBlobs[strings.TrimPrefix(l.Blob, "sha256:")] = true
		}
	}
	next := s.idx.clone()
	liveDirs = map[string]bool{}
	for diffID, lr := range next.Layers {
		if usedLayers[diffID] {
			liveDirs[lr.Dir] = true
			continue
		}
		stats.Bytes += lr.Size
		delete(next.Layers, diffID)
	}
	if len(next.Layers) != len(s.idx.Layers) {
		if err := next.save(s.indexPath()); err != nil {
			return nil, nil, stats, fmt.Errorf("image GC: %w", err)
		}
		s.idx = next
	}
	return liveDirs, liveBlobs, stats, nil
}

// sweep removes the entries of dir that live does not keep, counting them
// (and, for files, their bytes).
func (s *Store) sweep(dir string, live func(name string) bool, count *int, bytes *int64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("image GC: %w", err)
	}
	for _, e := range entries {
		if live(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if info, err := e.Info(); err == nil && bytes != nil && info.Mode().IsRegular() {
			*bytes += info.Size()
		}
		if err := removeAll(p); err != nil {
			return fmt.Errorf("image GC: %w", err)
		}
		*count++
	}
	return nil
}

// removeAll is os.RemoveAll that also copes with directories an image made
// read-only (matters when the store does not run as root).
func removeAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}
