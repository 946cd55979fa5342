package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/emberhq/ember/scheduler/limits"
)

// layerTask is one layer of the image being imported: where its blob is,
// what it must hash to, and (once processed) what it turned out to be.
type layerTask struct {
	n         int // 1-based position, for messages
	srcName   string
	wantBlob  string // digest the archive promises; "" for legacy docker-save layers
	wantSize  int64  // -1 when the archive does not say
	diffID    string
	mediaType string

	// Decided before processing.
	unpack   bool       // unpack into the work directory (new layer)
	keepBlob bool       // store the blob (not stored yet)
	skip     bool       // nothing to do: layer and blob both stored
	twin     *layerTask // an earlier layer of this image read from the same file

	// Results.
	blob     string
	blobSize int64
	size     int64 // uncompressed tar size
	comp     compression
	dir      string // unpacked directory in the work directory
	unpacked bool
}

// runLayers decides what each layer needs, then processes the layers that
// need anything, several at a time.
func (imp *importer) runLayers(src source, p *plan) error {
	todo, err := imp.decide(src, p)
	if err != nil {
		return err
	}
	if err := imp.parallel(src, todo); err != nil {
		return err
	}
	return imp.fillSkipped(p)
}

// decide marks each layer: unpack if the store (or an earlier layer of this
// image) does not hold its diff ID; keep its blob if the store does not hold
// that blob. Legacy docker-save layers have no promised digest, so they are
// always read (at least hashed) to learn it.
func (imp *importer) decide(src source, p *plan) ([]*layerTask, error) {
	storedLayers, storedBlobs := imp.stored()
	seenDiff := map[string]bool{}
	seenBlob := map[string]bool{}
	seenSrc := map[string]*layerTask{}
	var todo []*layerTask
	var bytes int64
	for _, t := range p.layers {
		if twin := seenSrc[src.id(t.srcName)]; twin != nil {
			t.twin = twin
			continue
		}
		seenSrc[src.id(t.srcName)] = t
		t.unpack = !storedLayers[t.diffID] && !seenDiff[t.diffID]
		t.keepBlob = t.wantBlob == "" || !(storedBlobs[strings.TrimPrefix(t.wantBlob, "sha256:")] || seenBlob[t.wantBlob])
		seenDiff[t.diffID] = true
		if t.wantBlob != "" {
			seenBlob[t.wantBlob] = true
		}
		if !t.unpack && !t.keepBlob {
			t.skip = true
			continue
		}
		size, err := sizeOf(src, t.srcName)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", t.n, err)
		}
		bytes += size
		todo = append(todo, t)
	}
	imp.progress.addLayers(bytes)
	return todo, nil
}

// stored returns the diff IDs whose layer directory the store holds and the
// blobs (hex) it holds. A recorded layer whose directory has gone missing
// counts as absent, so that importing the image again repairs it.
func (imp *importer) stored() (layers, blobs map[string]bool) {
	s := imp.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	layers = map[string]bool{}
	for d, lr := range s.idx.Layers {
		if st, err := os.Stat(filepath.Join(s.root, lr.Dir)); err == nil && st.IsDir() {
			layers[d] = true
		}
	}
	return layers, s.referencedBlobs()
}

func sizeOf(src source, name string) (int64, error) {
	rc, size, err := src.open(name)
	if err != nil {
		return 0, err
	}
	rc.Close()
	return size, nil
}

