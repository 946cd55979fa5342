package workerlog

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"time"

	"github.com/emberhq/ember/oci/logindex"
	"github.com/emberhq/ember/scheduler/limits"
)

// Lines reads the backlog of a worker's log line by line, each line with
// the time its index (oci/logindex) says it had been written by: the lines
// of the log's last bytes, from the first one written since a time. It is
// not safe for concurrent use.
type Lines struct {
	path  string
	f     *os.File
	br    *bufio.Reader
	off   int64 // where br is in the file
	end   int64 // the file's size when opened: where the backlog ends
	marks []logindex.Mark
	mtime time.Time
	// holdPartial leaves an unfinished last line (no newline yet) out of
	// the backlog: end is moved back to its start, where a follow begins.
	holdPartial bool
	// The line read ahead, and its time; ok is false at the end.
	line []byte
	at   time.Time
	ok   bool
}

// OpenLines opens the log at path for its backlog: its last maxTail
// bytes, from the first line written since since (none when zero). With
// holdPartial an unfinished last line (no newline yet) is left out of the
// backlog, to a Follower (Follow) that goes on from its start. It returns
// nil when there is no log to read (none, or not a regular file).
func OpenLines(path string, maxTail int64, since time.Time, holdPartial bool) *Lines {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil
	}
	marks, _ := logindex.Load(path)
	s := &Lines{path: path, f: f, end: st.Size(), marks: marks, mtime: st.ModTime(), holdPartial: holdPartial}
	s.off = max(s.end-maxTail, 0)
	if !since.IsZero() {
		s.off = max(s.off, logindex.StartFor(marks, since))
	}
	s.off = min(s.off, s.end)
	s.br = bufio.NewReaderSize(io.NewSectionReader(f, s.off, s.end-s.off), limits.LogLine)
	if s.off > 0 {
		// Inside a line unless the byte before is a newline: skip to the
		// next line.
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, s.off-1); err != nil || b[0] != '\n' {
			s.next()
		}
	}
	s.next()
	return s
}

// Line is the line read ahead (without its newline; a piece of
// limits.LogLine bytes of a longer one), with its time; ok is false at the
// backlog's end. The line is valid until Next.
func (s *Lines) Line() (line []byte, at time.Time, ok bool) { return s.line, s.at, s.ok }

// Next reads the next line.
func (s *Lines) Next() { s.next() }

// next reads the next line (a piece of limits.LogLine bytes of a longer
// one) into s.line, with its time.
func (s *Lines) next() {
	b, err := s.br.ReadSlice('\n')
	if len(b) == 0 || (err != nil && err != bufio.ErrBufferFull && err != io.EOF) {
		s.ok, s.line = false, nil
		return
	}
	if err == io.EOF && s.holdPartial {
		s.end = s.off
		s.ok, s.line = false, nil
		return
	}
	s.off += int64(len(b))
	s.line = append(s.line[:0], bytes.TrimSuffix(b, []byte{'\n'})...)
	var ok bool
	if s.at, ok = logindex.TimeOf(s.marks, s.off); !ok {
		// Written after the last mark, and so by the last write.
		s.at = s.mtime
	}
	s.ok = true
}

// Follow hands the file on to a Follower that goes on from where the
// backlog ended; Close then leaves it to the follower.
func (s *Lines) Follow() *Follower {
	lf := Follow(s.path, s.f, s.end)
	s.f = nil
	return lf
}

// Close closes the log unless a Follower has it.
func (s *Lines) Close() {
	if s.f != nil {
		s.f.Close()
	}
}
