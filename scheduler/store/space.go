package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Disk space.
//
// Badger writes through memory-mapped files that it sizes with ftruncate,
// which reserves no blocks. When the file system is full, the page fault of
// a write into such a mapping cannot be served and the kernel sends SIGBUS,
// which kills the process instead of returning ENOSPC (on tmpfs even a read
// of a hole allocates a page). Three things keep Badger off a full disk:
//
//   - The gate: every group commit first reads the free space (one statfs)
//     and fails with a *NoSpaceError if the commit would leave less than
//     BadgerOptions.Reserve. The reserve is the room Badger needs for what a
//     commit may set off in the background: a memtable flush and an L0
//     compaction.
//   - The write-ahead log that every commit writes into (the newest .mem
//     file, 2 x MemTableSize) is allocated with fallocate(2) as soon as it
//     exists, so a commit that passed the gate cannot fault on it even if
//     another process fills the disk meanwhile.
//   - The ballast: a file of Reserve bytes, allocated while there is room,
//     that the store deletes when it must open or close Badger on a disk
//     without room (opening replays and flushes the write-ahead logs and
//     creates new mapped files; closing flushes the memtable). It is
//     allocated again once there is room.

// ErrNoSpace is the sentinel of *NoSpaceError.
var ErrNoSpace = errors.New("insufficient storage")

// NoSpaceError says that a write was refused, or the store could not be
// opened, because the file system holding the data directory is too full.
type NoSpaceError struct {
	// Dir is the data directory.
	Dir string
	// Free is the space left to unprivileged writers, in bytes.
	Free uint64
	// Needed is the free space the operation requires, in bytes.
	Needed uint64
	// What names the refused operation ("accept new work", ...).
	What string
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("insufficient storage in %s: %s free, %s needed to %s; free disk space and emberd resumes by itself",
		e.Dir, MiB(e.Free), MiB(e.Needed), e.What)
}

// Unwrap makes errors.Is(err, ErrNoSpace) hold.
func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }

// MiB formats a byte count for messages.
func MiB(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// FreeBytes is the space left in the file system holding dir to writers
// without root's reserved blocks (statfs f_bavail), which is what df shows
// as available. emberd runs as root and could use more on ext4, but counting
// that would let it eat the blocks reserved for the system's recovery.
func FreeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// DefaultReserve is BadgerOptions.Reserve when zero: room for a flush of one
// memtable (8 MiB), the fallocated write-ahead log that replaces it
// (16 MiB) and an L0 compaction's first tables.
const DefaultReserve = 32 << 20

const ballastName = "disk-reserve"

// opsBytes estimates what a group of requests adds to Badger's files.
func opsBytes(group []*commitReq) uint64 {
	var n uint64
	for _, r := range group {
		for _, o := range r.ops {
			n += uint64(len(o.key)+len(o.val)) + 32 // entry header and checksum
		}
	}
	return n
}

// spaceGuarded reports whether the store checks free space at all: not in
// memory, and not when a benchmark measures the unguarded baseline.
func (s *Badger) spaceGuarded() bool { return !s.opts.InMemory && !s.opts.unguarded }

// checkSpace is the gate in front of every Badger write of n bytes.
func (s *Badger) checkSpace(n uint64) error {
	if !s.spaceGuarded() {
		return nil
	}
	free, err := FreeBytes(s.opts.Dir)
	if err != nil {
		// Cannot tell: refusing every write on a statfs error would stop
		// the daemon for a reason that has nothing to do with space.
		return nil
	}
	if need := s.opts.Reserve + n; free < need {
		return &NoSpaceError{Dir: s.opts.Dir, Free: free, Needed: need, What: "write to the job store"}
	}
	return nil
}

// backWAL allocates the blocks of Badger's newest write-ahead log file, so
// that no write into its mapping can fault. It looks at the directory only
// when its modification time has changed (Badger created or removed a
// file), so a commit that did not rotate the memtable costs one stat.
func (s *Badger) backWAL() {
	if !s.spaceGuarded() {
		return
	}
	dir := filepath.Join(s.opts.Dir, "badger")
	fi, err := os.Stat(dir)
	if err != nil || fi.ModTime().Equal(s.walDirMtime) {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	newest := ""
	for _, e := range entries {
		// Badger names them %05d.mem, so the newest sorts last.
		if n := e.Name(); strings.HasSuffix(n, ".mem") && n > newest {
			newest = n
		}
	}
	if newest == "" || newest == s.walBacked {
		s.walDirMtime = fi.ModTime()
		return
	}
	if err := fallocateFile(filepath.Join(dir, newest)); err != nil {
		// The mtime is not recorded: the next commit tries again. Until
		// then the gate's reserve covers what a commit writes into it.
		if !s.walWarned {
			s.log.Warn("cannot allocate the store's write-ahead log; retrying at the next write", "file", newest, "err", err)
			s.walWarned = true
		}
		return
	}
	s.walBacked, s.walDirMtime, s.walWarned = newest, fi.ModTime(), false
}

// fallocateFile allocates every block of the file up to its size without
// changing its contents or size.
func fallocateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, fi.Size()); err != nil {
		return fmt.Errorf("fallocate %s: %w", path, err)
	}
	return nil
}

