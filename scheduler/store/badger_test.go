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
	"sync"
	"testing"
	"time"
)

// quiet keeps Badger's chatter out of test output.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openTest(t *testing.T, dir string, inMemory bool, spill int) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(Options{Dir: dir, InMemory: inMemory, SpillThreshold: spill, Logger: quiet})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func commit(t *testing.T, s *Store, fill func(b *Batch)) {
	t.Helper()
	b := s.NewBatch()
	fill(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Commit(ctx, b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func putJob(t *testing.T, s *Store, j *Job, exp time.Time) {
	t.Helper()
	commit(t, s, func(b *Batch) {
		if err := b.PutJob(j, exp); err != nil {
			t.Fatalf("PutJob: %v", err)
		}
	})
}

func sampleJob(id string) *Job {
	return &Job{
		ID:                 id,
		EndpointID:         "ep1",
		Status:             InProgress,
		Seq:                7,
		Input:              json.RawMessage(`{"prompt":"hi"}`),
		Webhook:            "http://127.0.0.1:9/hook",
		WebhookV2:          "v2",
		S3Config:           json.RawMessage(`{"bucketName":"b"}`),
		ExecutionTimeoutMs: 600000,
		TTLMs:              86400000,
		LowPriority:        true,
		Sync:               true,
		SubmittedAt:        1700000000123,
		StartedAt:          1700000000456,
		WorkerID:           "w-1",
		Attempts:           2,
		Retries:            1,
		Output:             json.RawMessage(`[1,2,3]`),
		Error:              "",
		ExecutionMs:        5,
		DelayMs:            333,
	}
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

func TestJobRoundTrip(t *testing.T) {
	cases := []struct {
		name     string
		inMemory bool
		job      *Job
	}{
		{"full record on disk", false, sampleJob("a")},
		{"full record in memory", true, sampleJob("b")},
		{"minimal record", false, &Job{ID: "c", EndpointID: "ep", Status: InQueue, Input: json.RawMessage(`1`)}},
		{"string input and failure", false, &Job{ID: "d", EndpointID: "ep", Status: Failed, Input: json.RawMessage(`"x"`), Error: "boom", FinishedAt: 99}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, "", tc.inMemory, 0)
			putJob(t, s, tc.job, time.Time{})
			for _, payloads := range []bool{false, true} {
				got, err := s.Job(tc.job.ID, payloads)
				if err != nil {
					t.Fatalf("Job(%q, %v): %v", tc.job.ID, payloads, err)
				}
				if !jobsEqual(got, tc.job) {
					t.Errorf("Job(%q, %v) = %+v, want %+v", tc.job.ID, payloads, got, tc.job)
				}
			}
			if _, err := s.Job("missing", true); !errors.Is(err, ErrNotFound) {
				t.Errorf("Job(missing) err = %v, want ErrNotFound", err)
			}
		})
	}
}

func jobsEqual(a, b *Job) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
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

			rec, err := s.Job(id, false)
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

			full, err := s.Job(id, true)
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
	if _, err := s.Job("j", true); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Job with a lost spill file: err = %v, want a read error", err)
	}
	if _, err := s.Job("j", false); err != nil {
		t.Errorf("Job without payloads must not need the spill file: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	cases := []struct {
		name    string
		expires time.Time
		live    bool
	}{
		{"never", time.Time{}, true},
		{"future", time.Now().Add(time.Hour), true},
		{"past", time.Now().Add(-time.Hour), false},
		{"long past", time.Unix(1, 0), false},
		{"one second ago", time.Now().Add(-1100 * time.Millisecond), false},
	}
	for _, inMem := range []bool{false, true} {
		for i, tc := range cases {
			t.Run(fmt.Sprintf("%s/inmem=%v", tc.name, inMem), func(t *testing.T) {
				s := openTest(t, "", inMem, 0)
				id := fmt.Sprintf("j%d", i)
				putJob(t, s, &Job{ID: id, EndpointID: "ep", Status: Completed}, tc.expires)
				commit(t, s, func(b *Batch) {
					b.PutChunk(Chunk{JobID: id, Index: 0, Output: json.RawMessage(`1`)}, tc.expires)
				})
				_, err := s.Job(id, true)
				if tc.live && err != nil {
					t.Errorf("Job: %v, want live", err)
				}
				if !tc.live && !errors.Is(err, ErrNotFound) {
					t.Errorf("Job err = %v, want ErrNotFound", err)
				}
				n := 0
				if err := s.ScanJobs(func(*Job) error { n++; return nil }); err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 1, false: 0}[tc.live]; n != want {
					t.Errorf("ScanJobs saw %d records, want %d", n, want)
				}
				cs, err := allChunks(s, id)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 1, false: 0}[tc.live]; len(cs) != want {
					t.Errorf("Chunks: %d, want %d", len(cs), want)
				}
			})
		}
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

func TestDurabilityAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, SpillThreshold: 32, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	big := json.RawMessage(`"` + strings.Repeat("y", 100) + `"`)
	b := s.NewBatch()
	if err := b.PutJob(&Job{ID: "small", EndpointID: "ep", Status: InQueue, Seq: 1, Input: json.RawMessage(`{"a":1}`)}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := b.PutJob(&Job{ID: "big", EndpointID: "ep", Status: Completed, Seq: 2, Input: big, Output: big}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := b.PutEndpoint(&Endpoint{ID: "ep", Name: "n", WorkersMax: 2, Env: map[string]string{"K": "V"}}); err != nil {
		t.Fatal(err)
	}
	b.PutChunk(Chunk{JobID: "small", Index: 3, Output: json.RawMessage(`"c3"`)}, time.Time{})
	if err := b.PutDelivery(&Delivery{JobID: "big", URL: "http://x/", Body: json.RawMessage(`{"id":"big"}`), Attempts: 1, NextAt: 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Commit(context.Background(), oneOpBatch(s)); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	s.CommitAsync(oneOpBatch(s)) // must neither block nor panic

	s2 := openTest(t, dir, false, 32)
	j, err := s2.Job("small", true)
	if err != nil || string(j.Input) != `{"a":1}` || j.Seq != 1 {
		t.Errorf("small after reopen: %+v, %v", j, err)
	}
	j, err = s2.Job("big", true)
	if err != nil || !bytes.Equal(j.Input, big) || !bytes.Equal(j.Output, big) {
		t.Errorf("big after reopen: %+v, %v", j, err)
	}
	eps, err := s2.Endpoints()
	if err != nil || len(eps) != 1 || eps[0].ID != "ep" || eps[0].WorkersMax != 2 || eps[0].Env["K"] != "V" {
		t.Errorf("endpoints after reopen: %+v, %v", eps, err)
	}
	cs, err := allChunks(s2, "small")
	if err != nil || len(cs) != 1 || cs[0].Index != 3 || string(cs[0].Output) != `"c3"` {
		t.Errorf("chunks after reopen: %+v, %v", cs, err)
	}
	ds, err := s2.Deliveries()
	if err != nil || len(ds) != 1 || ds[0].JobID != "big" || ds[0].Attempts != 1 || ds[0].NextAt != 5 {
		t.Errorf("deliveries after reopen: %+v, %v", ds, err)
	}
}

func oneOpBatch(s *Store) *Batch {
	b := s.NewBatch()
	b.DeleteJob("x")
	return b
}

func TestCloseFlushesAsyncWrites(t *testing.T) {
	dir := t.TempDir()
	// One op per group: most writes are still queued when Close starts, so
	// they go through the committer's drain path.
	s, err := Open(Options{Dir: dir, MaxBatchOps: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := 0; i < n; i++ {
		b := s.NewBatch()
		if err := b.PutJob(&Job{ID: fmt.Sprintf("a%03d", i), EndpointID: "ep", Status: InQueue}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		s.CommitAsync(b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, dir, false, 0)
	got := 0
	if err := s2.ScanJobs(func(*Job) error { got++; return nil }); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("after Close and reopen %d of %d asynchronous writes are there", got, n)
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	for _, maxOps := range []int{0, 3} { // default batch size, and one that forces many groups
		t.Run(fmt.Sprintf("maxBatchOps=%d", maxOps), func(t *testing.T) {
			s, err := Open(Options{Dir: t.TempDir(), MaxBatchOps: maxOps, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const n = 200
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					<-start
					b := s.NewBatch()
					id := fmt.Sprintf("g%03d", i)
					if err := b.PutJob(&Job{ID: id, EndpointID: "ep", Status: InQueue, Seq: uint64(i)}, time.Time{}); err != nil {
						errs <- err
						return
					}
					b.PutChunk(Chunk{JobID: id, Index: 0, Output: json.RawMessage(fmt.Sprint(i))}, time.Time{})
					if err := s.Commit(ctx, b); err != nil {
						errs <- fmt.Errorf("commit %s: %w", id, err)
					}
				}(i)
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("g%03d", i)
				j, err := s.Job(id, true)
				if err != nil || j.Seq != uint64(i) {
					t.Errorf("%s: %+v, %v", id, j, err)
				}
				cs, err := allChunks(s, id)
				if err != nil || len(cs) != 1 || string(cs[0].Output) != fmt.Sprint(i) {
					t.Errorf("%s chunks: %+v, %v", id, cs, err)
				}
			}
		})
	}
}

func TestCommitEmptyAndCancelled(t *testing.T) {
	s := openTest(t, "", true, 0)
	if err := s.Commit(context.Background(), s.NewBatch()); err != nil {
		t.Errorf("empty Commit: %v", err)
	}
	s.CommitAsync(s.NewBatch())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := s.NewBatch()
	b.DeleteJob("x")
	// A cancelled context may or may not land the write, but it must return.
	done := make(chan error, 1)
	go func() { done <- s.Commit(ctx, b) }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Commit with cancelled ctx: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Commit with a cancelled context did not return")
	}
}

func TestCommitAsyncOrdering(t *testing.T) {
	cases := []struct {
		name string
		// ops run in order; true = async put, false = sync delete
		steps    []string
		wantLive bool
	}{
		{"async put then sync delete", []string{"aput", "sdel"}, false},
		{"async delete then sync put", []string{"adel", "sput"}, true},
		{"sync put, async delete, sync read barrier", []string{"sput", "adel", "sbarrier"}, false},
		{"many async puts then sync delete", []string{"aput", "aput", "aput", "aput", "sdel"}, false},
		{"async put, async delete, async put, sync barrier", []string{"aput", "adel", "aput", "sbarrier"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, "", false, 0)
			const id = "k"
			for _, st := range tc.steps {
				b := s.NewBatch()
				switch st[1:] {
				case "put":
					if err := b.PutJob(&Job{ID: id, EndpointID: "ep", Status: InQueue}, time.Time{}); err != nil {
						t.Fatal(err)
					}
				case "del":
					b.DeleteJob(id)
				case "barrier":
					b.DeleteJob("unrelated")
				}
				if st[0] == 'a' {
					s.CommitAsync(b)
				} else if err := s.Commit(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			_, err := s.Job(id, false)
			if tc.wantLive && err != nil {
				t.Errorf("Job: %v, want live", err)
			}
			if !tc.wantLive && !errors.Is(err, ErrNotFound) {
				t.Errorf("Job err = %v, want ErrNotFound (an async write overtook a later sync one)", err)
			}
		})
	}
}

func TestChunksOrdering(t *testing.T) {
	s := openTest(t, "", false, 0)
	// Indices crossing byte boundaries: a string-sorted key would put 256
	// before 2 and 10 before 9.
	idx := []uint64{300, 0, 1, 2, 9, 10, 255, 256, 65536, 1 << 40}
	commit(t, s, func(b *Batch) {
		for _, i := range idx {
			b.PutChunk(Chunk{JobID: "job", Index: i, Output: json.RawMessage(fmt.Sprint(i))}, time.Time{})
		}
		// Other jobs sharing a prefix must not leak in.
		b.PutChunk(Chunk{JobID: "job2", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
		b.PutChunk(Chunk{JobID: "jo", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
	})
	cs, err := allChunks(s, "job")
	if err != nil {
		t.Fatal(err)
	}
	want := append([]uint64(nil), idx...)
	sort.Slice(want, func(a, b int) bool { return want[a] < want[b] })
	if len(cs) != len(want) {
		t.Fatalf("got %d chunks, want %d: %+v", len(cs), len(want), cs)
	}
	for i, c := range cs {
		if c.Index != want[i] || string(c.Output) != fmt.Sprint(want[i]) || c.JobID != "job" {
			t.Errorf("chunk %d = %+v, want index %d", i, c, want[i])
		}
	}
	// Deleting some leaves the rest in order.
	commit(t, s, func(b *Batch) {
		b.DeleteChunk("job", 0)
		b.DeleteChunk("job", 256)
	})
	cs, _ = allChunks(s, "job")
	var got []uint64
	for _, c := range cs {
		got = append(got, c.Index)
	}
	if fmt.Sprint(got) != fmt.Sprint([]uint64{1, 2, 9, 10, 255, 300, 65536, 1 << 40}) {
		t.Errorf("after deletes: %v", got)
	}
	if cs, _ := allChunks(s, "none"); len(cs) != 0 {
		t.Errorf("Chunks(none) = %+v", cs)
	}
}

func TestDeliveries(t *testing.T) {
	s := openTest(t, "", false, 0)
	commit(t, s, func(b *Batch) {
		for i, id := range []string{"j1", "j2", "j3"} {
			if err := b.PutDelivery(&Delivery{JobID: id, URL: "http://h/" + id, Body: json.RawMessage(`{"id":"` + id + `"}`), NextAt: int64(i)}); err != nil {
				t.Fatal(err)
			}
		}
	})
	// A job has at most one pending delivery: a second put replaces it.
	commit(t, s, func(b *Batch) {
		if err := b.PutDelivery(&Delivery{JobID: "j2", URL: "http://h/j2", Body: json.RawMessage(`{"id":"j2","v":2}`), Attempts: 2, NextAt: 42}); err != nil {
			t.Fatal(err)
		}
		b.DeleteDelivery("j3")
	})
	ds, err := s.Deliveries()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Delivery{}
	for _, d := range ds {
		if _, dup := got[d.JobID]; dup {
			t.Errorf("two deliveries for %s", d.JobID)
		}
		got[d.JobID] = d
	}
	if len(got) != 2 {
		t.Fatalf("deliveries = %+v, want j1 and j2", ds)
	}
	if d := got["j2"]; d.Attempts != 2 || d.NextAt != 42 || string(d.Body) != `{"id":"j2","v":2}` {
		t.Errorf("j2 = %+v, want the replacement", d)
	}
	if d := got["j1"]; d.URL != "http://h/j1" || d.NextAt != 0 {
		t.Errorf("j1 = %+v", d)
	}
}

func TestEndpointsPutDelete(t *testing.T) {
	s := openTest(t, "", true, 0)
	commit(t, s, func(b *Batch) {
		for _, id := range []string{"a", "b"} {
			if err := b.PutEndpoint(&Endpoint{ID: id, Name: "n" + id}); err != nil {
				t.Fatal(err)
			}
		}
	})
	commit(t, s, func(b *Batch) { b.DeleteEndpoint("a") })
	eps, err := s.Endpoints()
	if err != nil || len(eps) != 1 || eps[0].ID != "b" || eps[0].Name != "nb" {
		t.Errorf("Endpoints = %+v, %v", eps, err)
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
	commit(t, s, func(b *Batch) { b.DeleteJob("gone") })
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
	j, err := s.Job("live", true)
	if err != nil || !bytes.Equal(j.Input, big) || !bytes.Equal(j.Output, big) {
		t.Errorf("live job after sweep: %+v, %v", j, err)
	}
}

func TestScanJobsEachOnce(t *testing.T) {
	s := openTest(t, "", false, 32)
	const n = 500
	big := json.RawMessage(`"` + strings.Repeat("q", 40) + `"`)
	// Several commits, some spilled, a few deleted and a few expired, plus
	// other record kinds that must not show up.
	for start := 0; start < n; start += 100 {
		commit(t, s, func(b *Batch) {
			for i := start; i < start+100; i++ {
				j := &Job{ID: fmt.Sprintf("job-%04d", i), EndpointID: "ep", Status: InQueue, Seq: uint64(i)}
				if i%7 == 0 {
					j.Input = big
				}
				exp := time.Time{}
				if i%50 == 49 {
					exp = time.Now().Add(-time.Minute)
				}
				if err := b.PutJob(j, exp); err != nil {
					t.Fatal(err)
				}
				b.PutChunk(Chunk{JobID: j.ID, Index: 0, Output: json.RawMessage(`0`)}, time.Time{})
			}
		})
	}
	commit(t, s, func(b *Batch) {
		b.DeleteJob("job-0003")
		b.DeleteJob("job-0004")
		if err := b.PutEndpoint(&Endpoint{ID: "ep"}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutDelivery(&Delivery{JobID: "job-0001", URL: "http://x"}); err != nil {
			t.Fatal(err)
		}
	})
	// Overwrite a few: still one record each.
	putJob(t, s, &Job{ID: "job-0010", EndpointID: "ep", Status: Completed, Seq: 10}, time.Time{})
	putJob(t, s, &Job{ID: "job-0010", EndpointID: "ep", Status: Failed, Seq: 10}, time.Time{})

	seen := map[string]int{}
	err := s.ScanJobs(func(j *Job) error {
		seen[j.ID]++
		if j.Seq%7 == 0 && j.ID != "job-0010" && (j.InputRef == "" || j.Input != nil) {
			t.Errorf("%s: ScanJobs loaded a spilled payload (ref %q, %d bytes)", j.ID, j.InputRef, len(j.Input))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("job-%04d", i)
		live := i != 3 && i != 4 && i%50 != 49
		if live {
			want++
			if seen[id] != 1 {
				t.Errorf("%s seen %d times, want 1", id, seen[id])
			}
		} else if seen[id] != 0 {
			t.Errorf("%s (deleted or expired) seen %d times", id, seen[id])
		}
	}
	if len(seen) != want {
		t.Errorf("ScanJobs saw %d distinct ids, want %d", len(seen), want)
	}
	// An error from fn stops the scan and comes back.
	stop := errors.New("stop")
	calls := 0
	if err := s.ScanJobs(func(*Job) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ScanJobs with failing fn: err %v after %d calls", err, calls)
	}
}

func TestCommitLater(t *testing.T) {
	s := openTest(t, "", false, 0)
	// Empty batch: answered at once.
	select {
	case err := <-s.CommitLater(s.NewBatch()):
		if err != nil {
			t.Errorf("empty CommitLater: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("empty CommitLater never answered")
	}
	// A put through CommitLater, then a synchronous delete queued before the
	// first is acknowledged: the delete lands last.
	b := s.NewBatch()
	if err := b.PutJob(&Job{ID: "k", EndpointID: "ep", Status: InQueue}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	first := s.CommitLater(b)
	commit(t, s, func(b *Batch) { b.DeleteJob("k") })
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CommitLater never answered")
	}
	if _, err := s.Job("k", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job(k) err = %v, want ErrNotFound", err)
	}
	// Once acknowledged, the write is readable.
	b = s.NewBatch()
	if err := b.PutJob(&Job{ID: "m", EndpointID: "ep", Status: InQueue}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := <-s.CommitLater(b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job("m", false); err != nil {
		t.Errorf("acknowledged write not readable: %v", err)
	}
	s.Close()
	select {
	case err := <-s.CommitLater(oneOpBatch(s)):
		if !errors.Is(err, ErrClosed) {
			t.Errorf("CommitLater after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CommitLater after Close never answered")
	}
}
