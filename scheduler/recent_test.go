package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

func TestRecentJobsRing(t *testing.T) {
	var r recentJobs
	if got := r.newest(10); len(got) != 0 {
		t.Errorf("empty ring: %v", got)
	}
	for i := range limits.RecentJobs + 50 {
		r.add(fmt.Sprint(i))
	}
	got := r.newest(limits.RecentJobs + 100)
	if len(got) != limits.RecentJobs || got[0] != fmt.Sprint(limits.RecentJobs+49) || got[len(got)-1] != "50" {
		t.Errorf("after %d adds: %d ids, %s .. %s", limits.RecentJobs+50, len(got), got[0], got[len(got)-1])
	}
	if got := r.newest(3); strings.Join(got, ",") != "249,248,247" {
		t.Errorf("newest 3: %v", got)
	}
}

// TestRecentJobsAndHistory: jobs run through the scheduler show in the
// endpoint's recent jobs, newest first, with their input, output, error
// and timings (payloads past the preview cut and flagged), and in its
// history; both go away with the endpoint.
func TestRecentJobsAndHistory(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	big := `{"blob":"` + strings.Repeat("é", limits.RecentJobPreview) + `"}`
	ids := []string{
		h.submit(spec.Submission{Input: json.RawMessage(`{"n":1}`)}),
		h.submit(spec.Submission{Input: json.RawMessage(big)}),
		h.submit(spec.Submission{Input: json.RawMessage(`{"n":3}`)}),
	}
	h.take(w)
	h.done(w, ids[0], Result{Output: json.RawMessage(`{"ok":1}`)})
	h.take(w)
	h.done(w, ids[1], Result{Output: json.RawMessage(big)})
	h.take(w)
	h.done(w, ids[2], Result{Error: "boom", HasError: true})
	queued := h.submit(spec.Submission{Input: json.RawMessage(`{"n":4}`)})

	got, err := h.s.RecentJobs(h.ctx, h.ep, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].ID != queued || got[1].ID != ids[2] || got[2].ID != ids[1] || got[3].ID != ids[0] {
		t.Fatalf("recent jobs %+v, want %s then %v reversed", got, queued, ids)
	}
	if j := got[0]; j.Status != store.InQueue || string(j.Input) != `{"n":4}` || j.StartedAt != 0 || j.HasDelay || j.CreatedAt == 0 {
		t.Errorf("queued job: %+v", j)
	}
	if j := got[1]; j.Status != store.Failed || j.Error != "boom" || j.Output != nil || !j.HasExecution || j.CompletedAt == 0 {
		t.Errorf("failed job: %+v", j)
	}
	if j := got[2]; !j.InputTruncated || !j.OutputTruncated {
		t.Errorf("big job: input %d bytes truncated %v, output truncated %v", len(j.Input), j.InputTruncated, j.OutputTruncated)
	} else {
		var s string
		// The first RecentJobPreview bytes, cut before a split character.
		if err := json.Unmarshal(j.Input, &s); err != nil || !strings.HasPrefix(big, s) || len(s) < limits.RecentJobPreview-2 || len(s) > limits.RecentJobPreview {
			t.Errorf("cut input is not a JSON string prefix of the input: %v %.40q", err, j.Input)
		}
	}
	if j := got[3]; j.Status != store.Completed || string(j.Input) != `{"n":1}` || string(j.Output) != `{"ok":1}` || !j.HasDelay || j.WorkerID != w.id || j.StartedAt < j.CreatedAt || j.CompletedAt < j.StartedAt {
		t.Errorf("completed job: %+v", j)
	}
	if got, _ := h.s.RecentJobs(h.ctx, h.ep, 2); len(got) != 2 || got[1].ID != ids[2] {
		t.Errorf("limit 2: %+v", got)
	}

	pts, err := h.s.History(h.ep)
	if err != nil || len(pts) == 0 {
		t.Fatalf("history: %v %v", pts, err)
	}
	var sub, comp, failed, cold uint32
	var delays int
	for _, p := range pts {
		sub, comp, failed, cold = sub+p.Submitted, comp+p.Completed, failed+p.Failed, cold+p.ColdStarts
		if p.DelayP50Ms != nil {
			delays++
		}
	}
	if sub != 4 || comp != 2 || failed != 1 || cold != 1 || delays == 0 {
		t.Errorf("history sums: submitted %d completed %d failed %d coldStarts %d, %d buckets with delay; %+v", sub, comp, failed, cold, delays, pts)
	}
	if last := pts[len(pts)-1]; last.QueueDepth != 1 || last.Workers != 1 {
		t.Errorf("current bucket gauges %+v, want queue 1, workers 1", last)
	}

	if _, err := h.s.Cancel(h.ctx, h.ep, queued); err != nil {
		t.Fatal(err)
	}
	if err := h.s.DeleteEndpoint(h.ctx, h.ep); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.History(h.ep); !errors.Is(err, ErrNotFound) {
		t.Errorf("history of a deleted endpoint: %v", err)
	}
	if _, err := h.s.RecentJobs(h.ctx, h.ep, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("recent jobs of a deleted endpoint: %v", err)
	}
}

// TestRecentJobsRecovered: after a restart an endpoint's recent jobs are
// its newest limits.RecentJobs jobs in the store, live and finished, in
// arrival order, whatever order the scan meets them in.
func TestRecentJobsRecovered(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, newFakeRuntime())
	cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = dir, false, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	name, cmd, zero := "rec", []string{"fake"}, 0
	e, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const n = 2*limits.RecentJobs + 50 // past the recovery's trim point
	b := st.NewBatch()
	for seq := 1; seq <= n; seq++ {
		// Ids sort opposite to arrival, as the scan meets them.
		r := &store.Job{ID: fmt.Sprintf("j-%05d", n-seq), EndpointID: e.ID, Status: store.Completed, Seq: uint64(seq),
			Input: json.RawMessage(fmt.Sprint(seq)), TTLMs: runpod.DefaultTTLMs, SubmittedAt: now.UnixMilli(), FinishedAt: now.UnixMilli()}
		if seq%7 == 0 {
			r.Status, r.FinishedAt = store.InQueue, 0
		}
		if err := b.PutJob(r, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.RecentJobs(context.Background(), e.ID, limits.RecentJobs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != limits.RecentJobs {
		t.Fatalf("%d recent jobs after recovery, want %d", len(got), limits.RecentJobs)
	}
	for i, j := range got {
		seq := n - i
		if string(j.Input) != fmt.Sprint(seq) {
			t.Fatalf("recent job %d: %s input %s, want the job of seq %d", i, j.ID, j.Input, seq)
		}
		if want := store.Completed; seq%7 == 0 {
			if j.Status != store.InQueue {
				t.Errorf("%s: %s, want IN_QUEUE", j.ID, j.Status)
			}
		} else if j.Status != want {
			t.Errorf("%s: %s, want %s", j.ID, j.Status, want)
		}
	}
}