// openNeeds is the free space an opening of Badger may use: flushing the
// write-ahead logs left by the last run (bounded by their sizes), plus the
// first pages of the new log and value-log files. (The new log's full
// allocation is made later, when there is room for it.)
func openNeeds(dir string) uint64 {
	need := uint64(2 << 20)
	entries, _ := os.ReadDir(filepath.Join(dir, "badger"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".mem") {
			if fi, err := e.Info(); err == nil {
				need += uint64(fi.Size())
			}
		}
	}
	return need
}

// makeRoom releases the ballast when the file system has less than need
// free, and says whether there is room now.
func (s *Badger) makeRoom(need uint64, why string) error {
	if !s.spaceGuarded() {
		return nil
	}
	free, err := FreeBytes(s.opts.Dir)
	if err != nil || free >= need {
		return nil
	}
	p := filepath.Join(s.opts.Dir, ballastName)
	if err := os.Remove(p); err == nil {
		s.log.Warn("disk nearly full: released the store's reserve file", "for", why, "free_bytes", free, "needed_bytes", need)
		// ext4 counts a deleted file's blocks as free only once its
		// journal commits; syncfs commits it now.
		if d, err := os.Open(s.opts.Dir); err == nil {
			unix.Syncfs(int(d.Fd()))
			d.Close()
		}
		if free, err = FreeBytes(s.opts.Dir); err != nil || free >= need {
			return nil
		}
	}
	return &NoSpaceError{Dir: s.opts.Dir, Free: free, Needed: need, What: why}
}

// afterCommit runs in the committer after each write: it allocates a new
// write-ahead log, and the reserve file if it is missing.
func (s *Badger) afterCommit() {
	s.backWAL()
	if s.noBallast {
		s.ensureBallast()
	}
}

// ensureBallast allocates the ballast file if it is missing and the disk
// has room for it beyond twice the reserve. Only the committer and OpenBadger
// call it (noBallast is the committer's).
func (s *Badger) ensureBallast() {
	if !s.spaceGuarded() || s.opts.Reserve == 0 {
		return
	}
	p := filepath.Join(s.opts.Dir, ballastName)
	if fi, err := os.Stat(p); err == nil && uint64(fi.Size()) >= s.opts.Reserve {
		s.noBallast = false
		return
	}
	s.noBallast = true
	free, err := FreeBytes(s.opts.Dir)
	if err != nil || free < 3*s.opts.Reserve {
		return
	}
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		s.log.Warn("cannot create the store's reserve file", "err", err)
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, int64(s.opts.Reserve))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		s.log.Warn("cannot allocate the store's reserve file", "bytes", s.opts.Reserve, "err", err)
		return
	}
	s.noBallast = false
	s.log.Info("store reserve file allocated", "file", p, "bytes", s.opts.Reserve)
}

// gcRoom is the free space below which value-log GC is skipped: a GC run
// rewrites up to one value-log file's live entries before it frees any.
func (s *Badger) gcRoom() bool {
	if !s.spaceGuarded() {
		return true
	}
	free, err := FreeBytes(s.opts.Dir)
	return err != nil || free >= s.opts.Reserve+valueLogFileSize
}
