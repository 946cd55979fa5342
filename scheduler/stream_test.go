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

// chunkOf is a JSON string chunk of exactly n bytes, tagged with i.
func chunkOf(i, n int) []byte {
	tag := fmt.Sprintf(`"%d:`, i)
	return []byte(tag + strings.Repeat("x", n-len(tag)-1) + `"`)
}

func (h *harness) stream(id string) StreamView {
	h.t.Helper()
	v, err := h.s.Stream(h.ctx, h.ep, id, 10*time.Millisecond)
	if err != nil {
		h.t.Fatalf("Stream(%s): %v", id, err)
	}
	return v
}

func (h *harness) addChunks(w *fakeWorker, id string, from, n, size int) {
	h.t.Helper()
	for i := from; i < from+n; i++ {
		if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, chunkOf(i, size)); err != nil {
			h.t.Fatalf("AddChunk %d: %v", i, err)
		}
	}
}

func (h *harness) rejected() map[string]int64 {
	h.t.Helper()
	st, err := h.s.Stats(h.ep)
	if err != nil {
		h.t.Fatal(err)
	}
	return st[0].StreamChunksRejected
}

// tags lists the chunks' tags (the i of chunkOf) in order.
func tags(v StreamView) []int {
	out := []int{}
	for _, c := range v.Stream {
		var i int
		fmt.Sscanf(string(c.Output), `"%d:`, &i)
		out = append(out, i)
	}
	return out
}

// TestStreamLimit: unread bytes are capped per job; reading frees room; the
// chunk past the cap is refused, the job fails with the reason through the
// normal terminal path, the worker is told to stop it, and the chunks
// accepted before stay readable.
func TestStreamLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxUnreadStream = 1000 })
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)

	h.addChunks(w, id, 0, 3, 300) // 900 unread
	if v := h.stream(id); fmt.Sprint(tags(v)) != "[0 1 2]" || v.Status != store.InProgress {
		t.Fatalf("first read: %v %s", tags(v), v.Status)
	}
	// Read chunks no longer count: three more fit.
	h.addChunks(w, id, 3, 3, 300)
	err := h.s.AddChunk(h.ctx, h.ep, w.id, id, chunkOf(6, 200))
	var sl *StreamLimitError
	if !errors.As(err, &sl) {
		t.Fatalf("chunk past the cap: %v, want *StreamLimitError", err)
	}
	if sl.Limit != 1000 || sl.Unread != 900 || sl.Chunk != 200 || !strings.Contains(err.Error(), "1000-byte unread limit") {
		t.Errorf("refusal %+v: %v", sl, err)
	}
	v := h.status(id)
	if v.Status != store.Failed || !strings.Contains(v.Error, "stream output exceeded the 1000-byte unread limit") || !strings.Contains(v.Error, "not reading /stream") {
		t.Errorf("job after the refusal: %+v", v)
	}
	ids, err := h.s.StopSignals(h.ctx, h.ep, w.id, 10*time.Millisecond)
	if err != nil || fmt.Sprint(ids) != fmt.Sprint([]string{id}) {
		t.Errorf("stop signals for the worker: %v %v, want [%s]", ids, err, id)
	}
	st, _ := h.s.Stats(h.ep)
	if st[0].Finished["FAILED"] != 1 {
		t.Errorf("finished counters %v: the failure went around the terminal path", st[0].Finished)
	}
	// The worker goes on streaming (the SDK logs a 4xx and goes on): late.
	if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, chunkOf(7, 10)); !errors.Is(err, ErrJobEnded) || !strings.Contains(err.Error(), "already FAILED") {
		t.Errorf("chunk after the failure: %v", err)
	}
	if got := h.rejected(); got["limit"] != 1 || got["late"] != 1 {
		t.Errorf("rejected counters %v, want limit 1, late 1", got)
	}
	// What was accepted is still handed out, then the terminal status.
	if v := h.stream(id); fmt.Sprint(tags(v)) != "[3 4 5]" || v.Status != store.Failed {
		t.Errorf("read after the failure: %v %s", tags(v), v.Status)
	}
	if v := h.stream(id); len(v.Stream) != 0 || v.Status != store.Failed {
		t.Errorf("read after everything: %v %s", tags(v), v.Status)
	}
}

// TestStreamLimitDefault: the cap defaults to limits.MaxUnreadStream and
// follows the tunables.
func TestStreamLimitDefault(t *testing.T) {
	h := newHarness(t, nil)
	if got := h.s.tun().MaxUnreadStream; got != limits.MaxUnreadStream {
		t.Fatalf("default cap %d, want %d", got, limits.MaxUnreadStream)
	}
	h.s.SetTunables(Tunables{MaxUnreadStream: 500})
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	h.addChunks(w, id, 0, 1, 500)
	var sl *StreamLimitError
	if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, []byte(`1`)); !errors.As(err, &sl) || sl.Limit != 500 {
		t.Fatalf("past a reloaded cap of 500: %v", err)
	}
}

