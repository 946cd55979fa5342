package store

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// allChunks reads every stored chunk of a job in one unbounded page.
func allChunks(s *Badger, jobID string) ([]Chunk, error) {
	page, _, err := s.ChunkPage(bg, jobID, 0, math.MaxUint64, math.MaxInt)
	return page, err
}

// TestChunkFiles: chunk bytes live in the job's stream file, not in Badger;
// delivered ranges are punched out; chunks kept in their index record (as
// earlier versions wrote them) still read; the file goes with its job.
func TestChunkFiles(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false, 0)
	big := json.RawMessage(`"` + strings.Repeat("b", 1<<20) + `"`)
	commit(t, s, func(b Batch) {
		if err := b.PutJob(&Job{ID: "job", Status: InProgress}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		b.PutChunk(Chunk{JobID: "job", Index: 0, Output: big}, time.Time{})
		b.PutChunk(Chunk{JobID: "job", Index: 1, Output: json.RawMessage(`"small"`)}, time.Time{})
		// An earlier version's chunk, kept in the record itself.
		b.(*batch).ops = append(b.(*batch).ops, op{kind: opSet, key: chunkKey("job", 2), val: []byte(`"legacy"`)})
	})
	path := filepath.Join(dir, "spill", "job.stream")
	st, err := os.Stat(path)
	if err != nil || st.Size() != int64(len(big))+7 {
		t.Fatalf("stream file: %v %v", st, err)
	}
	page, more, err := s.ChunkPage(bg, "job", 0, math.MaxUint64, math.MaxInt)
	if err != nil || more || len(page) != 3 || string(page[0].Output) != string(big) || string(page[1].Output) != `"small"` || string(page[2].Output) != `"legacy"` {
		t.Fatalf("page: %d chunks, more %v, %v", len(page), more, err)
	}
	if sp, err := s.ChunkSpanOf(bg, "job"); err != nil || sp != (ChunkSpan{First: 0, Next: 3, Bytes: int64(len(big)) + 7 + 8}) {
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
	commit(t, s, func(b Batch) { b.DeleteChunk("job", 0) })
	s.ReleaseChunks("job", page[:1])
	if after := blocks(); after > before-int64(len(big))/2 {
		t.Errorf("delivered chunk not punched out: %d bytes on disk before, %d after", before, after)
	}
	if page, _, err := s.ChunkPage(bg, "job", 0, math.MaxUint64, math.MaxInt); err != nil || len(page) != 2 || string(page[0].Output) != `"small"` {
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
	commit(t, s, func(b Batch) { b.DeleteJob("job") })
	if n, err := s.SweepSpill(time.Minute); err != nil || n != 1 {
		t.Fatalf("sweep after the job: removed %d, %v", n, err)
	}
	// Index records outliving their file read as nothing, not as an error.
	if page, _, err := s.ChunkPage(bg, "job", 0, math.MaxUint64, math.MaxInt); err != nil || len(page) != 1 || string(page[0].Output) != `"legacy"` {
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
	if _, err := s.Job(bg, "j", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("the batch's other write landed: %v", err)
	}
}
