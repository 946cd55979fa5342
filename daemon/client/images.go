package client

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Image is an image in the daemon's store, as the daemon returns it.
type Image struct {
	// ID is the config digest ("sha256:<hex>").
	ID string `json:"id"`
	// Names are the canonical references naming the image; empty for an
	// image whose name a later import took over.
	Names []string `json:"names"`
	// Digest is the manifest digest.
	Digest string `json:"digest"`
	// Size is the sum of the layers' uncompressed sizes, in bytes.
	Size int64 `json:"size"`
	// Layers are the layers' diff IDs, bottom first.
	Layers []string `json:"layers"`
	// Created is when the image was built (RFC 3339); empty if unknown.
	Created string `json:"created,omitempty"`
	// Imported is when the daemon imported it (RFC 3339).
	Imported string      `json:"imported,omitempty"`
	Config   ImageConfig `json:"config"`

	// Raw is the object exactly as the daemon sent it.
	Raw json.RawMessage `json:"-"`
}

// ImageConfig is how a container of the image runs by default.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// UnmarshalJSON accepts the size as a string too: protojson writes int64
// as a JSON string.
func (im *Image) UnmarshalJSON(b []byte) error {
	type plain Image
	var aux struct {
		plain
		Size flexInt `json:"size"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*im = Image(aux.plain)
	im.Size = int64(aux.Size)
	im.Raw = bytes.Clone(b)
	return nil
}

// DeletedImage is the daemon's answer to an image delete.
type DeletedImage struct {
	// LayersRemoved counts the unpacked layers whose directories went.
	LayersRemoved int `json:"layersRemoved"`
	// BytesFreed is the disk space freed.
	BytesFreed int64 `json:"bytesFreed"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON accepts numbers written as strings.
func (d *DeletedImage) UnmarshalJSON(b []byte) error {
	var aux struct {
		LayersRemoved flexInt `json:"layersRemoved"`
		BytesFreed    flexInt `json:"bytesFreed"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*d = DeletedImage{LayersRemoved: int(aux.LayersRemoved), BytesFreed: int64(aux.BytesFreed), Raw: bytes.Clone(b)}
	return nil
}

// imagePath is the admin path of one image. References contain "/" and
// ":", which the route takes as they are; each segment is escaped.
func imagePath(ref string) string {
	segs := strings.Split(ref, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/v1/images/" + strings.Join(segs, "/")
}

// ListImages returns every image in the daemon's store.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	var resp struct {
		Images []Image `json:"images"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/images", nil, nil, &resp); err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	return resp.Images, nil
}

// GetImage fetches one image by reference: a name, an ID or digest, or a
// unique hex prefix of at least 12 digits.
func (c *Client) GetImage(ctx context.Context, ref string) (*Image, error) {
	if ref == "" {
		return nil, errors.New("empty image reference")
	}
	// The daemon's messages name the image already.
	var img Image
	if _, err := c.do(ctx, http.MethodGet, imagePath(ref), nil, nil, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// DeleteImage removes an image reference (a name removes only that name;
// an ID or digest the whole image) and frees the space no image uses.
func (c *Client) DeleteImage(ctx context.Context, ref string) (*DeletedImage, error) {
	if ref == "" {
		return nil, errors.New("empty image reference")
	}
	var d DeletedImage
	if _, err := c.do(ctx, http.MethodDelete, imagePath(ref), nil, nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ImportImage has the daemon import an image from a path on the daemon's
// machine (it must be absolute). Use UploadImage for a file on this one.
func (c *Client) ImportImage(ctx context.Context, daemonPath, name string) (*Image, error) {
	var img Image
	body := map[string]string{"path": daemonPath, "name": name}
	if _, err := c.do(ctx, http.MethodPost, "/v1/images:import", nil, body, &img); err != nil {
		return nil, fmt.Errorf("importing image %s: %w", daemonPath, err)
	}
	return &img, nil
}

// PullOptions are the options of PullImage.
type PullOptions struct {
	// PlainHTTP lets the daemon reach the registry over unencrypted HTTP.
	PlainHTTP bool
	// Username and Password authenticate to the registry; empty is
	// anonymous.
	Username, Password string
}

// PullImage has the daemon pull ref ("host[:port]/repo[:tag|@digest]")
// from a registry on its network and import it.
func (c *Client) PullImage(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	if ref == "" {
		return nil, errors.New("empty image reference")
	}
	body := map[string]any{"ref": ref, "plainHttp": opts.PlainHTTP}
	if opts.Username != "" || opts.Password != "" {
		body["username"], body["password"] = opts.Username, opts.Password
	}
	var img Image
	if _, err := c.do(ctx, http.MethodPost, "/v1/images:pull", nil, body, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// UploadImage sends an image archive (a `docker save` tarball or an OCI
// archive, possibly compressed with gzip or zstd) to the daemon, which
// imports it under name, or under the names the archive gives when name is
// empty. size is the body's length in bytes, or -1 when unknown (a pipe):
// the body is then sent in chunks as it is read. progress, if set, is called from the
// uploading goroutine as bytes are sent, with the total (size); it is not
// called after UploadImage returns.
func (c *Client) UploadImage(ctx context.Context, archive io.Reader, size int64, name string, progress func(sent, total int64)) (*Image, error) {
	var q url.Values
	if name != "" {
		q = url.Values{"name": {name}}
	}
	body := archive
	var pr *progressReader
	if progress != nil {
		pr = &progressReader{r: archive, total: size, fn: progress}
		body = pr
		defer pr.stop()
	}
	var img Image
	if _, err := c.send(ctx, http.MethodPost, "/v1/images:upload", q, body, "application/octet-stream", size, &img); err != nil {
		return nil, fmt.Errorf("uploading image: %w", err)
	}
	return &img, nil
}

// progressReader reports bytes read through it.
type progressReader struct {
	r     io.Reader
	total int64
	fn    func(sent, total int64)

	mu      sync.Mutex
	sent    int64
	stopped bool
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.mu.Lock()
		p.sent += int64(n)
		if !p.stopped {
			p.fn(p.sent, p.total)
		}
		p.mu.Unlock()
	}
	return n, err
}

// stop keeps the transport's goroutine, which may still be reading, from
// calling fn once the upload is over.
func (p *progressReader) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

// ImageArchive opens path for UploadImage: a file (an archive, sent as it
// is) or an OCI image layout directory, which is packed into an OCI archive
// (a tar of the layout) on the fly. size is exactly what the reader yields.
// Only directories and regular files (or symlinks to them) may be in a
// layout; anything else is refused before anything is sent.
func ImageArchive(path string) (rc io.ReadCloser, size int64, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, 0, fmt.Errorf("%s is neither a regular file nor a directory", path)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		return f, st.Size(), nil
	}
	ents, size, err := layoutEntries(path)
	if err != nil {
		return nil, 0, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeLayoutTar(pw, path, ents)) }()
	return pr, size, nil
}

// layoutEntry is one file or directory of a layout, as a tar entry.
type layoutEntry struct {
	hdr *tar.Header
	src string // file to copy; "" for directories
}

// tarBlock is the tar block size: headers take whole blocks and file
// contents are padded to one.
const tarBlock = 512

// layoutEntries lists the layout under dir in tar order and computes the
// exact size of the tar writeLayoutTar makes of it.
func layoutEntries(dir string) ([]layoutEntry, int64, error) {
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return nil, 0, fmt.Errorf("%s is not an OCI image layout (no oci-layout file): %w", dir, err)
	}
	var ents []layoutEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(p) // follows symlinks: blobs may link into a cache
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch {
		case fi.IsDir():
			if d.Type()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%s: a symlink to a directory; an OCI layout holds only files and directories", p)
			}
			ents = append(ents, layoutEntry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: fi.ModTime()}})
		case fi.Mode().IsRegular():
			ents = append(ents, layoutEntry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: fi.Size(), ModTime: fi.ModTime()}, src: p})
		default:
			return fmt.Errorf("%s: not a regular file or directory; an OCI layout holds only those", p)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].hdr.Name < ents[j].hdr.Name })
	// Measure each header by writing it alone; long names or huge sizes
	// add extended headers, so the size is not simply 512 per entry.
	var total int64
	for _, e := range ents {
		var cw countingWriter
		if err := tar.NewWriter(&cw).WriteHeader(e.hdr); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", e.hdr.Name, err)
		}
		total += cw.n + (e.hdr.Size+tarBlock-1)/tarBlock*tarBlock
	}
	return ents, total + 2*tarBlock, nil // the end-of-archive marker
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// writeLayoutTar writes the tar that layoutEntries measured. A file that
// changed size since is an error, since the size was promised.
func writeLayoutTar(w io.Writer, dir string, ents []layoutEntry) error {
	tw := tar.NewWriter(w)
	for _, e := range ents {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return err
		}
		if e.src == "" {
			continue
		}
		if err := copyFile(tw, e.src, e.hdr.Size); err != nil {
			return err
		}
	}
	return tw.Close()
}

func copyFile(w io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	var probe [1]byte
	if extra, _ := f.Read(probe[:]); n != size || extra > 0 {
		return fmt.Errorf("%s changed while being sent (was %d bytes)", path, size)
	}
	return nil
}