// TestStreamPages: /stream hands out at most limits.StreamPage bytes per
// answer (at least one chunk), oldest first. A terminal job with pages left
// answers IN_PROGRESS until its last page, so that clients that stop at the
// first terminal answer (RunPod's JS and Go SDKs) read everything.
func TestStreamPages(t *testing.T) {
	const size = 300 << 10 // three chunks fit a 1 MiB page, four do not
	for _, tc := range []struct {
		name   string
		finish func(h *harness, w *fakeWorker, id string)
		end    store.Status
	}{
		{"running", func(*harness, *fakeWorker, string) {}, store.InProgress},
		{"completed", func(h *harness, w *fakeWorker, id string) { h.done(w, id, Result{Output: json.RawMessage(`[]`)}) }, store.Completed},
		{"failed", func(h *harness, w *fakeWorker, id string) {
			h.done(w, id, Result{HasError: true, Error: "boom"})
		}, store.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			w := h.worker()
			id := h.submit(spec.Submission{})
			h.take(w)
			h.addChunks(w, id, 0, 8, size)
			// One chunk bigger than a page goes alone, even with room left
			// for the next.
			if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, chunkOf(8, limits.StreamPage+size)); err != nil {
				t.Fatal(err)
			}
			h.addChunks(w, id, 9, 1, 10)
			tc.finish(h, w, id)
			var got []string
			for i := 0; i < 10; i++ {
				v := h.stream(id)
				bytes := 0
				for _, c := range v.Stream {
					bytes += len(c.Output)
				}
				if len(v.Stream) > 1 && bytes > limits.StreamPage {
					t.Errorf("page %d: %d bytes in %d chunks, over the %d-byte page", i, bytes, len(v.Stream), limits.StreamPage)
				}
				got = append(got, fmt.Sprintf("%v %s", tags(v), v.Status))
				if len(v.Stream) == 0 {
					break
				}
			}
			mid := store.InProgress
			want := []string{
				fmt.Sprintf("[0 1 2] %s", mid), fmt.Sprintf("[3 4 5] %s", mid), fmt.Sprintf("[6 7] %s", mid),
				fmt.Sprintf("[8] %s", mid), fmt.Sprintf("[9] %s", tc.end), fmt.Sprintf("[] %s", tc.end),
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("pages:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestLateChunks: chunks for a job that is no longer running are refused
// with ErrJobEnded (409), not stored, and counted.
func TestLateChunks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxAttempts = 5 })
	w := h.worker()
	other := h.createEndpoint("other", 0, 1)

	completed := h.submit(spec.Submission{})
	h.take(w)
	h.done(w, completed, Result{Output: json.RawMessage(`1`)})

	cancelled := h.submit(spec.Submission{})
	h.take(w)
	if _, err := h.s.Cancel(h.ctx, h.ep, cancelled); err != nil {
		t.Fatal(err)
	}

	// Taken back from w (its pings stopped listing it): w no longer holds it.
	requeued := h.submit(spec.Submission{})
	h.take(w)
	h.s.mu.Lock()
	h.s.requeueLocked(h.s.jobs[requeued], "test", false)
	h.s.mu.Unlock()

	theirs, err := h.s.Submit(h.ctx, other, spec.Submission{Input: json.RawMessage(`1`)})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, job string
		want      error
		msg       string
	}{
		{"completed", completed, ErrJobEnded, "already COMPLETED; the chunk was not stored"},
		{"cancelled", cancelled, ErrJobEnded, "already CANCELLED"},
		{"taken back", requeued, ErrJobEnded, "no longer holds job"},
		{"unknown or expired", "no-such-job", ErrJobEnded, "has ended"},
		{"another endpoint's", theirs.ID, ErrForbidden, "not on endpoint"},
	} {
		err := h.s.AddChunk(h.ctx, h.ep, w.id, tc.job, []byte(`"late"`))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.msg)
		}
	}
	if got := h.rejected(); got["late"] != 4 || got["limit"] != 0 {
		t.Errorf("rejected counters %v, want late 4", got)
	}
	for _, id := range []string{completed, cancelled, requeued} {
		if sp, err := h.s.store.ChunkSpanOf(context.Background(), id); err != nil || sp.Next != 0 {
			t.Errorf("%s: a refused chunk was stored: %+v %v", id, sp, err)
		}
	}
}

// TestStreamRecovery: after a crash the unread chunks on disk are found
// again by one scan: handed out in order, counted against the cap, and not
// overwritten by the next attempt's chunks.
func TestStreamRecovery(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.DataDir = dir
	cfg.InMemoryStore = false
	cfg.MinFreeBytes = 1
	cfg.MaxUnreadStream = 1000
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

	// What a daemon killed mid-stream leaves: a running job whose first
	// two chunks were read (deleted) and three were not.
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := &store.Job{ID: "streaming", EndpointID: e.ID, Status: store.InProgress, Seq: 1, Input: json.RawMessage(`1`),
		ExecutionTimeoutMs: 600000, TTLMs: runpod.DefaultTTLMs, SubmittedAt: now.UnixMilli(), Attempts: 1, WorkerID: "w-dead", StartedAt: now.UnixMilli()}
	b := st.NewBatch()
	if err := b.PutJob(rec, rec.Deadline()); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 5; i++ {
		b.PutChunk(store.Chunk{JobID: rec.ID, Index: uint64(i), Output: chunkOf(i, 250)}, now.Add(time.Hour))
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	rt2 := newFakeRuntime()
	cfg.Runtime = rt2
	s2, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &harness{t: t, s: s2, rt: rt2, ep: e.ID, ctx: ctx}

	w := h.worker()
	if got := h.take(w); got.ID != rec.ID {
		t.Fatalf("took %s", got.ID)
	}
	// 750 recovered bytes are unread: 250 more fit, then the cap.
	h.addChunks(w, rec.ID, 5, 1, 250)
	var sl *StreamLimitError
	if err := h.s.AddChunk(ctx, e.ID, w.id, rec.ID, []byte(`1`)); !errors.As(err, &sl) || sl.Unread != 1000 {
		t.Fatalf("past the cap with recovered chunks counted: %v", err)
	}
	if v := h.stream(rec.ID); fmt.Sprint(tags(v)) != "[2 3 4 5]" || v.Status != store.Failed {
		t.Errorf("stream after recovery: %v %s, want the recovered chunks then the new one", tags(v), v.Status)
	}
}
