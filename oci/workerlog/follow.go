// Package workerlog reads a worker's log file while the runtime writes
// and rotates it: Lines reads its backlog (its last bytes, each line with
// the time its index gives it), and Follower sends what is appended, across
// both kinds of rotation the log may go through. The runc runtime rotates in place
// (oci/runc/logs.go: the file's head is copied to PATH.1 and cut out of
// the live file, or, where ranges cannot be collapsed, the whole file is
// copied and truncated); a log can also be renamed away and replaced. The
// writer's side of that scheme is oci/runc/logs.go: change both together.
//
// It is a package of its own, not part of oci/runc, so that the API that
// serves logs (daemon/httpapi) does not link libcontainer. It imports
// only oci/logindex and scheduler/limits (the one table of limits); it
// must not import the runtimes or the daemon.
package workerlog

import (
	"bytes"
	"io"
	"os"
)

// Follower sends what is appended to a worker's log file, across its
// rotation, from an offset on. It is not safe for concurrent use.
type Follower struct {
	path string
	f    *os.File
	off  int64
	// w and flush are Poll's, for its duration.
	w     io.Writer
	flush func()
	// last holds the file's last bytes before off (up to lastKeep), to
	// notice the file being rewritten under the same name and size.
	last []byte
}

// lastKeep is how many of the bytes before off a Follower keeps.
const lastKeep = 64

// Follow returns a follower of the log at path, open as f (which it now
// owns: Close closes it), that goes on from off. It reads the bytes just
// before off, to notice the file being rewritten in place later.
func Follow(path string, f *os.File, off int64) *Follower {
	lf := &Follower{path: path, f: f, off: off}
	tail := make([]byte, min(int64(lastKeep), off))
	if n, _ := f.ReadAt(tail, off-int64(len(tail))); n > 0 {
		lf.remember(tail[:n])
	}
	return lf
}

// Close closes the file the follower is reading.
func (lf *Follower) Close() error { return lf.f.Close() }

func (lf *Follower) remember(p []byte) {
	if len(p) >= lastKeep {
		lf.last = append(lf.last[:0], p[len(p)-lastKeep:]...)
		return
	}
	lf.last = append(lf.last, p...)
	if over := len(lf.last) - lastKeep; over > 0 {
		lf.last = append(lf.last[:0], lf.last[over:]...)
	}
}

// rewritten reports whether the bytes before lf.off are no longer the ones
// that were read there: the file was rotated in place and has grown back
// past lf.off since.
func (lf *Follower) rewritten() bool {
	m := min(int64(len(lf.last)), lf.off)
	if m == 0 {
		return false
	}
	b := make([]byte, m)
	if _, err := lf.f.ReadAt(b, lf.off-m); err != nil {
		return true
	}
	return !bytes.Equal(b, lf.last[int64(len(lf.last))-m:])
}

// Poll writes to w what was written since the last poll, calling flush
// (if not nil) after each piece. Two kinds of rotation are followed: a
// file renamed away and replaced (the inode behind the path changes: the
// old file is read to its end, then the new one from its start), and the
// runc runtime's rotation in place, which copies the
// file's head to PATH.1 and cuts it out of the live file (the file
// shrinks, or no longer holds the bytes last read before lf.off when it
// has grown back since: what was not sent yet is taken from PATH.1, then
// the live file goes on where that ends).
func (lf *Follower) Poll(w io.Writer, flush func()) error {
	if flush == nil {
		flush = func() {}
	}
	lf.w, lf.flush = w, flush
	defer func() { lf.w, lf.flush = nil, nil }()
	if cur, err := os.Stat(lf.path); err == nil {
		if old, err := lf.f.Stat(); err == nil && !os.SameFile(cur, old) {
			if err := lf.copyRest(lf.f); err != nil {
				return err
			}
			nf, err := os.Open(lf.path)
			if err != nil {
				return nil // replaced again meanwhile: next poll
			}
			lf.f.Close()
			lf.f, lf.off, lf.last = nf, 0, lf.last[:0]
		}
	}
	st, err := lf.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < lf.off || lf.rewritten() {
		next, err := lf.sendRotated(st.Size())
		if err != nil {
			return err
		}
		if next == 0 {
			lf.last = lf.last[:0]
		}
		lf.off = next
	}
	return lf.copyRest(lf.f)
}

// sendRotated sends the part of PATH.1 past lf.off, after the live file
// shrank to size, and returns where to go on in the live file. PATH.1
// holds the live file's first bytes before the rotation (all of them when
// the file was copied and truncated), so what was sent up to lf.off is
// either all in PATH.1 or continues lf.off-len(PATH.1) into the live file.
// Without a PATH.1 (a plain truncation) the live file is read from its
// start.
func (lf *Follower) sendRotated(size int64) (int64, error) {
	r1, err := os.Open(lf.path + ".1")
	if err != nil {
		return 0, nil
	}
	defer r1.Close()
	st1, err := r1.Stat()
	if err != nil {
		return 0, nil
	}
	head := st1.Size()
	switch {
	case lf.off < head:
		return 0, lf.copyFrom(r1, lf.off)
	case lf.off-head <= size:
		return lf.off - head, nil
	}
	return 0, nil
}

// copyRest sends f from lf.off to its end and advances lf.off.
func (lf *Follower) copyRest(f *os.File) error {
	n, err := io.Copy(recorder{lf}, io.NewSectionReader(f, lf.off, 1<<62))
	lf.off += n
	if n > 0 {
		lf.flush()
	}
	return err
}

// copyFrom sends f from off to its end, leaving lf.off alone.
func (lf *Follower) copyFrom(f *os.File, off int64) error {
	n, err := io.Copy(lf.w, io.NewSectionReader(f, off, 1<<62))
	if n > 0 {
		lf.flush()
	}
	return err
}

// recorder writes to Poll's writer and remembers the last bytes written.
type recorder struct{ lf *Follower }

func (r recorder) Write(p []byte) (int, error) {
	n, err := r.lf.w.Write(p)
	r.lf.remember(p[:n])
	return n, err
}
