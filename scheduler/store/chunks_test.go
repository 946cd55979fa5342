package store

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
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
	// Sizes of value-log chunks are estimated from their pointers (a few
	// bytes off), so budgets sit half a chunk from the edges.
	for _, unit := range []int{100, 8000} {
		t.Run(fmt.Sprintf("chunks of %d bytes", unit), func(t *testing.T) {
			s := openTest(t, t.TempDir(), false, 64) // Badger's value threshold: 64+4096 bytes
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
		// A value-log chunk's size is read from its pointer: close, not exact.
		if sp := got["b"]; sp.First != 0 || sp.Next != 1 || sp.Bytes < 100<<10 || sp.Bytes > 100<<10+64 {
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
