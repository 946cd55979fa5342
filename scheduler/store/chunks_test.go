package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// allChunks reads every stored chunk of a job in one unbounded page.
func allChunks(s *Store, jobID string) ([]Chunk, error) {
	page, _, err := s.ChunkPage(jobID, 0, math.MaxUint64, math.MaxInt)
	return page, err
}

func indexes(page []Chunk) []uint64 {
	out := []uint64{}
	for _, c := range page {
		out = append(out, c.Index)
	}
	return out
}

// TestChunkPage: pages stop at the byte budget (at least one chunk each),
// at the index bound, and never leak another job's chunks.
func TestChunkPage(t *testing.T) {
	// Big values go to Badger's value log, small ones stay in the tree:
	// both must page the same way.
	for _, unit := range []int{100, 80000} {
		t.Run(fmt.Sprintf("chunks of %d bytes", unit), func(t *testing.T) {
			s := openTest(t, t.TempDir(), false, 0)
			val := json.RawMessage(`"` + strings.Repeat("x", unit-2) + `"`)
			commit(t, s, func(b *Batch) {
				for i := 0; i < 10; i++ {
					b.PutChunk(Chunk{JobID: "job", Index: uint64(i), Output: val}, time.Time{})
				}
				b.PutChunk(Chunk{JobID: "job2", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
				b.PutChunk(Chunk{JobID: "jo", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
				// A chunk bigger than any budget below.
				b.PutChunk(Chunk{JobID: "big", Index: 0, Output: json.RawMessage(`"` + strings.Repeat("y", 20*unit) + `"`)}, time.Time{})
				b.PutChunk(Chunk{JobID: "big", Index: 1, Output: json.RawMessage(`1`)}, time.Time{})
			})
			for _, tc := range []struct {
				name     string
				job      string
				from, to uint64
				budget   int
				want     []uint64
				more     bool
			}{
				{"budget of three", "job", 0, math.MaxUint64, 3*unit + unit/2, []uint64{0, 1, 2}, true},
				{"budget under three", "job", 0, math.MaxUint64, 3*unit - unit/2, []uint64{0, 1}, true},
				{"from the middle", "job", 7, math.MaxUint64, 3*unit + unit/2, []uint64{7, 8, 9}, false},
				{"bounded by to", "job", 2, 4, 100 * unit, []uint64{2, 3}, false},
				{"to cuts before the budget", "job", 0, 2, unit + unit/2, []uint64{0}, true},
				{"everything", "job", 0, math.MaxUint64, 100 * unit, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, false},
				{"one chunk over the budget still goes", "big", 0, math.MaxUint64, unit, []uint64{0}, true},
				{"past the end", "job", 10, math.MaxUint64, 3 * unit, []uint64{}, false},
				{"no such job", "none", 0, math.MaxUint64, 3 * unit, []uint64{}, false},
			} {
				page, more, err := s.ChunkPage(tc.job, tc.from, tc.to, tc.budget)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if fmt.Sprint(indexes(page)) != fmt.Sprint(tc.want) || more != tc.more {
					t.Errorf("%s: got %v more=%v, want %v more=%v", tc.name, indexes(page), more, tc.want, tc.more)
				}
				for _, c := range page {
					if c.JobID != tc.job {
						t.Errorf("%s: chunk of job %q", tc.name, c.JobID)
					}
				}
			}
		})
	}
}

// TestChunkSpans: one key scan finds each job's first and next index and
// its bytes, before and after deletes and across a reopen.
func TestChunkSpans(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false, 0)
	commit(t, s, func(b *Batch) {
		for i := 3; i < 8; i++ {
			b.PutChunk(Chunk{JobID: "a", Index: uint64(i), Output: json.RawMessage(`"abcd"`)}, time.Time{}) // 6 bytes
		}
		b.PutChunk(Chunk{JobID: "a-b", Index: 300, Output: json.RawMessage(`1`)}, time.Time{})
		b.PutChunk(Chunk{JobID: "b", Index: 0, Output: json.RawMessage(`"` + strings.Repeat("z", 100<<10) + `"`)}, time.Time{})
	})
	commit(t, s, func(b *Batch) { b.DeleteChunk("a", 3) })
	check := func(s *Store) {
		t.Helper()
		got := map[string]ChunkSpan{}
		if err := s.ScanChunkSpans(func(id string, sp ChunkSpan) {
			if _, dup := got[id]; dup {
				t.Errorf("job %s reported twice", id)
			}
			got[id] = sp
		}); err != nil {
			t.Fatal(err)
		}
		if sp := got["a"]; sp != (ChunkSpan{First: 4, Next: 8, Bytes: 24}) {
			t.Errorf("a: %+v", sp)
		}
		if sp := got["a-b"]; sp != (ChunkSpan{First: 300, Next: 301, Bytes: 1}) {
			t.Errorf("a-b: %+v", sp)
		}
		if sp := got["b"]; sp != (ChunkSpan{First: 0, Next: 1, Bytes: 100<<10 + 2}) {
			t.Errorf("b: %+v", sp)
		}
		if len(got) != 3 {
			t.Errorf("spans %+v", got)
		}
		if sp, err := s.ChunkSpanOf("a"); err != nil || sp != got["a"] {
			t.Errorf("ChunkSpanOf(a) = %+v, %v", sp, err)
		}
		if sp, err := s.ChunkSpanOf("none"); err != nil || sp != (ChunkSpan{}) {
			t.Errorf("ChunkSpanOf(none) = %+v, %v", sp, err)
		}
	}
	check(s)
	s.Close()
	check(openTest(t, dir, false, 0))
}

// TestChunkFiles: chunk bytes live in the job's stream file, not in Badger;
// delivered ranges are punched out; chunks kept in their index record (as
// earlier versions wrote them) still read; the file goes with its job.
func TestChunkFiles(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false, 0)
	big := json.RawMessage(`"` + strings.Repeat("b", 1<<20) + `"`)
	commit(t, s, func(b *Batch) {
		if err := b.PutJob(&Job{ID: "job", Status: InProgress}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		b.PutChunk(Chunk{JobID: "job", Index: 0, Output: big}, time.Time{})
		b.PutChunk(Chunk{JobID: "job", Index: 1, Output: json.RawMessage(`"small"`)}, time.Time{})
		// An earlier version's chunk, kept in the record itself.
		b.ops = append(b.ops, op{kind: opSet, key: chunkKey("job", 2), val: []byte(`"legacy"`)})
	})
	path := filepath.Join(dir, "spill", "job.stream")
	st, err := os.Stat(path)
	if err != nil || st.Size() != int64(len(big))+7 {
		t.Fatalf("stream file: %v %v", st, err)
	}
	page, more, err := s.ChunkPage("job", 0, math.MaxUint64, math.MaxInt)
	if err != nil || more || len(page) != 3 || string(page[0].Output) != string(big) || string(page[1].Output) != `"small"` || string(page[2].Output) != `"legacy"` {
		t.Fatalf("page: %d chunks, more %v, %v", len(page), more, err)
	}
	if sp, err := s.ChunkSpanOf("job"); err != nil || sp != (ChunkSpan{First: 0, Next: 3, Bytes: int64(len(big)) + 7 + 8}) {
		t.Errorf("span %+v %v", sp, err)
	}
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := blocks()
	commit(t, s, func(b *Batch) { b.DeleteChunk("job", 0) })
	s.ReleaseChunks("job", page[:1])
	if after := blocks(); after > before-int64(len(big))/2 {
		t.Errorf("delivered chunk not punched out: %d bytes on disk before, %d after", before, after)
	}
	if page, _, err := s.ChunkPage("job", 0, math.MaxUint64, math.MaxInt); err != nil || len(page) != 2 || string(page[0].Output) != `"small"` {
		t.Errorf("after the delivery: %d chunks, %v", len(page), err)
	}
	// A stream file stays while its job's record does, then is swept.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SweepSpill(time.Minute); err != nil || n != 0 {
		t.Fatalf("sweep with the job live: removed %d, %v", n, err)
	}
	commit(t, s, func(b *Batch) { b.DeleteJob("job") })
	if n, err := s.SweepSpill(time.Minute); err != nil || n != 1 {
		t.Fatalf("sweep after the job: removed %d, %v", n, err)
	}
	// Index records outliving their file read as nothing, not as an error.
	if page, _, err := s.ChunkPage("job", 0, math.MaxUint64, math.MaxInt); err != nil || len(page) != 1 || string(page[0].Output) != `"legacy"` {
		t.Errorf("after the sweep: %d chunks, %v", len(page), err)
	}
}

// TestPutChunkFailure: a chunk whose file cannot be written fails its
// batch's commit, which then writes nothing.
func TestPutChunkFailure(t *testing.T) {
	s := openTest(t, "", false, 0)
	b := s.NewBatch()
	if err := b.PutJob(&Job{ID: "j"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	b.PutChunk(Chunk{JobID: "bad/id", Index: 0, Output: json.RawMessage(`1`)}, time.Time{})
	if err := s.Commit(context.Background(), b); err == nil || !strings.Contains(err.Error(), "bad job id") {
		t.Fatalf("commit: %v", err)
	}
	if _, err := s.Job("j", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("the batch's other write landed: %v", err)
	}
}
