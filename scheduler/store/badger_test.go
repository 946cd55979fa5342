package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var bg = context.Background()

// quiet keeps Badger's chatter out of test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openTest(t *testing.T, dir string, inMemory bool, spill int) *Badger {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := OpenBadger(BadgerOptions{Dir: dir, InMemory: inMemory, SpillThreshold: spill, Logger: quiet})
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func commit(t *testing.T, s *Badger, fill func(b Batch)) {
	t.Helper()
	b := s.NewBatch()
	fill(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Commit(ctx, b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func putJob(t *testing.T, s *Badger, j *Job, exp time.Time) {
	t.Helper()
	commit(t, s, func(b Batch) {
		if err := b.PutJob(j, exp); err != nil {
			t.Fatalf("PutJob: %v", err)
		}
	})
}

func TestStatusTerminal(t *testing.T) {
	for st, want := range map[Status]bool{
		InQueue: false, InProgress: false,
		Completed: true, Failed: true, Cancelled: true, TimedOut: true,
	} {
		if got := st.Terminal(); got != want {
			t.Errorf("%s.Terminal() = %v, want %v", st, got, want)
		}
	}
}

func TestSpill(t *testing.T) {
	const threshold = 64
	big := func(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n) + `"`) }
	cases := []struct {
		name           string
		in, out        json.RawMessage
		wantIn, wantOu bool // spilled
	}{
		{"both small", json.RawMessage(`{"a":1}`), json.RawMessage(`2`), false, false},
		{"exactly at threshold stays inline", big(threshold - 2), nil, false, false},
		{"input above threshold", big(threshold), json.RawMessage(`2`), true, false},
		{"output above threshold", json.RawMessage(`1`), big(500), false, true},
		{"both above threshold", big(1000), big(2000), true, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, false, threshold)
			id := fmt.Sprintf("job%d", i)
			j := &Job{ID: id, EndpointID: "ep", Status: Completed, Input: tc.in, Output: tc.out}
			putJob(t, s, j, time.Time{})

			rec, err := s.Job(bg, id, false)
			if err != nil {
				t.Fatal(err)
			}
			checkSide := func(what string, spilled bool, ref string, inline, want json.RawMessage, file string) {
				t.Helper()
				path := filepath.Join(dir, "spill", file)
				if spilled {
					if ref != file {
						t.Errorf("%s ref = %q, want %q", what, ref, file)
					}
					if inline != nil {
						t.Errorf("%s still inline in the record (%d bytes) although spilled", what, len(inline))
					}
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatalf("%s spill file: %v", what, err)
					}
					if !bytes.Equal(b, want) {
						t.Errorf("%s spill file holds %d bytes, want %d", what, len(b), len(want))
					}
				} else {
					if ref != "" {
						t.Errorf("%s ref = %q, want none", what, ref)
					}
					if !bytes.Equal(inline, want) {
						t.Errorf("%s inline = %s, want %s", what, inline, want)
					}
					if _, err := os.Stat(path); !os.IsNotExist(err) {
						t.Errorf("%s spill file %s exists (err %v) although not spilled", what, file, err)
					}
				}
			}
			checkSide("input", tc.wantIn, rec.InputRef, rec.Input, tc.in, id+".in")
			checkSide("output", tc.wantOu, rec.OutputRef, rec.Output, tc.out, id+".out")

			full, err := s.Job(bg, id, true)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(full.Input, tc.in) || !bytes.Equal(full.Output, tc.out) {
				t.Errorf("Job(id, true): input %d bytes / output %d bytes, want %d / %d", len(full.Input), len(full.Output), len(tc.in), len(tc.out))
			}
			if full.InputRef != "" || full.OutputRef != "" {
				t.Errorf("Job(id, true) kept refs %q %q", full.InputRef, full.OutputRef)
			}
			// No temporary files may be left behind.
			tmps, _ := filepath.Glob(filepath.Join(dir, "spill", "*.tmp"))
			if len(tmps) > 0 {
				t.Errorf("leftover temp files: %v", tmps)
			}
		})
	}
}

func TestSpillMissingFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false, 8)
	putJob(t, s, &Job{ID: "j", EndpointID: "ep", Status: InQueue, Input: json.RawMessage(`"0123456789abcdef"`)}, time.Time{})
	if err := os.Remove(filepath.Join(dir, "spill", "j.in")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job(bg, "j", true); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Job with a lost spill file: err = %v, want a read error", err)
	}
	if _, err := s.Job(bg, "j", false); err != nil {
		t.Errorf("Job without payloads must not need the spill file: %v", err)
	}
}

