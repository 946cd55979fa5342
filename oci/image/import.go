package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
)

// ImportOptions tune one Import.
type ImportOptions struct {
	// Name is the reference to import the image under. Empty: the names
	// the archive gives (RepoTags, or the layout's ref.name annotation).
	// When an archive holds several images, Name also picks the one whose
	// archive name it is.
	Name string
	// Progress, if set, is called as the import reads its input, with
	// bytes done and bytes in total, from the importing goroutines (one
	// call at a time). For tarballs the total is first an estimate and
	// becomes exact once the archive's manifest has been read.
	Progress func(done, total int64)
}

// importer is the state of one Import: its private work directory (under
// the store's tmp/, removed at the end whatever happens, which is what
// leaves nothing behind on failure) and what it has decided so far.
type importer struct {
	s        *Store
	ctx      context.Context
	work     string
	progress *progress
	budget   *imageBudget
}

// candidate is one image an archive offers.
type candidate struct {
	names    []string
	manifest descriptor           // OCI layout
	docker   *dockerManifestEntry // docker save
}

// plan is the selected image, its manifest and config read and verified,
// and the layers still to go through.
type plan struct {
	manifestJSON   []byte // nil until synthesized for docker save archives
	manifestDigest string
	configJSON     []byte
	configDigest   string
	config         configFile
	layers         []*layerTask
}

// Import reads the image at path (a `docker save` tarball, an OCI image
// layout directory, or an OCI archive; tarballs may be compressed with
// gzip or zstd), verifies
// every digest, unpacks the layers the store does not have yet, and records
// it under its name(s). On any failure nothing new is left in the store.
// Imports run one at a time; Resolve and the other readers are not held up.
func (s *Store) Import(ctx context.Context, path string, opts ImportOptions) (Image, error) {
	img, err := s.importImage(ctx, path, opts, false)
	if err != nil {
		return Image{}, fmt.Errorf("importing %s: %w", path, err)
	}
	return img, nil
}

// importImage is Import. unnamed lets an image that neither opts.Name nor
// the archive names in (Pull by digest alone): it is then addressed by
// digest or ID.
func (s *Store) importImage(ctx context.Context, path string, opts ImportOptions, unnamed bool) (Image, error) {
	var name string
	if opts.Name != "" {
		var err error
		if name, err = importName(opts.Name); err != nil {
			return Image{}, err
		}
	}
	s.importMu.Lock()
	defer s.importMu.Unlock()
	work, err := os.MkdirTemp(s.tmpDir(), "import-")
	if err != nil {
		return Image{}, err
	}
	defer removeAll(work)
	imp := &importer{
		s:        s,
		ctx:      ctx,
		work:     work,
		progress: &progress{fn: opts.Progress},
		budget:   &imageBudget{limit: s.opts.MaxImageBytes},
	}
	for _, d := range []string{"stage", "layers", "blobs"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o700); err != nil {
			return Image{}, err
		}
	}
	src, err := imp.openSource(path)
	if err != nil {
		return Image{}, err
	}
	defer src.close()
	return imp.run(src, name, unnamed)
}

// importName validates a name given for an import: a tag, not a digest.
func importName(n string) (string, error) {
	canon, err := NormalizeRef(n)
	if err != nil {
		return "", err
	}
	if strings.Contains(canon, "@") {
		return "", fmt.Errorf("image name %q carries a digest; give a name with a tag instead", n)
	}
	return canon, nil
}

func (imp *importer) run(src source, name string, unnamed bool) (Image, error) {
	cands, err := imp.candidates(src)
	if err != nil {
		return Image{}, err
	}
	cand, err := pickCandidate(cands, name)
	if err != nil {
		return Image{}, err
	}
	names := []string{name}
	switch {
	case name == "" && unnamed:
		names = nil
	case name == "":
		if names, err = archiveNames(cand); err != nil {
			return Image{}, err
		}
	}
	p, err := imp.plan(src, cand)
	if err != nil {
		return Image{}, err
	}
	if err := imp.runLayers(src, p); err != nil {
		return Image{}, err
	}
	if p.manifestJSON == nil {
		if err := imp.synthesizeManifest(p); err != nil {
			return Image{}, err
		}
	}
	img, err := imp.commit(p, names)
	if err != nil {
		return Image{}, err
	}
	imp.progress.finish()
	return img, nil
}

