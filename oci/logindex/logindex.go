// Package logindex keeps a time index beside a worker's log file.
//
// A worker's stdout and stderr are its log file itself (no copying
// goroutine sits between the worker and the file, so a container keeps
// logging while emberd restarts), which leaves no place to stamp each line
// with its time as it is written. Instead the runtime that watches the
// log samples its size every second or so and appends a mark, "the first
// N bytes had been written by time T", to LOG.idx. A line is then as old
// as the first mark at or past its end: exact to within the sampling
// interval, at the cost of one small write per interval in which the
// worker wrote anything. The index is bounded (limits.LogIndexMarks): past
// the cap every other mark is dropped, so old lines grow coarser, never
// the file larger.
package logindex

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
)

// Mark says the log's first Off bytes had been written by Time.
type Mark struct {
	Time time.Time
	Off  int64
}

// Path is the index of the log at log.
func Path(log string) string { return log + ".idx" }

// Recorder appends marks to one log's index. It is not safe for
// concurrent use: the goroutine that watches the log owns it.
type Recorder struct {
	log  string
	last int64 // the log's size at the last mark
	n    int   // marks in the index file
}

// Open returns a recorder for the log at log that goes on from the index
// already there (a worker adopted after emberd restarted).
func Open(log string) *Recorder {
	r := &Recorder{log: log}
	if marks, err := Load(log); err == nil && len(marks) > 0 {
		r.last, r.n = marks[len(marks)-1].Off, len(marks)
	}
	return r
}

// Sample marks the log's size at now if it grew since the last mark. A
// log that shrank without Rotated being told (truncated from outside)
// starts a new index.
func (r *Recorder) Sample(now time.Time) error {
	st, err := os.Stat(r.log)
	if err != nil || !st.Mode().IsRegular() {
		return nil // not created yet, gone, or /dev/null: nothing to index
	}
	size := st.Size()
	switch {
	case size == r.last:
		return nil
	case size < r.last:
		if err := r.rewrite(nil); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(Path(r.log), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log index: %w", err)
	}
	_, err = f.WriteString(strconv.FormatInt(now.UnixNano(), 10) + " " + strconv.FormatInt(size, 10) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("log index: %w", err)
	}
	r.last = size
	r.n++
	if r.n > limits.LogIndexMarks {
		return r.compact()
	}
	return nil
}

// Rotated tells the recorder that the log's first head bytes were cut out
// of it (moved to LOG.1): the marks are shifted to the bytes left.
func (r *Recorder) Rotated(head int64) error {
	marks, err := Load(r.log)
	if err != nil {
		return err
	}
	var kept []Mark
	for _, m := range marks {
		if m.Off > head {
			kept = append(kept, Mark{m.Time, m.Off - head})
		}
	}
	return r.rewrite(kept)
}

// compact drops every other mark of the older half.
func (r *Recorder) compact() error {
	marks, err := Load(r.log)
	if err != nil {
		return err
	}
	half := len(marks) / 2
	kept := make([]Mark, 0, len(marks))
	for i, m := range marks {
		if i >= half || i%2 == 1 {
			kept = append(kept, m)
		}
	}
	return r.rewrite(kept)
}

// rewrite replaces the index with marks, atomically.
func (r *Recorder) rewrite(marks []Mark) error {
	var b bytes.Buffer
	for _, m := range marks {
		b.WriteString(strconv.FormatInt(m.Time.UnixNano(), 10) + " " + strconv.FormatInt(m.Off, 10) + "\n")
	}
	tmp := Path(r.log) + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o640); err != nil {
		return fmt.Errorf("log index: %w", err)
	}
	if err := os.Rename(tmp, Path(r.log)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("log index: %w", err)
	}
	r.n, r.last = len(marks), 0
	if len(marks) > 0 {
		r.last = marks[len(marks)-1].Off
	}
	return nil
}

// maxIndexBytes bounds what Load reads: the cap's worth of marks of the
// longest form, twice over (a compaction may be under way).
const maxIndexBytes = 2 * (limits.LogIndexMarks + 1) * 42

// Load reads the index of the log at log: marks in file order, each past
// the one before (a line that is not a mark, or not past the one before,
// is skipped). No index is no marks, not an error.
func Load(log string) ([]Mark, error) {
	f, err := os.Open(Path(log))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("log index: %w", err)
	}
	defer f.Close()
	var marks []Mark
	sc := bufio.NewScanner(io.LimitReader(f, maxIndexBytes))
	for sc.Scan() {
		ts, off, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if !ok {
			continue
		}
		ns, err1 := strconv.ParseInt(string(ts), 10, 64)
		n, err2 := strconv.ParseInt(string(off), 10, 64)
		if err1 != nil || err2 != nil || n <= 0 {
			continue
		}
		if k := len(marks); k > 0 && (n <= marks[k-1].Off || ns < marks[k-1].Time.UnixNano()) {
			continue
		}
		marks = append(marks, Mark{time.Unix(0, ns), n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("log index: %w", err)
	}
	return marks, nil
}

// TimeOf is when the byte before end (a line's last) had been written by:
// the first mark at or past end. ok is false when end is past every mark
// (written after the last sample).
func TimeOf(marks []Mark, end int64) (t time.Time, ok bool) {
	i := sort.Search(len(marks), func(i int) bool { return marks[i].Off >= end })
	if i == len(marks) {
		return time.Time{}, false
	}
	return marks[i].Time, true
}

// StartFor is the offset before which every byte was written before
// since: where a reader of the lines written since then may start.
func StartFor(marks []Mark, since time.Time) int64 {
	i := sort.Search(len(marks), func(i int) bool { return !marks[i].Time.Before(since) })
	if i == 0 {
		return 0
	}
	return marks[i-1].Off
}