func TestExpiryRounding(t *testing.T) {
	// Badger keeps expiry in whole seconds; a record must never vanish
	// before its deadline, so fractions round up.
	cases := []struct {
		in   time.Time
		want uint64
	}{
		{time.Time{}, 0},
		{time.Unix(100, 0), 100},
		{time.Unix(100, 1), 101},
		{time.Unix(100, 999999999), 101},
		{time.Unix(-5, 0), 1},
		{time.Unix(0, 0), 1},
	}
	for _, tc := range cases {
		if got := expiry(tc.in); got != tc.want {
			t.Errorf("expiry(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestSweepSpill(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, false, 16)
	big := json.RawMessage(`"` + strings.Repeat("z", 64) + `"`)
	// live: record references both files.
	putJob(t, s, &Job{ID: "live", EndpointID: "ep", Status: Completed, Input: big, Output: big}, time.Time{})
	// deleted: files written, record removed afterwards.
	putJob(t, s, &Job{ID: "gone", EndpointID: "ep", Status: Completed, Input: big}, time.Time{})
	commit(t, s, func(b Batch) { b.DeleteJob("gone") })
	// expired: record hidden by Badger.
	putJob(t, s, &Job{ID: "old", EndpointID: "ep", Status: Completed, Output: big}, time.Now().Add(-time.Hour))
	// small: record exists but holds its input inline; a stale file of the
	// same name is not referenced.
	putJob(t, s, &Job{ID: "small", EndpointID: "ep", Status: InQueue, Input: json.RawMessage(`1`)}, time.Time{})
	spill := filepath.Join(dir, "spill")
	for _, name := range []string{"small.in", "orphan.in", "orphan.out", "crashed.in.tmp", "live.in.tmp"} {
		if err := os.WriteFile(filepath.Join(spill, name), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh orphan is protected by minAge.
	n, err := s.SweepSpill(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("SweepSpill(1h) removed %d young files, want 0", n)
	}
	n, err = s.SweepSpill(0)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(spill)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	sort.Strings(left)
	want := []string{"live.in", "live.out"}
	if fmt.Sprint(left) != fmt.Sprint(want) {
		t.Errorf("after sweep the spill dir holds %v, want %v", left, want)
	}
	if wantN := 7; n != wantN { // gone.in, old.out, small.in, orphan.in, orphan.out, crashed.in.tmp, live.in.tmp
		t.Errorf("SweepSpill removed %d, want %d", n, wantN)
	}
	j, err := s.Job(bg, "live", true)
	if err != nil || !bytes.Equal(j.Input, big) || !bytes.Equal(j.Output, big) {
		t.Errorf("live job after sweep: %+v, %v", j, err)
	}
}

// TestScanJobsLeavesPayloadsSpilled: the recovery scan reads records, not
// the payloads spilled to files (it must stay one cheap pass).
func TestScanJobsLeavesPayloadsSpilled(t *testing.T) {
	s := openTest(t, "", false, 32)
	big := json.RawMessage(`"` + strings.Repeat("q", 40) + `"`)
	commit(t, s, func(b Batch) {
		for i := 0; i < 20; i++ {
			j := &Job{ID: fmt.Sprintf("job-%04d", i), EndpointID: "ep", Status: InQueue, Seq: uint64(i)}
			if i%7 == 0 {
				j.Input = big
			}
			if err := b.PutJob(j, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	})
	n := 0
	if err := s.ScanJobs(bg, func(j *Job) error {
		n++
		if spilled := j.Seq%7 == 0; spilled && (j.InputRef == "" || j.Input != nil) {
			t.Errorf("%s: ScanJobs loaded a spilled payload (ref %q, %d bytes)", j.ID, j.InputRef, len(j.Input))
		} else if !spilled && (j.InputRef != "" || j.Input != nil) {
			t.Errorf("%s: ref %q, %d bytes; want no input", j.ID, j.InputRef, len(j.Input))
		}
		return nil
	}); err != nil || n != 20 {
		t.Fatalf("ScanJobs: %d records, %v", n, err)
	}
}

// TestCommitForeignBatch: a batch of another store is refused, not
// written here (its payload files are in the other store's directory).
func TestCommitForeignBatch(t *testing.T) {
	a, b := openTest(t, "", false, 0), openTest(t, "", false, 0)
	bt := b.NewBatch()
	if err := bt.PutJob(&Job{ID: "j", EndpointID: "ep"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(bg, bt); err == nil || !strings.Contains(err.Error(), "another store") {
		t.Fatalf("Commit of another store's batch: %v", err)
	}
	if _, err := a.Job(bg, "j", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("the foreign batch landed: %v", err)
	}
}
