package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Whiteout names of the OCI layer format (inherited from AUFS).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// overlayOpaqueXattr marks a directory whose lower-layer contents overlayfs
// must hide. Setting trusted.* xattrs needs CAP_SYS_ADMIN.
const overlayOpaqueXattr = "trusted.overlay.opaque"

// entryOverhead is what every tar entry costs against the unpack limit on
// top of its data, so that millions of empty files (an inode bomb) hit the
// limit as surely as one huge file does.
const entryOverhead = 512

// ErrHostile is wrapped by every refusal of a layer's content: entries that
// escape the layer, go through symlinks, create devices, or exceed the size
// limits. Truncated or corrupt archives fail with other errors.
var ErrHostile = errors.New("refused layer content")

// nodeKind is what the unpacker has put at a path of the layer directory.
type nodeKind uint8

const (
	kindDir nodeKind = iota + 1
	kindFile
	kindSymlink
	kindWhiteout
	kindOther // FIFOs
)

// unpacker writes one layer's tar into an empty directory it owns, in
// overlayfs lowerdir format: whiteouts become 0:0 character devices and
// opaque markers become the trusted.overlay.opaque xattr.
//
// Safety rests on a model of everything the unpacker has created: every
// entry's parent directories are checked against it, so no write ever goes
// through a symlink (symlinks from the archive are created, never followed)
// and nothing is written outside root. The directory is fresh and private
// (inside the store's tmp/), so nothing else changes it meanwhile.
type unpacker struct {
	root  string
	nodes map[string]nodeKind
	// dirs holds directories' headers: their metadata is applied after all
	// entries, so that creating children does not disturb their mtimes and
	// a read-only mode does not stop children from being created.
	dirs   map[string]*tar.Header
	meter  *meter
	isRoot bool
	buf    []byte
}

func newUnpacker(root string, m *meter) *unpacker {
	return &unpacker{
		root:   root,
		nodes:  map[string]nodeKind{".": kindDir},
		dirs:   map[string]*tar.Header{},
		meter:  m,
		isRoot: os.Geteuid() == 0,
		buf:    make([]byte, 256<<10),
	}
}

// unpack reads every entry of tr into u.root and then applies the deferred
// directory metadata.
func (u *unpacker) unpack(ctx context.Context, tr *tar.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := u.meter.addDisk(entryOverhead); err != nil {
			return err
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	return u.finishDirs()
}

// entry dispatches one tar entry.
func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir)
	if base != whiteoutOpaque && isAUFSMeta(name) {
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr, dir, base)
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return hostile("layer root entry %q is not a directory", hdr.Name)
		}
		u.dirs["."] = hdr
		return nil
	}
	if err := u.ensureDir(dir); err != nil {
		return err
	}
	opaque, err := u.replace(name, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return err
	}
	return u.create(hdr, name, r, opaque)
}

// cleanEntryName turns a tar name into a clean path relative to the layer
// root, refusing absolute names and names that climb out of it.
func cleanEntryName(raw string) (string, error) {
	if raw == "" {
		return "", hostile("entry with an empty name")
	}
	if strings.HasPrefix(raw, "/") {
		return "", hostile("entry %q has an absolute path", raw)
	}
	if strings.ContainsRune(raw, 0) {
		return "", hostile("entry %q has a NUL in its name", raw)
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", hostile("entry %q escapes the layer root", raw)
	}
	return name, nil
}

// isAUFSMeta reports whether name is or lies under AUFS bookkeeping
// (".wh..wh.plnk/" hardlink stash and the like), which is not content.
func isAUFSMeta(name string) bool {
	for _, c := range strings.Split(name, "/") {
		if strings.HasPrefix(c, whiteoutMeta) {
			return true
		}
	}
	return false
}

// whiteout turns ".wh.<name>" into an overlay whiteout and ".wh..wh..opq"
// into an opaque directory. A whiteout only hides lower layers: if this
// layer already created <name>, the whiteout is dropped (OCI image spec,
// "Whiteouts").
func (u *unpacker) whiteout(hdr *tar.Header, dir, base string) error {
	if err := u.ensureDir(dir); err != nil {
		return err
	}
	if base == whiteoutOpaque {
		return u.setOpaque(dir)
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." || strings.Contains(target, "/") {
		return hostile("invalid whiteout entry %q", hdr.Name)
	}
	p := path.Join(dir, target)
	if _, exists := u.nodes[p]; exists {
		return nil
	}
	if err := unix.Mknod(u.abs(p), unix.S_IFCHR, int(unix.Mkdev(0, 0))); err != nil {
		return fmt.Errorf("creating overlay whiteout for %q (a 0:0 character device; needs root): %w", p, err)
	}
	u.nodes[p] = kindWhiteout
	return nil
}

