package scheduler

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// TestAdoptAfterCrash: a worker that outlived the daemon is taken back with
// its credential and GPUs; the job it was running stays with it and its
// result is accepted; records of workers not taken back are dropped.
func TestAdoptAfterCrash(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, newFakeRuntime())
	cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = dir, false, 1
	cfg.AllocateGPUs, cfg.GPUs = true, mockGPUs()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	name, cmd, zero, one := "adopt", []string{"fake"}, 0, 1
	e, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, GPUCount: &one})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What a daemon killed mid-job leaves behind.
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b := st.NewBatch()
	job := &store.Job{ID: "job-1", EndpointID: e.ID, Status: store.InProgress, Seq: 1, Input: json.RawMessage(`{}`),
		ExecutionTimeoutMs: 600000, TTLMs: runpod.DefaultTTLMs, SubmittedAt: now.UnixMilli(), StartedAt: now.UnixMilli(), Attempts: 1, WorkerID: "w-alive"}
	if err := b.PutJob(job, job.Deadline()); err != nil {
		t.Fatal(err)
	}
	for _, w := range []store.WorkerRecord{
		{ID: "w-alive", Endpoint: e.ID, Token: "tok-alive", GPUs: []string{"GPU-3"}, StartedAt: now.UnixMilli()},
		{ID: "w-gone", Endpoint: e.ID, Token: "tok-gone", StartedAt: now.UnixMilli()},
	} {
		if err := b.PutWorker(&w); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	st.Close()

	alive := &fakeWorker{done: make(chan struct{}), env: map[string]string{}}
	cfg.Runtime = newFakeRuntime()
	cfg.Adopt = func(r store.WorkerRecord) (oci.Worker, error) {
		if r.ID == "w-alive" {
			return alive, nil
		}
		return nil, nil // its container is gone
	}
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.AuthWorker(e.ID, "w-alive", "tok-alive"); err != nil {
		t.Fatalf("the taken-back worker's token: %v", err)
	}
	if err := s2.AuthWorker(e.ID, "w-gone", "tok-gone"); err == nil {
		t.Fatal("a worker that was not taken back still authenticates")
	}
	v, err := s2.Status(e.ID, "job-1")
	if err != nil || v.Status != store.InProgress || v.WorkerID != "w-alive" {
		t.Fatalf("job after restart: %+v, %v; want IN_PROGRESS on w-alive", v, err)
	}
	s2.mu.Lock()
	owner := s2.gpuOwner["GPU-3"]
	s2.mu.Unlock()
	if owner != "w-alive" {
		t.Errorf("GPU-3 owner after restart = %q, want w-alive", owner)
	}
	if err := s2.Done(context.Background(), e.ID, "w-alive", "job-1", Result{Output: json.RawMessage(`"ok"`)}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s2.Status(e.ID, "job-1"); v.Status != store.Completed || string(v.Output) != `"ok"` {
		t.Fatalf("after the taken-back worker's result: %+v", v)
	}
	if err := s2.store.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, err := s2.store.Workers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ID == "w-gone" {
			t.Errorf("the record of a worker not taken back was kept")
		}
	}
}