// openSource opens a layout directory in place or stages a tarball.
func (imp *importer) openSource(path string) (source, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openDirSource(path)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is neither a directory nor a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Until the manifest says how much of the archive is layers to unpack,
	// guess that all of it is.
	imp.progress.setTotal(2 * st.Size())
	cr := &countingReader{r: f, onRead: imp.progress.add}
	ts, err := stageTar(imp.ctx, cr, filepath.Join(imp.work, "stage"), imp.s.opts.MaxImageBytes)
	if err != nil {
		return nil, err
	}
	imp.progress.setBase(cr.n)
	return ts, nil
}

// candidates lists the images the source offers. A `docker save`
// manifest.json wins over an OCI index.json (Docker 25 writes both; only
// manifest.json carries full names).
func (imp *importer) candidates(src source) ([]candidate, error) {
	switch {
	case src.has("manifest.json"):
		return dockerCandidates(src)
	case src.has("oci-layout") && src.has("index.json"):
		if err := checkLayout(src); err != nil {
			return nil, err
		}
		b, err := readSmall(src, "index.json")
		if err != nil {
			return nil, err
		}
		var idx ociIndex
		if err := decodeJSON(b, &idx, "index.json"); err != nil {
			return nil, err
		}
		return imp.ociCandidates(src, idx.Manifests, nil, 0)
	default:
		return nil, fmt.Errorf("not an image archive: neither manifest.json (docker save) nor oci-layout and index.json (OCI layout) found")
	}
}

func checkLayout(src source) error {
	b, err := readSmall(src, "oci-layout")
	if err != nil {
		return err
	}
	var l ociLayout
	if err := decodeJSON(b, &l, "oci-layout"); err != nil {
		return err
	}
	if l.ImageLayoutVersion != "1.0.0" {
		return fmt.Errorf("OCI layout version %q is not supported (want 1.0.0)", l.ImageLayoutVersion)
	}
	return nil
}

func dockerCandidates(src source) ([]candidate, error) {
	b, err := readSmall(src, "manifest.json")
	if err != nil {
		return nil, err
	}
	var entries []dockerManifestEntry
	if err := decodeJSON(b, &entries, "manifest.json"); err != nil {
		return nil, err
	}
	cands := make([]candidate, 0, len(entries))
	for i := range entries {
		cands = append(cands, candidate{names: entries[i].RepoTags, docker: &entries[i]})
	}
	return cands, nil
}

