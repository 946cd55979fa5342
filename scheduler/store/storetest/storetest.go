// Package storetest is the conformance suite of store.Store: the
// transactions the scheduler needs, the promises of their durability
// (store.Store's doc), and recovery after a close or a kill -9. It is the
// contract a second engine must meet; the Badger engine passes it
// (scheduler/store/conformance_test.go). An engine's test calls Run:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Engine{Open: openMine})
//	}
//
// It imports package store and the standard library only: nothing of the
// scheduler or the daemon, and nothing of any engine.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// Engine is the store under test.
type Engine struct {
	// Open opens (or creates) a store whose data lives in dir, failing t
	// if it cannot. The suite closes what it opens, and opens dir again
	// after a Close, and in a child process for the crash test.
	Open func(t *testing.T, dir string) store.Store
	// Volatile says that the engine keeps nothing across a Close (an
	// in-memory engine): the tests of durability are skipped.
	Volatile bool
	// Starve makes s refuse writes for want of space, in the engine's own
	// way, until restore is called. Nil: the engine cannot run out of
	// space, and the test of space errors is skipped.
	Starve func(t *testing.T, s store.Store) (restore func())
}

// Run runs the suite against e, one subtest per promise.
func Run(t *testing.T, e Engine) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, Engine)
	}{
		{"RoundTrip", testRoundTrip},
		{"Payloads", testPayloads},
		{"Expiry", testExpiry},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"CloseLandsAsync", testCloseLandsAsync},
		{"GroupCommit", testGroupCommit},
		{"CommitEmptyAndCancelled", testCommitEmptyAndCancelled},
		{"AsyncOrdering", testAsyncOrdering},
		{"CommitLater", testCommitLater},
		{"Idempotent", testIdempotent},
		{"ChunksOrdering", testChunksOrdering},
		{"ChunkPage", testChunkPage},
		{"ChunkSpans", testChunkSpans},
		{"ReleaseChunks", testReleaseChunks},
		{"Deliveries", testDeliveries},
		{"Endpoints", testEndpoints},
		{"Workers", testWorkers},
		{"ScanJobs", testScanJobs},
		{"Ping", testPing},
		{"Space", testSpace},
		{"Crash", testCrash},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, e) })
	}
}

// open opens a store in dir (a new one if dir is empty) and closes it at
// the end of the test; Close is idempotent, so a test may close it first.
func open(t *testing.T, e Engine, dir string) store.Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s := e.Open(t, dir)
	t.Cleanup(func() { s.Close() })
	return s
}

func durable(t *testing.T, e Engine) {
	t.Helper()
	if e.Volatile {
		t.Skip("the engine keeps nothing across a close")
	}
}

var bg = context.Background()