// setOpaque marks dir so that overlayfs hides what lower layers hold in it.
func (u *unpacker) setOpaque(dir string) error {
	if err := unix.Setxattr(u.abs(dir), overlayOpaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("marking %q opaque (xattr %s; needs root): %w", dir, overlayOpaqueXattr, err)
	}
	return nil
}

// ensureDir makes sure every component of dir is a directory the unpacker
// created, creating missing ones (tars may omit parent entries). A
// component that is a symlink is refused: writing through it could land
// anywhere. A component that is a whiteout (".wh.d" then "d/x" in one
// layer) becomes an opaque directory: the lower d is replaced, not merged.
func (u *unpacker) ensureDir(dir string) error {
	if dir == "." {
		return nil
	}
	prefix := ""
	for _, c := range strings.Split(dir, "/") {
		prefix = path.Join(prefix, c)
		switch u.nodes[prefix] {
		case kindDir:
			continue
		case kindSymlink:
			return hostile("entry under %q would be written through a symlink", prefix)
		case kindFile, kindOther:
			return hostile("entry under %q: %q is not a directory", dir, prefix)
		case kindWhiteout:
			if err := os.Remove(u.abs(prefix)); err != nil {
				return fmt.Errorf("replacing whiteout %q with a directory: %w", prefix, err)
			}
			if err := u.mkdir(prefix); err != nil {
				return err
			}
			if err := u.setOpaque(prefix); err != nil {
				return err
			}
		default:
			if err := u.mkdir(prefix); err != nil {
				return err
			}
		}
	}
	return nil
}

func (u *unpacker) mkdir(p string) error {
	if err := os.Mkdir(u.abs(p), 0o755); err != nil {
		return fmt.Errorf("creating directory %q: %w", p, err)
	}
	u.nodes[p] = kindDir
	return nil
}

// replace clears the way for a new entry at name: a later tar entry
// replaces an earlier one, except that a directory over a directory only
// updates its metadata. It reports whether the new directory must be
// opaque (it replaces a whiteout of the same layer).
func (u *unpacker) replace(name string, isDir bool) (opaque bool, err error) {
	old, exists := u.nodes[name]
	if !exists {
		return false, nil
	}
	if old == kindDir && isDir {
		return false, nil
	}
	if err := os.RemoveAll(u.abs(name)); err != nil {
		return false, fmt.Errorf("replacing %q: %w", name, err)
	}
	delete(u.nodes, name)
	delete(u.dirs, name)
	if old == kindDir {
		u.forget(name + "/")
	}
	return old == kindWhiteout && isDir, nil
}

// forget drops the model's entries under prefix after a directory was
// replaced by something else.
func (u *unpacker) forget(prefix string) {
	for p := range u.nodes {
		if strings.HasPrefix(p, prefix) {
			delete(u.nodes, p)
			delete(u.dirs, p)
		}
	}
}

// create makes the entry itself.
func (u *unpacker) create(hdr *tar.Header, name string, r io.Reader, opaque bool) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.createDir(hdr, name, opaque)
	case tar.TypeReg, tar.TypeGNUSparse:
		return u.createFile(hdr, name, r)
	case tar.TypeSymlink:
		return u.createSymlink(hdr, name)
	case tar.TypeLink:
		return u.createHardlink(hdr, name)
	case tar.TypeFifo:
		return u.createFifo(hdr, name)
	case tar.TypeChar, tar.TypeBlock:
		return hostile("device node %q (%d:%d): device entries are refused", hdr.Name, hdr.Devmajor, hdr.Devminor)
	default:
		return hostile("entry %q has unsupported type %q", hdr.Name, hdr.Typeflag)
	}
}

func (u *unpacker) createDir(hdr *tar.Header, name string, opaque bool) error {
	if _, exists := u.nodes[name]; !exists {
		if err := u.mkdir(name); err != nil {
			return err
		}
	}
	if opaque {
		if err := u.setOpaque(name); err != nil {
			return err
		}
	}
	if err := u.setXattrs(hdr, name); err != nil {
		return err
	}
	u.dirs[name] = hdr
	return nil
}

// createFile writes a regular file. It is created with O_EXCL|O_NOFOLLOW as
// a second line of defence: it can never open something already there.
func (u *unpacker) createFile(hdr *tar.Header, name string, r io.Reader) error {
	if hdr.Size < 0 {
		return hostile("entry %q has a negative size", hdr.Name)
	}
	if err := u.meter.addDisk(hdr.Size); err != nil {
		return err
	}
	f, err := os.OpenFile(u.abs(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating %q: %w", name, err)
	}
	u.nodes[name] = kindFile
	// Hide f's ReadFrom so that CopyBuffer uses the unpacker's large buffer
	// instead of os.File's 32 KiB fallback.
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, u.buf)
	if err == nil && n != hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q: %w", name, err)
	}
	return u.setMeta(hdr, name, false)
}

