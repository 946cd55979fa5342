package scheduler

import (
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/history"
	"github.com/emberhq/ember/scheduler/store"
)

// BenchmarkJobRecording measures what the scheduler records per job, under
// its lock: "stats" is the recording there was before the console's
// history (the delay and execution samples of `ember endpoint stats`, the
// finished counter), the same-run baseline; "stats+history" adds what
// came with it: the /metrics histogram buckets, the chart history
// (submitted, delay, finished, a bucket roll every 10,000 jobs at one job
// a millisecond) and the recent-jobs ring. `make bench` reports both.
func BenchmarkJobRecording(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	r := &store.Job{ID: "job-00000000-0000-0000-0000-000000000000", Status: store.Completed, StartedAt: 1, ExecutionMs: 180, DelayMs: 12}
	run := func(b *testing.B, ep *endpointState, full bool) {
		delay := time.Duration(r.DelayMs) * time.Millisecond
		now := t0
		for b.Loop() {
			now = now.Add(time.Millisecond)
			if full {
				ep.history.Submitted(now)
				ep.recent.add(r.ID)
				ep.history.Delay(now, delay)
			}
			ep.stats.delay.add(delay)
			ep.recordFinishedLocked(now, r)
		}
	}
	b.Run("stats", func(b *testing.B) {
		// The stats as they were: no histogram bounds, no history.
		run(b, &endpointState{}, false)
	})
	b.Run("stats+history", func(b *testing.B) {
		run(b, &endpointState{stats: newEndpointStats(), history: history.New(t0)}, true)
	})
}