func commit(t *testing.T, s store.Store, fill func(b store.Batch)) {
	t.Helper()
	b := s.NewBatch()
	fill(b)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := s.Commit(ctx, b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func putJob(t *testing.T, s store.Store, j *store.Job, exp time.Time) {
	t.Helper()
	commit(t, s, func(b store.Batch) {
		if err := b.PutJob(j, exp); err != nil {
			t.Fatalf("PutJob: %v", err)
		}
	})
}

func oneOpBatch(s store.Store) store.Batch {
	b := s.NewBatch()
	b.DeleteJob("x")
	return b
}

func sampleJob(id string) *store.Job {
	return &store.Job{
		ID:                 id,
		EndpointID:         "ep1",
		Status:             store.InProgress,
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

func jobsEqual(a, b *store.Job) bool { return sameJSON(a, b) }

// sameJSON reports whether a and b encode to the same JSON.
func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// must fails t with the errors, if there are any.
func must(t *testing.T, errs ...error) {
	t.Helper()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// bigValue is a JSON string of n bytes.
func bigValue(c string, n int) json.RawMessage {
	return json.RawMessage(`"` + strings.Repeat(c, n-2) + `"`)
}

// allChunks reads every stored chunk of a job in one unbounded page.
func allChunks(s store.Store, jobID string) ([]store.Chunk, error) {
	page, _, err := s.ChunkPage(bg, jobID, 0, math.MaxUint64, math.MaxInt)
	return page, err
}

func indexes(page []store.Chunk) []uint64 {
	out := []uint64{}
	for _, c := range page {
		out = append(out, c.Index)
	}
	return out
}

// testRoundTrip: a job record reads back as written, with or without its
// payloads; a missing one is ErrNotFound.
func testRoundTrip(t *testing.T, e Engine) {
	cases := []struct {
		name string
		job  *store.Job
	}{
		{"full record", sampleJob("a")},
		{"minimal record", &store.Job{ID: "c", EndpointID: "ep", Status: store.InQueue, Input: json.RawMessage(`1`)}},
		{"string input and failure", &store.Job{ID: "d", EndpointID: "ep", Status: store.Failed, Input: json.RawMessage(`"x"`), Error: "boom", FinishedAt: 99}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, e, "")
			putJob(t, s, tc.job, time.Time{})
			for _, payloads := range []bool{false, true} {
				got, err := s.Job(bg, tc.job.ID, payloads)
				if err != nil {
					t.Fatalf("Job(%q, %v): %v", tc.job.ID, payloads, err)
				}
				if !jobsEqual(got, tc.job) {
					t.Errorf("Job(%q, %v) = %+v, want %+v", tc.job.ID, payloads, got, tc.job)
				}
			}
			if _, err := s.Job(bg, "missing", true); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Job(missing) err = %v, want ErrNotFound", err)
			}
		})
	}
}

// testPayloads: inputs and outputs of any size read back whole with
// payloads; without, they are in the record or named by a reference.
// Putting a record read without payloads keeps them.
func testPayloads(t *testing.T, e Engine) {
	cases := []struct {
		name    string
		in, out json.RawMessage
	}{
		{"small", json.RawMessage(`{"a":1}`), json.RawMessage(`2`)},
		{"big input", bigValue("i", 100<<10), json.RawMessage(`2`)},
		{"big output", json.RawMessage(`1`), bigValue("o", 100<<10)},
		{"both big", bigValue("i", 1<<20), bigValue("o", 2<<20)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, e, "")
			id := fmt.Sprintf("job%d", i)
			putJob(t, s, &store.Job{ID: id, EndpointID: "ep", Status: store.Completed, Input: tc.in, Output: tc.out}, time.Time{})
			rec, err := s.Job(bg, id, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, side := range []struct {
				what      string
				got, want json.RawMessage
				ref       string
			}{{"input", rec.Input, tc.in, rec.InputRef}, {"output", rec.Output, tc.out, rec.OutputRef}} {
				if side.ref == "" && !bytes.Equal(side.got, side.want) {
					t.Errorf("%s without payloads: %d bytes and no reference, want %d bytes", side.what, len(side.got), len(side.want))
				}
				if side.ref != "" && side.got != nil {
					t.Errorf("%s without payloads: both a reference and %d bytes", side.what, len(side.got))
				}
			}
			full, err := s.Job(bg, id, true)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(full.Input, tc.in) || !bytes.Equal(full.Output, tc.out) || full.InputRef != "" || full.OutputRef != "" {
				t.Errorf("Job(id, true): input %d bytes, output %d bytes, refs %q %q; want %d, %d, none", len(full.Input), len(full.Output), full.InputRef, full.OutputRef, len(tc.in), len(tc.out))
			}
			// The scheduler writes back what it read without payloads.
			rec.Status = store.Failed
			putJob(t, s, rec, time.Time{})
			again, err := s.Job(bg, id, true)
			if err != nil || again.Status != store.Failed || !bytes.Equal(again.Input, tc.in) || !bytes.Equal(again.Output, tc.out) {
				t.Errorf("after a put of the record read without payloads: %v, status %v, %d and %d bytes", err, again.Status, len(again.Input), len(again.Output))
			}
		})
	}
}

// testExpiry: a job or chunk record put with an expiry in the past is gone
// for every read; with one in the future or none, it is there.
func testExpiry(t *testing.T, e Engine) {
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
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, e, "")
			id := fmt.Sprintf("j%d", i)
			putJob(t, s, &store.Job{ID: id, EndpointID: "ep", Status: store.Completed}, tc.expires)
			commit(t, s, func(b store.Batch) {
				b.PutChunk(store.Chunk{JobID: id, Index: 0, Output: json.RawMessage(`1`)}, tc.expires)
			})
			_, err := s.Job(bg, id, true)
			if tc.live && err != nil {
				t.Errorf("Job: %v, want live", err)
			}
			if !tc.live && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Job err = %v, want ErrNotFound", err)
			}
			n := 0
			if err := s.ScanJobs(bg, func(*store.Job) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			want := map[bool]int{true: 1, false: 0}[tc.live]
			if n != want {
				t.Errorf("ScanJobs saw %d records, want %d", n, want)
			}
			cs, err := allChunks(s, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != want {
				t.Errorf("chunks: %d, want %d", len(cs), want)
			}
			if sp, err := s.ChunkSpanOf(bg, id); err != nil || sp.Next != uint64(want) {
				t.Errorf("ChunkSpanOf = %+v, %v; want %d chunks", sp, err, want)
			}
		})
	}
}