// ociCandidates walks an index's descriptors, descending into nested
// indexes (multi-platform images) and keeping manifests for this platform.
// A name annotation applies to what lies below it.
func (imp *importer) ociCandidates(src source, descs []descriptor, names []string, depth int) ([]candidate, error) {
	var out []candidate
	for _, d := range descs {
		n := names
		if own := annotatedName(d); own != "" {
			n = []string{own}
		}
		if !platformMatches(d.Platform) {
			continue
		}
		switch {
		case isIndexMediaType(d.MediaType):
			if depth >= maxIndexDepth {
				return nil, fmt.Errorf("image indexes nested more than %d deep", maxIndexDepth)
			}
			b, err := readBlob(src, d, "image index")
			if err != nil {
				return nil, err
			}
			var idx ociIndex
			if err := decodeJSON(b, &idx, "image index "+d.Digest); err != nil {
				return nil, err
			}
			sub, err := imp.ociCandidates(src, idx.Manifests, n, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		case d.MediaType == mediaTypeOCIManifest || d.MediaType == mediaTypeDockerManifest:
			out = append(out, candidate{names: n, manifest: d})
		}
	}
	return mergeCandidates(out), nil
}

// annotatedName prefers containerd's full reference to the OCI ref.name,
// which is often only a tag.
func annotatedName(d descriptor) string {
	if n := d.Annotations[annotationContainerdRef]; n != "" {
		return n
	}
	return d.Annotations[annotationRefName]
}

// mergeCandidates folds descriptors of the same manifest (one image under
// several names) into one candidate.
func mergeCandidates(cands []candidate) []candidate {
	var out []candidate
	seen := map[string]int{}
	for _, c := range cands {
		if i, ok := seen[c.manifest.Digest]; ok {
			out[i].names = append(out[i].names, c.names...)
			continue
		}
		seen[c.manifest.Digest] = len(out)
		out = append(out, c)
	}
	return out
}

// pickCandidate selects the image to import: the only one, or the one
// whose archive name is name.
func pickCandidate(cands []candidate, name string) (candidate, error) {
	switch len(cands) {
	case 0:
		return candidate{}, fmt.Errorf("the archive holds no image for linux/%s", runtime.GOARCH)
	case 1:
		return cands[0], nil
	}
	var all []string
	for _, c := range cands {
		for _, n := range c.names {
			if canon, err := NormalizeRef(n); err == nil && canon == name {
				return c, nil
			}
			all = append(all, n)
		}
	}
	return candidate{}, fmt.Errorf("%w: the archive holds %d images (%s); give the name of the one to import", ErrNameRequired, len(cands), strings.Join(all, ", "))
}

// archiveNames returns the canonical forms of the names the archive gives
// the selected image, refusing when there are none.
func archiveNames(c candidate) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, n := range c.names {
		canon, err := importName(n)
		if err != nil {
			return nil, fmt.Errorf("%w: the archive names the image %q, which is not a usable reference (%v); give a name to import it under", ErrNameRequired, n, err)
		}
		if !seen[canon] {
			seen[canon] = true
			names = append(names, canon)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: the archive does not name the image (no RepoTags or %s annotation); give a name to import it under", ErrNameRequired, annotationRefName)
	}
	return names, nil
}

// readBlob reads a JSON blob of the layout and verifies it against its
// descriptor.
func readBlob(src source, d descriptor, what string) ([]byte, error) {
	hex, err := parseDigest(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if d.Size > maxJSONSize {
		return nil, fmt.Errorf("%s %s is %d bytes, more than the %d allowed for a JSON document", what, d.Digest, d.Size, maxJSONSize)
	}
	b, err := readSmall(src, "blobs/sha256/"+hex)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := verify(b, d.Digest, d.Size, what); err != nil {
		return nil, err
	}
	return b, nil
}

// verify checks content against the digest and size something else gave.
func verify(b []byte, digest string, size int64, what string) error {
	if got := digestOf(b); got != digest {
		return fmt.Errorf("%s: %w: expected %s, content is %s", what, ErrDigestMismatch, digest, got)
	}
	if size >= 0 && int64(len(b)) != size {
		return fmt.Errorf("%s %s: size is %d bytes, descriptor says %d", what, digest, len(b), size)
	}
	return nil
}

// plan reads and verifies the selected image's manifest and config.
func (imp *importer) plan(src source, c candidate) (*plan, error) {
	var p *plan
	var err error
	if c.docker != nil {
		p, err = dockerPlan(src, c.docker)
	} else {
		p, err = ociPlan(src, c.manifest)
	}
	if err != nil {
		return nil, err
	}
	if err := imp.keepJSON(p.configJSON); err != nil {
		return nil, err
	}
	if p.manifestJSON != nil {
		return p, imp.keepJSON(p.manifestJSON)
	}
	return p, nil
}

func ociPlan(src source, md descriptor) (*plan, error) {
	mb, err := readBlob(src, md, "manifest")
	if err != nil {
		return nil, err
	}
	var m ociManifest
	if err := decodeJSON(mb, &m, "manifest "+md.Digest); err != nil {
		return nil, err
	}
	if err := checkManifest(&m); err != nil {
		return nil, err
	}
	cb, err := readBlob(src, m.Config, "config")
	if err != nil {
		return nil, err
	}
	p := &plan{manifestJSON: mb, manifestDigest: md.Digest, configJSON: cb, configDigest: m.Config.Digest}
	if err := decodeJSON(cb, &p.config, "config "+m.Config.Digest); err != nil {
		return nil, err
	}
	if err := checkConfig(&p.config, len(m.Layers)); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		hex, err := parseDigest(l.Digest)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		p.layers = append(p.layers, &layerTask{
			n: i + 1, srcName: "blobs/sha256/" + hex, wantBlob: l.Digest, wantSize: l.Size,
			diffID: p.config.RootFS.DiffIDs[i], mediaType: l.MediaType,
		})
	}
	return p, nil
}

// Paths `docker save` uses: legacy "<hex>.json" configs, and OCI blob
// paths (Docker 25 and later). Both carry the content's digest.
var (
	legacyConfigRE = regexp.MustCompile(`^([a-f0-9]{64})\.json$`)
	blobPathRE     = regexp.MustCompile(`^blobs/sha256/([a-f0-9]{64})$`)
)

// digestFromPath returns the digest a docker-save path promises, if any.
func digestFromPath(p string) string {
	p = archiveName(p)
	if m := blobPathRE.FindStringSubmatch(p); m != nil {
		return "sha256:" + m[1]
	}
	if m := legacyConfigRE.FindStringSubmatch(p); m != nil {
		return "sha256:" + m[1]
	}
	return ""
}

func dockerPlan(src source, e *dockerManifestEntry) (*plan, error) {
	if len(e.Layers) == 0 {
		return nil, fmt.Errorf("image has no layers: nothing to run")
	}
	cb, err := readSmall(src, archiveName(e.Config))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	p := &plan{configJSON: cb, configDigest: digestOf(cb)}
	if want := digestFromPath(e.Config); want != "" {
		if err := verify(cb, want, -1, "config"); err != nil {
			return nil, err
		}
	}
	if err := decodeJSON(cb, &p.config, "config "+e.Config); err != nil {
		return nil, err
	}
	if err := checkConfig(&p.config, len(e.Layers)); err != nil {
		return nil, err
	}
	for i, l := range e.Layers {
		p.layers = append(p.layers, &layerTask{
			n: i + 1, srcName: archiveName(l), wantBlob: digestFromPath(l), wantSize: -1,
			diffID: p.config.RootFS.DiffIDs[i],
		})
	}
	return p, nil
}

// synthesizeManifest writes the OCI manifest a docker-save archive lacks,
// once the layers' blob digests are known, so that every stored image has a
// manifest digest.
func (imp *importer) synthesizeManifest(p *plan) error {
	m := ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeOCIManifest,
		Config:        descriptor{MediaType: mediaTypeOCIConfig, Digest: p.configDigest, Size: int64(len(p.configJSON))},
	}
	for _, t := range p.layers {
		mt := mediaTypeOCILayer
		switch t.comp {
		case gzipped:
			mt = mediaTypeOCILayerGzip
		case zstdCompressed:
			mt = mediaTypeOCILayerZstd
		}
		m.Layers = append(m.Layers, descriptor{MediaType: mt, Digest: t.blob, Size: t.blobSize})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	p.manifestJSON, p.manifestDigest = b, digestOf(b)
	return imp.keepJSON(b)
}

// keepJSON writes a verified JSON blob into the work directory's blobs, to
// be moved into the store at commit.
func (imp *importer) keepJSON(b []byte) error {
	p := filepath.Join(imp.work, "blobs", strings.TrimPrefix(digestOf(b), "sha256:"))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("writing blob: %w", err)
	}
	return nil
}

