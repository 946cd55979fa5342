package runc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci/logindex"
)

// A worker's stdout and stderr are its log file itself, opened O_APPEND:
// no copying goroutine sits between the worker and the file, and the worker
// can keep logging while emberd restarts. The size cap is kept by rotation
// from outside: the head of the file is copied to LOG.1 (after LOG.1 moved
// to LOG.2, and so on) and then cut out of the live file with
// fallocate(FALLOC_FL_COLLAPSE_RANGE), which loses nothing the worker
// writes meanwhile. Where the file system cannot collapse ranges (tmpfs,
// some network file systems) the file is copied whole and truncated, and
// what the worker writes between the copy and the truncation is lost.
// Readers follow a log across this rotation with oci/workerlog's Follower,
// which knows the scheme: change both together.

// openLog opens (creating it) a worker's log for appending.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	return f, nil
}

// keepLogCapped checks the log's size every r.logInterval until stop is
// closed, rotating it when it is over the cap, and marks its time index
// (oci/logindex) at each check.
func (r *Runtime) keepLogCapped(path string, stop <-chan struct{}) {
	t := time.NewTicker(r.logInterval)
	defer t.Stop()
	idx := logindex.Open(path)
	for {
		select {
		case <-stop:
			// One last look: a worker that wrote a lot just before exiting.
			r.checkLog(path, idx)
			return
		case <-t.C:
			r.checkLog(path, idx)
		}
	}
}

func (r *Runtime) checkLog(path string, idx *logindex.Recorder) {
	head, _, err := rotateLogHead(path, r.logMax, r.logFiles)
	if err != nil {
		r.log.Warn("rotate worker log", "path", path, "err", err)
	}
	if head > 0 {
		if err := idx.Rotated(head); err != nil {
			r.log.Warn("shift worker log index", "path", path, "err", err)
		}
	}
	if err := idx.Sample(time.Now()); err != nil {
		r.log.Warn("mark worker log index", "path", path, "err", err)
	}
}

// collapseRange is unix.Fallocate with FALLOC_FL_COLLAPSE_RANGE; a variable
// so that tests can take the fallback path.
var collapseRange = func(fd int, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, n)
}

// rotateLogIfOver rotates path when it is a regular file larger than
// maxBytes, keeping at most maxFiles files (path, path.1, ... path.N-1).
// It reports whether it rotated.
func rotateLogIfOver(path string, maxBytes int64, maxFiles int) (bool, error) {
	_, rotated, err := rotateLogHead(path, maxBytes, maxFiles)
	return rotated, err
}

// rotateLogHead is rotateLogIfOver that also says how many bytes were cut
// from the head of the live file (for its time index).
func rotateLogHead(path string, maxBytes int64, maxFiles int) (head int64, rotated bool, err error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
		return 0, false, err
	}
	if !st.Mode().IsRegular() || st.Size() <= maxBytes {
		return 0, false, nil // /dev/null, or under the cap
	}
	head, err = rotateLog(path, maxFiles)
	return head, true, err
}

// rotateLog rotates path and returns how many bytes it cut from its head.
func rotateLog(path string, maxFiles int) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	size := st.Size
	if maxFiles <= 1 {
		return size, f.Truncate(0)
	}
	for i := maxFiles - 1; i > 1; i-- {
		err := os.Rename(path+"."+strconv.Itoa(i-1), path+"."+strconv.Itoa(i))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	// Collapse ranges must be whole file system blocks and end before the
	// end of the file: the last partial block (or last block) stays.
	var sfs unix.Statfs_t
	var head int64
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err == nil && sfs.Bsize > 0 {
		bs := int64(sfs.Bsize)
		head = (size - 1) / bs * bs
	}
	if head > 0 {
		if err := copyHead(f, path+".1", head); err != nil {
			return 0, err
		}
		if err := collapseRange(int(f.Fd()), head); err == nil {
			return head, nil
		}
	}
	// Fallback: copy all there is, then truncate. What the worker wrote
	// between the copy and the truncation is lost, so the index goes too.
	if err := copyHead(f, path+".1", -1); err != nil {
		return 0, err
	}
	return 1 << 62, f.Truncate(0)
}

// copyHead writes the first n bytes of f (all of it when n < 0) to dst,
// atomically replacing it.
func copyHead(f *os.File, dst string, n int64) error {
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	var src io.Reader = io.NewSectionReader(f, 0, 1<<62)
	if n >= 0 {
		src = io.NewSectionReader(f, 0, n)
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