// testReopen: everything committed before a Close is there after opening
// the directory again, expiry included.
func testReopen(t *testing.T, e Engine) {
	durable(t, e)
	dir := t.TempDir()
	s := e.Open(t, dir)
	big := bigValue("y", 100<<10)
	jobs := []*store.Job{
		{ID: "big", EndpointID: "ep", Status: store.Completed, Seq: 2, Input: big, Output: big},
		{ID: "small", EndpointID: "ep", Status: store.InQueue, Seq: 1, Input: json.RawMessage(`{"a":1}`)},
	}
	ep := store.Endpoint{ID: "ep", Name: "n", WorkersMax: 2, Env: map[string]string{"K": "V"}}
	d := store.Delivery{JobID: "big", URL: "http://x/", Body: json.RawMessage(`{"id":"big"}`), Attempts: 1, NextAt: 5}
	w := store.WorkerRecord{ID: "w-1", Endpoint: "ep", Token: "tok", GPUs: []string{"GPU-1"}, StartedAt: 9, Generation: 2}
	c := store.Chunk{JobID: "small", Index: 3, Output: json.RawMessage(`"c3"`)}
	commit(t, s, func(b store.Batch) {
		b.PutChunk(c, time.Time{})
		must(t, b.PutJob(jobs[0], time.Time{}), b.PutJob(jobs[1], time.Now().Add(time.Hour)),
			b.PutJob(&store.Job{ID: "expiring", EndpointID: "ep", Status: store.Completed, Seq: 3}, time.Now().Add(1500*time.Millisecond)),
			b.PutEndpoint(&ep), b.PutDelivery(&d), b.PutWorker(&w))
	})
	must(t, s.Close())

	s2 := open(t, e, dir)
	for _, j := range jobs {
		if got, err := s2.Job(bg, j.ID, true); err != nil || !jobsEqual(got, j) {
			t.Errorf("%s after reopen: %v", j.ID, err)
		}
	}
	eps, err1 := s2.Endpoints(bg)
	ds, err2 := s2.Deliveries(bg)
	ws, err3 := s2.Workers(bg)
	cs, err4 := allChunks(s2, "small")
	must(t, err1, err2, err3, err4)
	for _, kind := range []struct {
		name      string
		got, want any
	}{
		{"endpoints", eps, []store.Endpoint{ep}},
		{"deliveries", ds, []store.Delivery{d}},
		{"workers", ws, []store.WorkerRecord{w}},
		{"chunks", cs, []store.Chunk{c}},
	} {
		if !sameJSON(kind.got, kind.want) {
			t.Errorf("%s after reopen: %+v, want %+v", kind.name, kind.got, kind.want)
		}
	}
	// The expiry survives the restart: the record goes at its time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s2.Job(bg, "expiring", false)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("expiring record after reopen, past its expiry: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testClosed: Close is idempotent; after it writes fail with ErrClosed,
// CommitAsync neither blocks nor panics, and Ping says closed.
func testClosed(t *testing.T, e Engine) {
	s := open(t, e, "")
	putJob(t, s, &store.Job{ID: "a", EndpointID: "ep", Status: store.InQueue}, time.Time{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Commit(bg, oneOpBatch(s)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-s.CommitLater(oneOpBatch(s)):
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("CommitLater after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CommitLater after Close never answered")
	}
	if err := s.Flush(bg); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	s.CommitAsync(oneOpBatch(s)) // must neither block nor panic
	if err := s.Ping(bg); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Ping after Close: %v, want ErrClosed", err)
	}
}

// testCloseLandsAsync: Close writes every asynchronous commit queued
// before it.
func testCloseLandsAsync(t *testing.T, e Engine) {
	durable(t, e)
	dir := t.TempDir()
	s := e.Open(t, dir)
	const n = 100
	for i := 0; i < n; i++ {
		b := s.NewBatch()
		if err := b.PutJob(&store.Job{ID: fmt.Sprintf("a%03d", i), EndpointID: "ep", Status: store.InQueue}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		s.CommitAsync(b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, e, dir)
	got := 0
	if err := s2.ScanJobs(bg, func(*store.Job) error { got++; return nil }); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("after Close and reopen %d of %d asynchronous writes are there", got, n)
	}
}

// testGroupCommit: concurrent commits all land, each whole.
func testGroupCommit(t *testing.T, e Engine) {
	s := open(t, e, "")
	const n = 200
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
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
			if err := b.PutJob(&store.Job{ID: id, EndpointID: "ep", Status: store.InQueue, Seq: uint64(i)}, time.Time{}); err != nil {
				errs <- err
				return
			}
			b.PutChunk(store.Chunk{JobID: id, Index: 0, Output: json.RawMessage(fmt.Sprint(i))}, time.Time{})
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
		j, err := s.Job(bg, id, true)
		if err != nil || j.Seq != uint64(i) {
			t.Errorf("%s: %+v, %v", id, j, err)
		}
		cs, err := allChunks(s, id)
		if err != nil || len(cs) != 1 || string(cs[0].Output) != fmt.Sprint(i) {
			t.Errorf("%s chunks: %+v, %v", id, cs, err)
		}
	}
}

// testCommitEmptyAndCancelled: an empty batch commits at once; a commit
// whose context has ended returns, landed or not.
func testCommitEmptyAndCancelled(t *testing.T, e Engine) {
	s := open(t, e, "")
	if err := s.Commit(bg, s.NewBatch()); err != nil {
		t.Errorf("empty Commit: %v", err)
	}
	s.CommitAsync(s.NewBatch())
	ctx, cancel := context.WithCancel(bg)
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

// testAsyncOrdering: asynchronous and durable commits land in the order
// they were queued.
func testAsyncOrdering(t *testing.T, e Engine) {
	cases := []struct {
		name string
		// steps run in order: a = async, s = sync; put, del, or a
		// barrier (a write of another record)
		steps    []string
		wantLive bool
	}{
		{"async put then sync delete", []string{"aput", "sdel"}, false},
		{"async delete then sync put", []string{"adel", "sput"}, true},
		{"sync put, async delete, sync read barrier", []string{"sput", "adel", "sbarrier"}, false},
		{"many async puts then sync delete", []string{"aput", "aput", "aput", "aput", "sdel"}, false},
		{"async put, async delete, async put, sync barrier", []string{"aput", "adel", "aput", "sbarrier"}, true},
		{"async put, flush", []string{"aput", "flush"}, true},
		{"async delete, async put, flush", []string{"adel", "aput", "flush"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, e, "")
			const id = "k"
			for _, st := range tc.steps {
				if st == "flush" {
					if err := s.Flush(bg); err != nil {
						t.Fatal(err)
					}
					continue
				}
				b := s.NewBatch()
				switch st[1:] {
				case "put":
					if err := b.PutJob(&store.Job{ID: id, EndpointID: "ep", Status: store.InQueue}, time.Time{}); err != nil {
						t.Fatal(err)
					}
				case "del":
					b.DeleteJob(id)
				case "barrier":
					b.DeleteJob("unrelated")
				}
				if st[0] == 'a' {
					s.CommitAsync(b)
				} else if err := s.Commit(bg, b); err != nil {
					t.Fatal(err)
				}
			}
			_, err := s.Job(bg, id, false)
			if tc.wantLive && err != nil {
				t.Errorf("Job: %v, want live", err)
			}
			if !tc.wantLive && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Job err = %v, want ErrNotFound (an async write overtook a later one)", err)
			}
		})
	}
}

// testCommitLater: its channel answers once the write is durable, and a
// commit queued after it lands after it.
func testCommitLater(t *testing.T, e Engine) {
	s := open(t, e, "")
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
	if err := b.PutJob(&store.Job{ID: "k", EndpointID: "ep", Status: store.InQueue}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	first := s.CommitLater(b)
	commit(t, s, func(b store.Batch) { b.DeleteJob("k") })
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CommitLater never answered")
	}
	if _, err := s.Job(bg, "k", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Job(k) err = %v, want ErrNotFound", err)
	}
	// Once acknowledged, the write is readable.
	b = s.NewBatch()
	if err := b.PutJob(&store.Job{ID: "m", EndpointID: "ep", Status: store.InQueue}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := <-s.CommitLater(b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job(bg, "m", false); err != nil {
		t.Errorf("acknowledged write not readable: %v", err)
	}
}

// testIdempotent: committing a batch's writes again leaves the state one
// commit left (a retry of a commit whose outcome is unknown).
func testIdempotent(t *testing.T, e Engine) {
	s := open(t, e, "")
	fill := func(b store.Batch) {
		if err := b.PutJob(&store.Job{ID: "j", EndpointID: "ep", Status: store.Completed, Seq: 4, Output: bigValue("r", 100<<10)}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutDelivery(&store.Delivery{JobID: "j", URL: "http://h/"}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutEndpoint(&store.Endpoint{ID: "ep", Name: "n"}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutWorker(&store.WorkerRecord{ID: "w", Endpoint: "ep"}); err != nil {
			t.Fatal(err)
		}
		b.DeleteJob("other")
		b.DeleteChunk("j", 9)
	}
	commit(t, s, fill)
	commit(t, s, fill)
	n := 0
	if err := s.ScanJobs(bg, func(j *store.Job) error {
		n++
		if j.ID != "j" || j.Seq != 4 {
			t.Errorf("job %+v", j)
		}
		return nil
	}); err != nil || n != 1 {
		t.Errorf("ScanJobs: %d records, %v; want 1", n, err)
	}
	if j, err := s.Job(bg, "j", true); err != nil || len(j.Output) != 100<<10 {
		t.Errorf("Job(j): %v", err)
	}
	ds, err1 := s.Deliveries(bg)
	eps, err2 := s.Endpoints(bg)
	ws, err3 := s.Workers(bg)
	if len(ds) != 1 || len(eps) != 1 || len(ws) != 1 || errors.Join(err1, err2, err3) != nil {
		t.Errorf("after the same batch twice: %d deliveries, %d endpoints, %d workers (%v)", len(ds), len(eps), len(ws), errors.Join(err1, err2, err3))
	}
}

// testChunksOrdering: a job's chunks read in index order, and no other
// job's chunks come with them, however the ids and indexes sort as text.
func testChunksOrdering(t *testing.T, e Engine) {
	s := open(t, e, "")
	// Indices crossing byte boundaries: a string-sorted key would put 256
	// before 2 and 10 before 9.
	idx := []uint64{300, 0, 1, 2, 9, 10, 255, 256, 65536, 1 << 40}
	commit(t, s, func(b store.Batch) {
		for _, i := range idx {
			b.PutChunk(store.Chunk{JobID: "job", Index: i, Output: json.RawMessage(fmt.Sprint(i))}, time.Time{})
		}
		// Other jobs sharing a prefix must not leak in.
		b.PutChunk(store.Chunk{JobID: "job2", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
		b.PutChunk(store.Chunk{JobID: "jo", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
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
	commit(t, s, func(b store.Batch) {
		b.DeleteChunk("job", 0)
		b.DeleteChunk("job", 256)
	})
	cs, _ = allChunks(s, "job")
	if got := indexes(cs); fmt.Sprint(got) != fmt.Sprint([]uint64{1, 2, 9, 10, 255, 300, 65536, 1 << 40}) {
		t.Errorf("after deletes: %v", got)
	}
	if cs, _ := allChunks(s, "none"); len(cs) != 0 {
		t.Errorf("chunks of none = %+v", cs)
	}
}

// testChunkPage: pages stop at the byte budget (at least one chunk each),
// at the index bound, and never leak another job's chunks.
func testChunkPage(t *testing.T, e Engine) {
	for _, unit := range []int{100, 80000} {
		t.Run(fmt.Sprintf("chunks of %d bytes", unit), func(t *testing.T) {
			s := open(t, e, "")
			val := bigValue("x", unit)
			commit(t, s, func(b store.Batch) {
				for i := 0; i < 10; i++ {
					b.PutChunk(store.Chunk{JobID: "job", Index: uint64(i), Output: val}, time.Time{})
				}
				b.PutChunk(store.Chunk{JobID: "job2", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
				b.PutChunk(store.Chunk{JobID: "jo", Index: 0, Output: json.RawMessage(`"other"`)}, time.Time{})
				// A chunk bigger than any budget below.
				b.PutChunk(store.Chunk{JobID: "big", Index: 0, Output: bigValue("y", 20*unit+2)}, time.Time{})
				b.PutChunk(store.Chunk{JobID: "big", Index: 1, Output: json.RawMessage(`1`)}, time.Time{})
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
				page, more, err := s.ChunkPage(bg, tc.job, tc.from, tc.to, tc.budget)
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
					if tc.job == "job" && !bytes.Equal(c.Output, val) {
						t.Errorf("%s: chunk %d holds %d bytes, want %d", tc.name, c.Index, len(c.Output), len(val))
					}
				}
			}
		})
	}
}

// testChunkSpans: one scan finds each job's first and next index and its
// bytes, before and after deletes and across a reopen (recovery).
func testChunkSpans(t *testing.T, e Engine) {
	dir := t.TempDir()
	s := open(t, e, dir)
	commit(t, s, func(b store.Batch) {
		for i := 3; i < 8; i++ {
			b.PutChunk(store.Chunk{JobID: "a", Index: uint64(i), Output: json.RawMessage(`"abcd"`)}, time.Time{}) // 6 bytes
		}
		b.PutChunk(store.Chunk{JobID: "a-b", Index: 300, Output: json.RawMessage(`1`)}, time.Time{})
		b.PutChunk(store.Chunk{JobID: "b", Index: 0, Output: bigValue("z", 100<<10+2)}, time.Time{})
	})
	commit(t, s, func(b store.Batch) { b.DeleteChunk("a", 3) })
	check := func(s store.Store) {
		t.Helper()
		got := map[string]store.ChunkSpan{}
		if err := s.ScanChunkSpans(bg, func(id string, sp store.ChunkSpan) {
			if _, dup := got[id]; dup {
				t.Errorf("job %s reported twice", id)
			}
			got[id] = sp
		}); err != nil {
			t.Fatal(err)
		}
		if sp := got["a"]; sp != (store.ChunkSpan{First: 4, Next: 8, Bytes: 24}) {
			t.Errorf("a: %+v", sp)
		}
		if sp := got["a-b"]; sp != (store.ChunkSpan{First: 300, Next: 301, Bytes: 1}) {
			t.Errorf("a-b: %+v", sp)
		}
		if sp := got["b"]; sp != (store.ChunkSpan{First: 0, Next: 1, Bytes: 100<<10 + 2}) {
			t.Errorf("b: %+v", sp)
		}
		if len(got) != 3 {
			t.Errorf("spans %+v", got)
		}
		if sp, err := s.ChunkSpanOf(bg, "a"); err != nil || sp != got["a"] {
			t.Errorf("ChunkSpanOf(a) = %+v, %v", sp, err)
		}
		if sp, err := s.ChunkSpanOf(bg, "none"); err != nil || sp != (store.ChunkSpan{}) {
			t.Errorf("ChunkSpanOf(none) = %+v, %v", sp, err)
		}
	}
	check(s)
	if e.Volatile {
		return
	}
	s.Close()
	check(open(t, e, dir))
}

// testReleaseChunks: releasing delivered chunks leaves the others whole.
func testReleaseChunks(t *testing.T, e Engine) {
	s := open(t, e, "")
	vals := []json.RawMessage{bigValue("a", 200<<10), json.RawMessage(`"b"`), bigValue("c", 70<<10), json.RawMessage(`4`)}
	commit(t, s, func(b store.Batch) {
		for i, v := range vals {
			b.PutChunk(store.Chunk{JobID: "job", Index: uint64(i), Output: v}, time.Time{})
		}
	})
	page, more, err := s.ChunkPage(bg, "job", 0, 3, math.MaxInt)
	if err != nil || more || len(page) != 3 {
		t.Fatalf("page: %d chunks, more %v, %v", len(page), more, err)
	}
	commit(t, s, func(b store.Batch) {
		b.DeleteChunk("job", 0)
		b.DeleteChunk("job", 2)
	})
	s.ReleaseChunks("job", []store.Chunk{page[0], page[2]})
	rest, err := allChunks(s, "job")
	if err != nil || fmt.Sprint(indexes(rest)) != "[1 3]" || string(rest[0].Output) != `"b"` || string(rest[1].Output) != `4` {
		t.Errorf("after the release: %v, %v", indexes(rest), err)
	}
	commit(t, s, func(b store.Batch) {
		b.PutChunk(store.Chunk{JobID: "job", Index: 4, Output: vals[0]}, time.Time{})
	})
	if rest, err := allChunks(s, "job"); err != nil || len(rest) != 3 || !bytes.Equal(rest[2].Output, vals[0]) {
		t.Errorf("a chunk put after the release: %d chunks, %v", len(rest), err)
	}
}

// testDeliveries: a job has at most one pending delivery; a second put
// replaces it.
func testDeliveries(t *testing.T, e Engine) {
	s := open(t, e, "")
	commit(t, s, func(b store.Batch) {
		for i, id := range []string{"j1", "j2", "j3"} {
			if err := b.PutDelivery(&store.Delivery{JobID: id, URL: "http://h/" + id, Body: json.RawMessage(`{"id":"` + id + `"}`), NextAt: int64(i)}); err != nil {
				t.Fatal(err)
			}
		}
	})
	commit(t, s, func(b store.Batch) {
		if err := b.PutDelivery(&store.Delivery{JobID: "j2", URL: "http://h/j2", Body: json.RawMessage(`{"id":"j2","v":2}`), Attempts: 2, NextAt: 42}); err != nil {
			t.Fatal(err)
		}
		b.DeleteDelivery("j3")
	})
	ds, err := s.Deliveries(bg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.Delivery{}
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

// testEndpoints: endpoint definitions put, replaced and deleted.
func testEndpoints(t *testing.T, e Engine) {
	s := open(t, e, "")
	commit(t, s, func(b store.Batch) {
		for _, id := range []string{"a", "b"} {
			if err := b.PutEndpoint(&store.Endpoint{ID: id, Name: "n" + id}); err != nil {
				t.Fatal(err)
			}
		}
	})
	commit(t, s, func(b store.Batch) {
		b.DeleteEndpoint("a")
		if err := b.PutEndpoint(&store.Endpoint{ID: "b", Name: "nb", Generation: 2}); err != nil {
			t.Fatal(err)
		}
	})
	eps, err := s.Endpoints(bg)
	if err != nil || len(eps) != 1 || eps[0].ID != "b" || eps[0].Name != "nb" || eps[0].Generation != 2 {
		t.Errorf("Endpoints = %+v, %v", eps, err)
	}
}

// testWorkers: worker records put and deleted.
func testWorkers(t *testing.T, e Engine) {
	s := open(t, e, "")
	commit(t, s, func(b store.Batch) {
		for _, id := range []string{"w-1", "w-2", "w-3"} {
			if err := b.PutWorker(&store.WorkerRecord{ID: id, Endpoint: "ep", Token: "t" + id}); err != nil {
				t.Fatal(err)
			}
		}
	})
	commit(t, s, func(b store.Batch) { b.DeleteWorker("w-2") })
	ws, err := s.Workers(bg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID+"/"+w.Token)
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[w-1/tw-1 w-3/tw-3]" {
		t.Errorf("Workers = %v", ids)
	}
}

// testScanJobs: the recovery scan sees every live job once, whatever
// deletes, expiries, overwrites and other records there are.
func testScanJobs(t *testing.T, e Engine) {
	s := open(t, e, "")
	const n = 500
	big := bigValue("q", 100<<10)
	for start := 0; start < n; start += 100 {
		commit(t, s, func(b store.Batch) {
			for i := start; i < start+100; i++ {
				j := &store.Job{ID: fmt.Sprintf("job-%04d", i), EndpointID: "ep", Status: store.InQueue, Seq: uint64(i)}
				if i%70 == 0 {
					j.Input = big
				}
				exp := time.Time{}
				if i%50 == 49 {
					exp = time.Now().Add(-time.Minute)
				}
				if err := b.PutJob(j, exp); err != nil {
					t.Fatal(err)
				}
				b.PutChunk(store.Chunk{JobID: j.ID, Index: 0, Output: json.RawMessage(`0`)}, time.Time{})
			}
		})
	}
	commit(t, s, func(b store.Batch) {
		b.DeleteJob("job-0003")
		b.DeleteJob("job-0004")
		if err := b.PutEndpoint(&store.Endpoint{ID: "ep"}); err != nil {
			t.Fatal(err)
		}
		if err := b.PutDelivery(&store.Delivery{JobID: "job-0001", URL: "http://x"}); err != nil {
			t.Fatal(err)
		}
	})
	// Overwrite one: still one record.
	putJob(t, s, &store.Job{ID: "job-0010", EndpointID: "ep", Status: store.Completed, Seq: 10}, time.Time{})
	putJob(t, s, &store.Job{ID: "job-0010", EndpointID: "ep", Status: store.Failed, Seq: 10}, time.Time{})

	seen := map[string]int{}
	err := s.ScanJobs(bg, func(j *store.Job) error {
		seen[j.ID]++
		if j.ID == "job-0010" && j.Status != store.Failed {
			t.Errorf("job-0010 is %s, want the last write (FAILED)", j.Status)
		}
		if j.Seq%70 == 0 && j.InputRef == "" && !bytes.Equal(j.Input, big) {
			t.Errorf("%s: neither its input nor a reference to it", j.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("job-%04d", i)
		if i != 3 && i != 4 && i%50 != 49 {
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
	if err := s.ScanJobs(bg, func(*store.Job) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ScanJobs with failing fn: err %v after %d calls", err, calls)
	}
}

// testPing: an open store answers.
func testPing(t *testing.T, e Engine) {
	s := open(t, e, "")
	if err := s.Ping(bg); err != nil {
		t.Fatalf("Ping of an open store: %v", err)
	}
}

// testSpace: a write the disk has no room for is refused with a
// NoSpaceError naming the bytes, before any record of it is written; the
// store serves reads meanwhile and takes writes again once there is room.
func testSpace(t *testing.T, e Engine) {
	if e.Starve == nil {
		t.Skip("the engine cannot be starved of space")
	}
	s := open(t, e, "")
	commit(t, s, func(b store.Batch) {
		if err := b.PutEndpoint(&store.Endpoint{ID: "e1"}); err != nil {
			t.Fatal(err)
		}
	})
	restore := e.Starve(t, s)
	b := s.NewBatch()
	if err := b.PutEndpoint(&store.Endpoint{ID: "e2"}); err != nil {
		t.Fatal(err)
	}
	if err := b.PutJob(&store.Job{ID: "j", EndpointID: "e2", Status: store.InQueue}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	err := s.Commit(bg, b)
	var ns *store.NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, store.ErrNoSpace) || ns.Needed <= ns.Free {
		t.Fatalf("got %v, want a NoSpaceError with needed > free", err)
	}
	if eps, err := s.Endpoints(bg); err != nil || len(eps) != 1 {
		t.Fatalf("reads on a full disk: %v %v", eps, err)
	}
	if _, err := s.Job(bg, "j", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused batch's job: %v, want ErrNotFound", err)
	}
	restore()
	if err := s.Commit(bg, b); err != nil {
		t.Fatalf("write once there is room: %v", err)
	}
	if eps, err := s.Endpoints(bg); err != nil || len(eps) != 2 {
		t.Errorf("after the write: %v %v", eps, err)
	}
}