// commit moves the import's new layers and blobs into the store, makes them
// durable, and only then records the image in the index: a crash at any
// point leaves at worst unreferenced files, which GC removes.
func (imp *importer) commit(p *plan, names []string) (Image, error) {
	s := imp.s
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.idx.clone()
	var moved []string
	ok := false
	defer func() {
		if !ok {
			for _, m := range moved {
				removeAll(m)
			}
		}
	}()
	if err := imp.moveLayers(p, next, &moved); err != nil {
		return Image{}, err
	}
	if err := imp.moveBlobs(&moved); err != nil {
		return Image{}, err
	}
	if err := syncFS(s.root); err != nil {
		return Image{}, err
	}
	rec := &imageRecord{
		ID:           p.configDigest,
		Config:       imageConfig(&p.config),
		ManifestSize: int64(len(p.manifestJSON)),
		ConfigSize:   int64(len(p.configJSON)),
		Imported:     time.Now().UTC(),
	}
	for _, t := range p.layers {
		rec.Layers = append(rec.Layers, layerRef{DiffID: t.diffID, Blob: t.blob, BlobSize: t.blobSize})
		rec.Size += next.Layers[t.diffID].Size
	}
	next.Images[p.manifestDigest] = rec
	for _, n := range names {
		next.Names[n] = p.manifestDigest
	}
	if err := next.save(s.indexPath()); err != nil {
		return Image{}, err
	}
	ok = true
	s.idx = next
	return s.image(p.manifestDigest), nil
}