// parallel runs processLayer over todo with the store's parallelism; the
// first failure cancels the others.
func (imp *importer) parallel(src source, todo []*layerTask) error {
	ctx, cancel := context.WithCancel(imp.ctx)
	defer cancel()
	work := make(chan *layerTask)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(imp.s.opts.Parallelism, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for t := range work {
				if err := imp.processLayer(ctx, src, t, buf); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
	for _, t := range todo {
		if ctx.Err() != nil {
			break
		}
		work <- t
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return imp.ctx.Err()
}

// fillSkipped completes the results of layers that needed no processing
// (and of duplicates within the image) from the store and the other layers.
func (imp *importer) fillSkipped(p *plan) error {
	byDiff := map[string]*layerTask{}
	for _, t := range p.layers {
		if t.unpacked {
			byDiff[t.diffID] = t
		}
	}
	imp.s.mu.RLock()
	defer imp.s.mu.RUnlock()
	for _, t := range p.layers {
		switch {
		case t.twin != nil:
			// The same file cannot hold two different layers.
			if t.twin.diffID != t.diffID || (t.wantBlob != "" && t.wantBlob != t.twin.blob) {
				return fmt.Errorf("layer %d: %w: it is the same file as layer %d, but the manifest or config give it another digest", t.n, ErrDigestMismatch, t.twin.n)
			}
			t.blob, t.blobSize, t.comp = t.twin.blob, t.twin.blobSize, t.twin.comp
		case t.skip:
			t.blob, t.blobSize = t.wantBlob, t.wantSize
		}
		if t.unpacked {
			continue
		}
		if lr := imp.s.idx.Layers[t.diffID]; lr != nil {
			t.size = lr.Size
		} else if u := byDiff[t.diffID]; u != nil {
			t.size = u.size
		} else {
			return fmt.Errorf("layer %d (%s): no unpacked copy", t.n, t.diffID)
		}
	}
	return nil
}

// processLayer reads one layer blob once, and in that one pass hashes it,
// copies it into the work directory if it is to be kept (unless the source
// can hand the file over), decompresses it, hashes the tar, and unpacks it.
// Both digests are checked at the end; a mismatch fails the import, and the
// work directory (with whatever was unpacked) goes with it.
func (imp *importer) processLayer(ctx context.Context, src source, t *layerTask, buf []byte) error {
	if err := imp.readLayer(ctx, src, t, buf); err != nil {
		return fmt.Errorf("layer %d (%s): %w", t.n, t.srcName, err)
	}
	return nil
}

func (imp *importer) readLayer(ctx context.Context, src source, t *layerTask, buf []byte) (err error) {
	rc, size, err := src.open(t.srcName)
	if err != nil {
		return err
	}
	defer rc.Close()
	if t.wantSize >= 0 && size != t.wantSize {
		return fmt.Errorf("blob is %d bytes, the manifest says %d", size, t.wantSize)
	}
	copyBlob := t.keepBlob && !src.canAdopt()
	partial := filepath.Join(imp.work, "blobs", fmt.Sprintf("partial-%d", t.n))
	blobHash := sha256.New()
	var sink io.Writer = blobHash
	if copyBlob {
		f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		sink = io.MultiWriter(blobHash, f)
	}
	counted := &countingReader{r: ctxReader{ctx, rc}, onRead: imp.progress.add}
	br := bufio.NewReaderSize(io.TeeReader(counted, sink), 1<<20)
	diffID, err := imp.decodeLayer(ctx, br, t, buf)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(io.Discard, br, buf); err != nil { // anything after the compressed stream
		return err
	}
	t.blob, t.blobSize = hashSum(blobHash), counted.n
	if t.wantBlob != "" && t.blob != t.wantBlob {
		return fmt.Errorf("blob %w: the manifest says %s, the content is %s", ErrDigestMismatch, t.wantBlob, t.blob)
	}
	if diffID == "" {
		diffID = t.blob // uncompressed
	}
	if diffID != t.diffID {
		return fmt.Errorf("uncompressed layer %w: the config's diff ID is %s, the content is %s", ErrDigestMismatch, t.diffID, diffID)
	}
	if !t.keepBlob {
		return nil
	}
	return imp.storeBlob(src, t, copyBlob, partial)
}

// decodeLayer decompresses what br yields, unpacks it if the layer is new,
// and returns the digest of the tar stream (the diff ID it really has), or
// "" when the layer is uncompressed and that digest is the blob's.
func (imp *importer) decodeLayer(ctx context.Context, br *bufio.Reader, t *layerTask, buf []byte) (string, error) {
	dec, comp, err := decompressor(br)
	if err != nil {
		return "", err
	}
	defer dec.Close() // frees a zstd decoder's window at once, whatever happens
	t.comp = comp
	m := newMeter(imp.s.opts.MaxLayerBytes, imp.budget)
	var stream io.Reader = streamMeter{dec, m}
	diffHash := sha256.New()
	if comp != uncompressed {
		// An uncompressed blob is the tar stream itself: its blob digest
		// is its diff ID, no need to hash it twice.
		stream = io.TeeReader(stream, diffHash)
	}
	if t.unpack {
		if err := imp.unpackLayer(ctx, stream, t, m); err != nil {
			return "", err
		}
	}
	// The rest of the tar stream (end-of-archive blocks, or all of it when
	// only verifying) must be hashed too.
	if _, err := io.CopyBuffer(io.Discard, stream, buf); err != nil {
		return "", fmt.Errorf("reading layer: %w", err)
	}
	if err := dec.Close(); err != nil {
		return "", fmt.Errorf("reading layer: %w", err)
	}
	t.size = m.stream
	if comp == uncompressed {
		return "", nil
	}
	return hashSum(diffHash), nil
}

// unpackLayer unpacks the tar stream into a fresh directory of the work
// directory, named by diff ID.
func (imp *importer) unpackLayer(ctx context.Context, stream io.Reader, t *layerTask, m *meter) error {
	t.dir = filepath.Join(imp.work, "layers", strings.TrimPrefix(t.diffID, "sha256:"))
	if err := os.Mkdir(t.dir, 0o755); err != nil {
		return err
	}
	if err := newUnpacker(t.dir, m).unpack(ctx, tar.NewReader(stream)); err != nil {
		return err
	}
	t.unpacked = true
	return nil
}

// compression is how a layer blob or an archive is compressed.
type compression int

const (
	uncompressed compression = iota
	gzipped
	zstdCompressed
)

// Magic numbers of the compressions recognised from a stream's first bytes.
var (
	gzipMagic  = []byte{0x1f, 0x8b}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	bzip2Magic = []byte("BZh")
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// sniff tells the compression of what br yields from its first bytes, as
// Docker does, rather than trusting a media type (docker-save archives have
// none), and refuses the compressions found in the wild that are not
// supported.
func sniff(br *bufio.Reader) (compression, error) {
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return gzipped, nil
	case bytes.HasPrefix(head, zstdMagic):
		return zstdCompressed, nil
	case bytes.HasPrefix(head, bzip2Magic), bytes.HasPrefix(head, xzMagic):
		return 0, fmt.Errorf("bzip2- or xz-compressed, which is not supported; use gzip, zstd or no compression")
	}
	return uncompressed, nil
}

// decompressor returns a reader of the layer br holds, decompressed, and
// what its compression was. Close releases the decoder and reports a gzip
// stream's trailing errors.
func decompressor(br *bufio.Reader) (io.ReadCloser, compression, error) {
	comp, err := sniff(br)
	if err != nil {
		return nil, 0, fmt.Errorf("reading layer: layer is %w", err)
	}
	rc, err := decompress(br, comp)
	if err != nil {
		return nil, 0, fmt.Errorf("reading layer: %w", err)
	}
	return rc, comp, nil
}

// decompress wraps br in the decoder for comp.
func decompress(br *bufio.Reader, comp compression) (io.ReadCloser, error) {
	switch comp {
	case gzipped:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip stream: %w", err)
		}
		return zr, nil
	case zstdCompressed:
		return newZstdReader(br)
	}
	return io.NopCloser(br), nil
}

// zstdReader decodes a zstd stream with bounded memory and says, when the
// stream is refused, that it was zstd and why.
type zstdReader struct {
	d *zstd.Decoder
}

// newZstdReader decodes r synchronously (concurrency 1: one goroutine-free
// decoder per layer, as gzip has, since layers are already read several at
// a time) with a window of at most limits.ZstdWindow. MaxMemory bounds
// the window a single-segment frame takes from its declared content size,
// which MaxWindow does not check.
func newZstdReader(r io.Reader) (*zstdReader, error) {
	d, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(limits.ZstdWindow),
		zstd.WithDecoderMaxMemory(limits.ZstdWindow),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd stream: %w", err)
	}
	return &zstdReader{d: d}, nil
}

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	switch {
	case err == nil, err == io.EOF:
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		err = fmt.Errorf("zstd stream declares a window larger than the limit of %d MiB: recompress it with a smaller window (zstd level 19 or less, or --long=27 at most): %w", limits.ZstdWindow>>20, err)
	default:
		err = fmt.Errorf("zstd stream is corrupt: %w", err)
	}
	return n, err
}

// Close releases the decoder; the decoder allows more than one call.
func (z *zstdReader) Close() error {
	z.d.Close()
	return nil
}

// storeBlob puts the verified blob into the work directory's blobs under
// its digest, by moving the staged file or the copy made while reading.
func (imp *importer) storeBlob(src source, t *layerTask, copied bool, partial string) error {
	dst := filepath.Join(imp.work, "blobs", strings.TrimPrefix(t.blob, "sha256:"))
	if copied {
		return os.Rename(partial, dst)
	}
	adopted, err := src.adopt(t.srcName, dst)
	if err != nil || adopted {
		return err
	}
	if _, err := os.Stat(dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blob %s vanished from the staging area", t.blob)
		}
		return err
	}
	return nil
}
