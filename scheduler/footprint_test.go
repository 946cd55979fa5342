package scheduler

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// maxQueuedJobBytes bounds the heap the scheduler keeps per queued job: the
// job's lifecycle fields, its id and its entries in the jobs map, the ready
// queue and the TTL heap. Measured: about 300 bytes (Go 1.26, amd64). At the
// bound, 100,000 queued jobs are 35 MB of live heap.
const maxQueuedJobBytes = 350

// TestQueuedJobFootprint measures the live heap that 20,000 queued jobs add
// (after a full GC) and bounds it per job. Payloads, webhooks and results
// stay in the store; a field or index added to every queued job shows up
// here.
func TestQueuedJobFootprint(t *testing.T) {
	h := newHarness(t, nil)
	s := h.s
	s.mu.Lock()
	ep := s.endpoints[h.ep]
	s.mu.Unlock()
	input := json.RawMessage(`{"prompt":"a queued job of modest size, as a client would send it"}`)
	const n = 20000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	now := time.Now().UnixMilli()
	for i := 0; i < n; i++ {
		// The record as Submit builds it; only what newJob keeps of it
		// stays live.
		s.mu.Lock()
		s.seq++
		rec := store.Job{ID: newJobID(false), EndpointID: ep.def.ID, Status: store.InQueue, Seq: s.seq, Input: input,
			ExecutionTimeoutMs: ep.def.ExecutionTimeoutMs, TTLMs: runpod.DefaultTTLMs, SubmittedAt: now}
		s.admitLocked(ep, newJob(&rec))
		s.mu.Unlock()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	s.mu.Lock()
	queued := ep.inQueue
	s.mu.Unlock()
	if queued != n {
		t.Fatalf("%d jobs queued, want %d", queued, n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of live heap per queued job (%d jobs)", per, n)
	if per > maxQueuedJobBytes {
		t.Errorf("a queued job holds %d bytes of heap, more than the %d allowed: keep payloads and per-run state out of the job until it is taken", per, maxQueuedJobBytes)
	}
}

// TestQueuedJobHoldsNoRecord: a job queued by Submit, or rebuilt by recovery
// after a restart, keeps no copy of its stored record and shares its
// endpoint's id string instead of holding one per job.
func TestQueuedJobHoldsNoRecord(t *testing.T) {
	cfg := testConfig(t, newFakeRuntime())
	cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = t.TempDir(), false, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name, cmd, zero, one := "footprint", []string{"fake"}, 0, 1
	e, err := s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 50; i++ {
		// A copy, as a request path gives it.
		v, err := s.Submit(ctx, strings.Clone(e.ID), spec.Submission{Input: json.RawMessage(`{"n":1}`), Webhook: "http://127.0.0.1:1/hook"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	check := func(when string, s *Scheduler) {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		ep := s.endpoints[e.ID]
		for _, id := range ids {
			j := s.jobs[id]
			switch {
			case j == nil:
				t.Fatalf("%s: job %s not live", when, id)
			case !j.queued:
				t.Errorf("%s: job %s not queued", when, id)
			case j.unsaved != nil || j.runState != nil:
				t.Errorf("%s: queued job %s holds its record (unsaved %v, runState %v)", when, id, j.unsaved != nil, j.runState != nil)
			case unsafe.StringData(j.rec.EndpointID) != unsafe.StringData(ep.def.ID):
				t.Errorf("%s: job %s holds its own copy of the endpoint id", when, id)
			}
		}
	}
	check("after Submit", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("after recovery", s)
}

// TestJobIDsTimeOrdered: job ids sort in the order they were made, so new
// job records land at the end of the store's key space (see newJobID).
func TestJobIDsTimeOrdered(t *testing.T) {
	for _, sync := range []bool{false, true} {
		prev := newJobID(sync)
		for i := 0; i < 10000; i++ {
			id := newJobID(sync)
			if id <= prev {
				t.Fatalf("sync=%v: id %s made after %s sorts before it", sync, id, prev)
			}
			if want := 36 + len("-e1"); sync && len(id) != len("sync-")+want || !sync && len(id) != want {
				t.Fatalf("sync=%v: id %q is not a UUID with a region tag", sync, id)
			}
			prev = id
		}
	}
}