// moveLayers renames the layers unpacked by this import into l/ and
// records them in next.
func (imp *importer) moveLayers(p *plan, next *index, moved *[]string) error {
	for _, t := range p.layers {
		if !t.unpacked {
			continue
		}
		delete(next.Layers, t.diffID) // a record whose directory went missing
		rel, err := imp.layerDirName(next, t.diffID)
		if err != nil {
			return err
		}
		dst := filepath.Join(imp.s.root, rel)
		if err := os.Rename(t.dir, dst); err != nil {
			return fmt.Errorf("moving layer %s into the store: %w", t.diffID, err)
		}
		*moved = append(*moved, dst)
		next.Layers[t.diffID] = &layerRecord{Dir: rel, Size: t.size}
	}
	return nil
}

// layerDirName picks l/<first 12 hex digits of the diff ID>, lengthening
// the prefix in the (astronomically unlikely) case that another layer has
// it. A directory there that the index does not know is debris from a
// crash between rename and index write, and is replaced.
func (imp *importer) layerDirName(next *index, diffID string) (string, error) {
	hex := strings.TrimPrefix(diffID, "sha256:")
	taken := map[string]bool{}
	for _, lr := range next.Layers {
		taken[lr.Dir] = true
	}
	for n := 12; n <= len(hex); n += 4 {
		rel := "l/" + hex[:n]
		if taken[rel] {
			continue
		}
		if err := removeAll(filepath.Join(imp.s.root, rel)); err != nil {
			return "", fmt.Errorf("clearing stale layer directory %s: %w", rel, err)
		}
		return rel, nil
	}
	return "", fmt.Errorf("no free directory name for layer %s", diffID)
}

// moveBlobs renames the verified blobs of the work directory into
// blobs/sha256/. A blob already referenced by the index is kept; an
// unreferenced one (crash debris, possibly torn) is replaced.
func (imp *importer) moveBlobs(moved *[]string) error {
	dir := filepath.Join(imp.work, "blobs")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	live := imp.s.referencedBlobs()
	for _, e := range entries {
		if !digestRE.MatchString("sha256:" + e.Name()) {
			continue // a partial copy of a blob that was not needed
		}
		if live[e.Name()] {
			continue
		}
		dst := imp.s.blobPath("sha256:" + e.Name())
		if err := os.Rename(filepath.Join(dir, e.Name()), dst); err != nil {
			return fmt.Errorf("moving blob %s into the store: %w", e.Name(), err)
		}
		*moved = append(*moved, dst)
	}
	return nil
}

// referencedBlobs returns the hexes of the blobs the index references.
// Callers hold mu.
func (s *Store) referencedBlobs() map[string]bool {
	live := map[string]bool{}
	for d, rec := range s.idx.Images {
		live[strings.TrimPrefix(d, "sha256:")] = true
		live[strings.TrimPrefix(rec.ID, "sha256:")] = true
		for _, l := range rec.Layers {
			live[strings.TrimPrefix(l.Blob, "sha256:")] = true
		}
	}
	return live
}

// syncFS flushes the store's filesystem: one syncfs covers every unpacked
// file and rename of the import, far cheaper than an fsync per file.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing image store: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncing image store: %w", err)
	}
	return nil
}

// imageConfig extracts what a worker bundle needs from an image config.
func imageConfig(c *configFile) oci.ImageConfig {
	return oci.ImageConfig{
		Entrypoint: c.Config.Entrypoint,
		Cmd:        c.Config.Cmd,
		Env:        c.Config.Env,
		WorkingDir: c.Config.WorkingDir,
		User:       c.Config.User,
	}
}

// progress serializes and throttles progress callbacks.
type progress struct {
	mu       sync.Mutex
	fn       func(done, total int64)
	done     int64
	total    int64
	base     int64 // bytes of a staged tarball, counted before the layers
	reported int64
}

// progressStep is how many bytes pass between two callbacks.
const progressStep = 1 << 20

func (p *progress) add(n int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.done > p.total {
		p.total = p.done
	}
	if p.done-p.reported >= progressStep {
		p.reported = p.done
		p.fn(p.done, p.total)
	}
}

func (p *progress) setTotal(t int64) {
	p.mu.Lock()
	p.total = t
	p.mu.Unlock()
}

// setBase records the bytes already read (the staged tarball) and
// addLayers then adds the layer bytes still to read to it.
func (p *progress) setBase(n int64) {
	p.mu.Lock()
	p.base = n
	p.mu.Unlock()
}

func (p *progress) addLayers(n int64) {
	p.mu.Lock()
	p.total = max(p.base+n, p.done)
	p.mu.Unlock()
}

func (p *progress) finish() {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = max(p.total, p.done)
	p.fn(p.total, p.total)
}
