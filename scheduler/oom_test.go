package scheduler

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// TestOOMFailsAtOnce: a worker killed for memory fails its job right away
// with the reason and the limit, instead of re-queueing it to die again;
// an ordinary crash re-queues.
func TestOOMFailsAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{Input: json.RawMessage(`{"alloc_mb":4096}`)})
	h.take(w)
	w.finish(oci.ExitStatus{Code: -1, Signal: "killed", OOMKilled: true, MemoryLimit: 2 << 30})
	v := h.waitStatus(id, store.Failed)
	if !strings.Contains(v.Error, "worker was killed: out of memory (limit 2 GiB)") {
		t.Errorf("error = %q, want the OOM reason with the limit", v.Error)
	}
	if strings.Contains(v.Error, "attempts") {
		t.Errorf("error = %q: an OOM must not go through retries", v.Error)
	}

	w2 := h.worker()
	id2 := h.submit(spec.Submission{Input: json.RawMessage(`{}`)})
	h.take(w2)
	w2.finish(oci.ExitStatus{Code: 3})
	w3 := h.worker()
	if got := h.take(w3); got.ID != id2 {
		t.Fatalf("after a crash the replacement took %q, want the re-queued %q", got.ID, id2)
	}
}
