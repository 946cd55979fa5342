package runc

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci/logindex"
)

// lines returns numbered lines totalling about n bytes, from line start.
func lines(start, n int) ([]byte, int) {
	var b bytes.Buffer
	i := start
	for b.Len() < n {
		fmt.Fprintf(&b, "line %08d %s\n", i, "payload-payload-payload-payload")
		i++
	}
	return b.Bytes(), i
}

func TestRotateLog(t *testing.T) {
	for _, tc := range []struct {
		name     string
		collapse bool
	}{
		{"collapse range", true},
		{"copy and truncate", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.collapse {
				saved := collapseRange
				collapseRange = func(int, int64) error { return unix.EOPNOTSUPP }
				t.Cleanup(func() { collapseRange = saved })
			}
			path := filepath.Join(t.TempDir(), "w.log")
			f, err := openLog(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			const maxBytes, maxFiles = 64 << 10, 3
			var all []byte
			next := 0
			rotations := 0
			for range 20 {
				var chunk []byte
				chunk, next = lines(next, 40<<10)
				if _, err := f.Write(chunk); err != nil {
					t.Fatal(err)
				}
				all = append(all, chunk...)
				rotated, err := rotateLogIfOver(path, maxBytes, maxFiles)
				if err != nil {
					t.Fatal(err)
				}
				if rotated {
					rotations++
				}
				if st, _ := os.Stat(path); st.Size() > maxBytes+40<<10 {
					t.Fatalf("live log %d bytes", st.Size())
				}
			}
			if rotations == 0 {
				t.Fatal("never rotated")
			}
			if _, err := os.Stat(path + ".3"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("more than %d files", maxFiles)
			}
			// The files, oldest first, are a contiguous tail of what was
			// written (nothing lost, nothing doubled: the writer was idle
			// during rotations here).
			var got []byte
			for _, p := range []string{path + ".2", path + ".1", path} {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
			}
			if !bytes.HasSuffix(all, got) {
				t.Errorf("rotated files are not a tail of the log (%d bytes of %d)", len(got), len(all))
			}
			t.Logf("%d rotations, %d bytes kept of %d", rotations, len(got), len(all))
		})
	}
}

func TestRotateLogLeavesSmallAndSpecialFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	os.WriteFile(path, []byte("small\n"), 0o640)
	for _, p := range []string{path, os.DevNull, filepath.Join(t.TempDir(), "missing")} {
		if rotated, err := rotateLogIfOver(p, 1, 3); err != nil || (rotated && p != path) {
			t.Errorf("%s: rotated %v, err %v", p, rotated, err)
		}
	}
	// maxFiles 1: the live file is just emptied.
	path = filepath.Join(t.TempDir(), "one.log")
	os.WriteFile(path, bytes.Repeat([]byte("x"), 10000), 0o640)
	if _, err := rotateLogIfOver(path, 100, 1); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Errorf("size %d after rotation with one file", st.Size())
	}
	if _, err := os.Stat(path + ".1"); !errors.Is(err, os.ErrNotExist) {
		t.Error(".1 written with maxFiles 1")
	}
}

// TestCheckLogShiftsIndex: a rotation in place cuts the log's head; the
// time index's marks follow the bytes that stay, so a line keeps its time.
func TestCheckLogShiftsIndex(t *testing.T) {
	for _, collapse := range []bool{true, false} {
		t.Run(fmt.Sprintf("collapse=%v", collapse), func(t *testing.T) {
			if !collapse {
				old := collapseRange
				collapseRange = func(int, int64) error { return unix.EOPNOTSUPP }
				t.Cleanup(func() { collapseRange = old })
			}
			path := filepath.Join(t.TempDir(), "w-1.log")
			r := &Runtime{logMax: 64 << 10, logFiles: 3, log: slog.New(slog.DiscardHandler)}
			idx := logindex.Open(path)
			first, next := lines(0, 40<<10)
			os.WriteFile(path, first, 0o640)
			r.checkLog(path, idx) // under the cap: a mark at 40 KiB
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			more, _ := lines(next, 40<<10)
			f.Write(more)
			f.Close()
			r.checkLog(path, idx) // over: rotated, then marked
			marks, err := logindex.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(path)
			switch {
			case st.Size() == 0:
				// Copied whole and truncated: nothing left to mark.
				if len(marks) != 0 {
					t.Errorf("marks %v for an empty log", marks)
				}
			case len(marks) == 0 || marks[len(marks)-1].Off != st.Size():
				t.Fatalf("marks %v, log size %d", marks, st.Size())
			}
			for _, m := range marks {
				if m.Off <= 0 || m.Off > st.Size() {
					t.Errorf("mark %v outside the live log (%d bytes)", m, st.Size())
				}
			}
		})
	}
}