// createSymlink makes a symlink. Its target may point anywhere: it is only
// ever resolved inside the container, and the unpacker never follows it.
func (u *unpacker) createSymlink(hdr *tar.Header, name string) error {
	if hdr.Linkname == "" {
		return hostile("symlink %q has an empty target", hdr.Name)
	}
	if err := os.Symlink(hdr.Linkname, u.abs(name)); err != nil {
		return fmt.Errorf("creating symlink %q: %w", name, err)
	}
	u.nodes[name] = kindSymlink
	return u.setMeta(hdr, name, true)
}

// createHardlink links to a file this layer already holds. Targets outside
// the layer, not yet unpacked, or directories are refused: a hardlink is the
// classic way to make an unpacker write into a file it did not create.
func (u *unpacker) createHardlink(hdr *tar.Header, name string) error {
	target, err := cleanEntryName(hdr.Linkname)
	if err != nil {
		return hostile("hardlink %q -> %q: target outside the layer", hdr.Name, hdr.Linkname)
	}
	switch u.nodes[target] {
	case kindFile, kindSymlink, kindOther:
	case 0:
		return hostile("hardlink %q -> %q: target is not an earlier entry of this layer", hdr.Name, hdr.Linkname)
	default:
		return hostile("hardlink %q -> %q: target is a directory or whiteout", hdr.Name, hdr.Linkname)
	}
	if err := os.Link(u.abs(target), u.abs(name)); err != nil {
		return fmt.Errorf("creating hardlink %q: %w", name, err)
	}
	u.nodes[name] = u.nodes[target]
	return nil
}

func (u *unpacker) createFifo(hdr *tar.Header, name string) error {
	if err := unix.Mkfifo(u.abs(name), 0o600); err != nil {
		return fmt.Errorf("creating fifo %q: %w", name, err)
	}
	u.nodes[name] = kindOther
	return u.setMeta(hdr, name, false)
}

// setMeta applies owner, mode, xattrs and times, in that order: chown
// clears setuid bits and file capabilities, so it must come first.
func (u *unpacker) setMeta(hdr *tar.Header, name string, symlink bool) error {
	p := u.abs(name)
	if u.isRoot {
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("setting owner of %q: %w", name, err)
		}
	}
	if !symlink {
		if err := os.Chmod(p, fileMode(hdr)); err != nil {
			return fmt.Errorf("setting mode of %q: %w", name, err)
		}
		if k := u.nodes[name]; k == kindFile || k == kindDir {
			if err := u.setXattrs(hdr, name); err != nil {
				return err
			}
		}
	}
	return setTimes(p, hdr)
}

// allowedXattr says which extended attributes an archive may set. File
// capabilities and user attributes are content; trusted.* (overlayfs's own
// opaque/redirect/metacopy markers among them) and security labels are
// not the archive's to decide.
func allowedXattr(key string) bool {
	return key == "security.capability" || strings.HasPrefix(key, "user.")
}

func (u *unpacker) setXattrs(hdr *tar.Header, name string) error {
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !allowedXattr(key) {
			continue
		}
		if err := unix.Lsetxattr(u.abs(name), key, []byte(v), 0); err != nil {
			return fmt.Errorf("setting xattr %s on %q: %w", key, name, err)
		}
	}
	return nil
}

// finishDirs applies the directories' metadata once their contents exist,
// deepest first, so that a parent made read-only (or unsearchable) last
// never blocks setting its children.
func (u *unpacker) finishDirs() error {
	names := make([]string, 0, len(u.dirs))
	for name := range u.dirs {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return depth(names[i]) > depth(names[j]) })
	for _, name := range names {
		if err := u.setMeta(u.dirs[name], name, false); err != nil {
			return err
		}
	}
	return nil
}

func depth(p string) int {
	if p == "." {
		return 0
	}
	return strings.Count(p, "/") + 1
}

func (u *unpacker) abs(rel string) string {
	return filepath.Join(u.root, filepath.FromSlash(rel))
}

// fileMode converts a tar header's mode, special bits included.
func fileMode(hdr *tar.Header) os.FileMode {
	m := os.FileMode(hdr.Mode & 0o777)
	if hdr.Mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// setTimes sets atime and mtime without following a symlink.
func setTimes(p string, hdr *tar.Header) error {
	mtime := hdr.ModTime
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = mtime
	}
	if mtime.IsZero() {
		return nil
	}
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", p, err)
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.NsecToTimespec(t.UnixNano())
}

// hostile formats a refusal wrapping ErrHostile.
func hostile(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrHostile, fmt.Sprintf(format, args...))
}
