package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// source is where an import reads its files from: an OCI layout directory,
// or a tarball (docker save, OCI archive) staged into the store's tmp/.
// Names are slash-separated paths inside the layout or archive.
type source interface {
	// open returns the file at name and its size.
	open(name string) (io.ReadCloser, int64, error)
	// has reports whether name exists.
	has(name string) bool
	// adopt moves the file at name to dst when the source can give it up
	// (a staged file, already on the store's filesystem) and reports
	// whether it did; otherwise the caller copies it.
	adopt(name, dst string) (bool, error)
	// canAdopt tells in advance whether adopt will move files.
	canAdopt() bool
	// id identifies the file behind name, so that names aliasing one file
	// (docker save links duplicate layers) are read once.
	id(name string) string
	close() error
}

// readSmall reads a JSON document of at most maxJSONSize bytes.
func readSmall(src source, name string) ([]byte, error) {
	rc, size, err := src.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > maxJSONSize {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed for a JSON document", name, size, maxJSONSize)
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxJSONSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("reading %s: got %d bytes, expected %d: %w", name, len(b), size, io.ErrUnexpectedEOF)
	}
	return b, nil
}

// dirSource reads an OCI layout directory in place, through an os.Root so
// that symlinks inside it cannot make the import read files outside it.
type dirSource struct {
	root *os.Root
}

func openDirSource(dir string) (*dirSource, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening image layout %s: %w", dir, err)
	}
	return &dirSource{root: r}, nil
}

func (d *dirSource) open(name string) (io.ReadCloser, int64, error) {
	f, err := d.root.Open(filepath.FromSlash(name))
	if err != nil {
		return nil, 0, fmt.Errorf("opening %s in the image layout: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("reading %s in the image layout: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s in the image layout is not a regular file", name)
	}
	return f, st.Size(), nil
}

func (d *dirSource) has(name string) bool {
	_, err := d.root.Stat(filepath.FromSlash(name))
	return err == nil
}

func (d *dirSource) adopt(string, string) (bool, error) { return false, nil }
func (d *dirSource) canAdopt() bool                     { return false }
func (d *dirSource) id(name string) string              { return name }
func (d *dirSource) close() error                       { return d.root.Close() }

// tarSource is a tarball whose regular files have been copied into a
// private staging directory in one sequential pass (tarballs have no index,
// and `docker save` writes manifest.json last). Blobs staged there are on
// the store's filesystem, so verified ones are renamed into place rather
// than copied a second time.
type tarSource struct {
	dir   string
	files map[string]stagedFile
	links map[string]string // archive symlinks/hardlinks: name -> target name
}

type stagedFile struct {
	path string
	size int64
}

// maxLinkHops bounds chains of symlinks inside an archive (docker save
// dedups identical layers as symlinks to one layer.tar).
const maxLinkHops = 8

// stageTar copies the regular files of the tarball r (optionally
// compressed with gzip or zstd) into dir. limit caps the total staged size,
// so that a compressed archive cannot fill the disk before any layer is
// looked at.
func stageTar(ctx context.Context, r io.Reader, dir string, limit int64) (*tarSource, error) {
	br := bufio.NewReaderSize(ctxReader{ctx, r}, 1<<20)
	in, err := maybeDecompress(br)
	if err != nil {
		return nil, fmt.Errorf("reading archive: %w", err)
	}
	defer in.Close()
	ts := &tarSource{dir: dir, files: map[string]stagedFile{}, links: map[string]string{}}
	tr := tar.NewReader(in)
	buf := make([]byte, 1<<20)
	var total int64
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return ts, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		name := archiveName(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			if total += hdr.Size; total > limit {
				return nil, fmt.Errorf("%w: %w: the archive holds more than the limit of %d bytes per image", ErrHostile, ErrTooLarge, limit)
			}
			if err := ts.stage(name, i, hdr.Size, tr, buf); err != nil {
				return nil, err
			}
		case tar.TypeSymlink, tar.TypeLink:
			ts.link(name, hdr)
		case tar.TypeDir, tar.TypeXGlobalHeader:
		default:
			return nil, fmt.Errorf("%w: archive entry %q has unexpected type %q", ErrHostile, hdr.Name, hdr.Typeflag)
		}
	}
}

// maybeDecompress decompresses br if it starts with the gzip or zstd magic
// number, so that `docker save | gzip` and `docker save | zstd` archives
// import without a separate step.
func maybeDecompress(br *bufio.Reader) (io.ReadCloser, error) {
	comp, err := sniff(br)
	if err != nil {
		return nil, fmt.Errorf("archive is %w", err)
	}
	return decompress(br, comp)
}

// archiveName cleans a tar entry name into the key files are looked up by.
// It never becomes a filesystem path (staged files are numbered), so
// hostile names can only fail to match.
func archiveName(raw string) string {
	return strings.TrimPrefix(path.Clean("/"+raw), "/")
}

func (ts *tarSource) stage(name string, i int, size int64, r io.Reader, buf []byte) error {
	p := filepath.Join(ts.dir, strconv.Itoa(i))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("staging %s: %w", name, err)
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("reading %s from the archive: %w", name, err)
	}
	if old, ok := ts.files[name]; ok {
		os.Remove(old.path) // a later entry of the same name replaces it
	}
	delete(ts.links, name)
	ts.files[name] = stagedFile{path: p, size: size}
	return nil
}

// link records an archive symlink or hardlink as an alias. Symlink targets
// are relative to the link's directory, hardlink targets to the archive root.
func (ts *tarSource) link(name string, hdr *tar.Header) {
	target := hdr.Linkname
	if hdr.Typeflag == tar.TypeSymlink && !strings.HasPrefix(target, "/") {
		target = path.Join(path.Dir(name), target)
	}
	ts.links[name] = archiveName(target)
}

// resolve follows aliases to a staged file.
func (ts *tarSource) resolve(name string) (stagedFile, error) {
	name = archiveName(name)
	for range maxLinkHops {
		if f, ok := ts.files[name]; ok {
			return f, nil
		}
		target, ok := ts.links[name]
		if !ok {
			return stagedFile{}, fmt.Errorf("%s: %w in the archive (truncated or incomplete archive?)", name, fs.ErrNotExist)
		}
		name = target
	}
	return stagedFile{}, fmt.Errorf("%s: too many links in the archive", name)
}

func (ts *tarSource) open(name string) (io.ReadCloser, int64, error) {
	sf, err := ts.resolve(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(sf.path)
	if err != nil {
		return nil, 0, fmt.Errorf("opening staged %s: %w", name, err)
	}
	return f, sf.size, nil
}

func (ts *tarSource) has(name string) bool {
	_, err := ts.resolve(name)
	return err == nil
}

// adopt renames the staged file into dst. A staged file that several names
// alias is renamed once; later adopters find it gone and copy instead.
func (ts *tarSource) adopt(name, dst string) (bool, error) {
	sf, err := ts.resolve(name)
	if err != nil {
		return false, err
	}
	if err := os.Rename(sf.path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("moving staged %s into the store: %w", name, err)
	}
	return true, nil
}

func (ts *tarSource) canAdopt() bool { return true }

func (ts *tarSource) id(name string) string {
	if sf, err := ts.resolve(name); err == nil {
		return sf.path
	}
	return name
}
func (ts *tarSource) close() error { return nil }
