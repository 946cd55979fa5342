package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// sampleWindowSize is how many recent samples a distribution keeps: enough
// for a stable p99 and small enough (8 KiB) to keep one per metric per
// endpoint.
const sampleWindowSize = 1024

// distribution keeps the most recent durations of one kind, for quantiles,
// the running count and sum since the daemon started, and, when it has
// bounds, how many fell in each bucket since then (the /metrics
// histograms).
type distribution struct {
	ring  []float64 // seconds
	next  int
	count int64
	sum   float64
	// bounds are the histogram's bucket upper bounds, in seconds, sorted;
	// nil: no histogram. buckets[i] counts the samples in (bounds[i-1],
	// bounds[i]], the last one those above every bound.
	bounds  []float64
	buckets []uint64
}

// Histogram bucket bounds, in seconds, for each kind of duration: from a
// few milliseconds to past the longest each can take (a job may run for
// a day; a cold start includes an image's first start and a model load).
var (
	delayBounds     = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	executionBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400}
	coldStartBounds = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200}
	revivalBounds   = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120}
)

// newEndpointStats returns empty stats whose distributions keep
// histograms.
func newEndpointStats() endpointStats {
	var st endpointStats
	st.delay.bounds = delayBounds
	st.execution.bounds = executionBounds
	st.coldStart.bounds = coldStartBounds
	st.revival.bounds = revivalBounds
	st.park.bounds = revivalBounds
	return st
}

func (d *distribution) add(v time.Duration) {
	s := v.Seconds()
	if s < 0 {
		s = 0
	}
	if d.bounds != nil {
		if d.buckets == nil {
			d.buckets = make([]uint64, len(d.bounds)+1)
		}
		i := 0
		for i < len(d.bounds) && d.bounds[i] < s {
			i++
		}
		d.buckets[i]++
	}
	if len(d.ring) < sampleWindowSize {
		d.ring = append(d.ring, s)
	} else {
		d.ring[d.next] = s
		d.next = (d.next + 1) % sampleWindowSize
	}
	d.count++
	d.sum += s
}

// Quantiles summarise a distribution of durations, in seconds. The
// quantiles are over the last 1024 samples; Count and Sum are since the
// daemon started.
type Quantiles struct {
	Count int64   `json:"count"`
	Sum   float64 `json:"sum"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
}

// Histogram is a distribution's cumulative histogram since the daemon
// started, as Prometheus exports one: for each upper bound (seconds), how
// many samples were at or below it.
type Histogram struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

func (d *distribution) histogram() Histogram {
	h := Histogram{Count: uint64(d.count), Sum: d.sum, Buckets: make(map[float64]uint64, len(d.bounds))}
	var c uint64
	for i, b := range d.bounds {
		if d.buckets != nil {
			c += d.buckets[i]
		}
		h.Buckets[b] = c
	}
	return h
}

func (d *distribution) summary() Quantiles {
	q := Quantiles{Count: d.count, Sum: d.sum}
	if len(d.ring) == 0 {
		return q
	}
	v := slices.Clone(d.ring)
	sort.Float64s(v)
	at := func(p float64) float64 {
		// Nearest rank: the smallest sample with at least p of them at or
		// below it.
		i := int(float64(len(v))*p+0.999999) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	q.P50, q.P90, q.P99 = at(0.50), at(0.90), at(0.99)
	return q
}

// endpointStats are an endpoint's metrics since the daemon started.
type endpointStats struct {
	delay, execution, coldStart, revival distribution
	finished                             map[store.Status]int64
	retried                              int64
	started, revived, frozen, reclaimed  int64
	parked                               int64
	park                                 distribution
	streamRejected                       struct{ late, overLimit int64 }
}

// EndpointStats is what `ember endpoint stats` and /metrics show for one
// endpoint.
type EndpointStats struct {
	EndpointID string `json:"endpointId"`
	Name       string `json:"name"`
	// InQueue and InProgress are the jobs now.
	InQueue    int `json:"inQueue"`
	InProgress int `json:"inProgress"`
	// Finished counts terminal jobs by status since the daemon started
	// (COMPLETED, FAILED, TIMED_OUT, CANCELLED).
	Finished map[string]int64 `json:"finished"`
	// Retried counts jobs put back in the queue: after their worker was
	// lost, or by /retry.
	Retried int64 `json:"retried"`
	// Workers counts the workers now by state (initializing, idle, running,
	// draining, frozen, unhealthy) plus throttled (wanted, not placeable).
	Workers map[string]int `json:"workers"`
	// Delay is submission to take; Execution is take to the terminal
	// state; ColdStart is a new worker's start to its first take or ping;
	// Revival is the decision to revive a frozen worker to its processes
	// running again (its held take is answered meanwhile).
	Delay     Quantiles `json:"delay"`
	Execution Quantiles `json:"execution"`
	ColdStart Quantiles `json:"coldStart"`
	Revival   Quantiles `json:"revival"`
	// WorkersStarted, WorkersRevived, WorkersFrozen and WorkersReclaimed
	// count worker lifecycle events since the daemon started.
	WorkersStarted   int64 `json:"workersStarted"`
	WorkersRevived   int64 `json:"workersRevived"`
	WorkersFrozen    int64 `json:"workersFrozen"`
	WorkersReclaimed int64 `json:"workersReclaimed"`
	// WorkersParked counts parks done since the daemon started; Park is
	// the time a park took, decision to GPUs released (a revival from
	// parked counts in Revival); ParkedBytes is the host memory the
	// endpoint's parked workers take now.
	WorkersParked int64     `json:"workersParked"`
	Park          Quantiles `json:"park"`
	ParkedBytes   uint64    `json:"parkedBytes"`
	// StreamChunksRejected counts refused job-stream posts by reason:
	// "late" (the job had ended) and "limit" (past the unread cap; the job
	// failed).
	StreamChunksRejected map[string]int64 `json:"streamChunksRejected"`
	// Histograms of Delay, Execution, ColdStart, Revival and Park since
	// the daemon started, keyed by those names (the /metrics
	// histograms).
	Histograms map[string]Histogram `json:"-"`
}

// Stats returns the metrics of one endpoint, or of all (endpointID ""),
// ordered by endpoint name.
func (s *Scheduler) Stats(endpointID string) ([]EndpointStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []EndpointStats
	for id, ep := range s.endpoints {
		if endpointID != "" && id != endpointID {
			continue
		}
		out = append(out, s.statsLocked(ep))
	}
	if endpointID != "" && len(out) == 0 {
		return nil, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].EndpointID < out[j].EndpointID
	})
	return out, nil
}

func (s *Scheduler) statsLocked(ep *endpointState) EndpointStats {
	st := &ep.stats
	out := EndpointStats{
		EndpointID: ep.def.ID, Name: ep.def.Name,
		InQueue: ep.inQueue, InProgress: ep.inProgress,
		Finished: make(map[string]int64), Retried: st.retried,
		Workers:   make(map[string]int),
		Delay:     st.delay.summary(),
		Execution: st.execution.summary(),
		ColdStart: st.coldStart.summary(),
		Revival:   st.revival.summary(),

		WorkersStarted: st.started, WorkersRevived: st.revived,
		WorkersFrozen: st.frozen, WorkersReclaimed: st.reclaimed,
		WorkersParked: st.parked, Park: st.park.summary(),

		StreamChunksRejected: map[string]int64{"late": st.streamRejected.late, "limit": st.streamRejected.overLimit},
		Histograms: map[string]Histogram{
			"delay": st.delay.histogram(), "execution": st.execution.histogram(),
			"coldStart": st.coldStart.histogram(), "revival": st.revival.histogram(), "park": st.park.histogram(),
		},
	}
	for _, status := range []store.Status{store.Completed, store.Failed, store.TimedOut, store.Cancelled} {
		out.Finished[string(status)] = st.finished[status]
	}
	for _, state := range liveStates {
		out.Workers[string(state)] = 0
	}
	for _, w := range ep.workers {
		if w.state != WorkerStopped {
			out.Workers[string(w.state)]++
		}
		if p := w.park; p != nil && p.phase == parkParked {
			out.ParkedBytes += p.bytes
		}
	}
	out.Workers[string(WorkerUnhealthy)] += len(ep.ghosts)
	out.Workers["throttled"] = ep.throttled
	return out
}

// recordFinishedLocked counts a terminal job and its execution time, in
// the stats and in the history.
func (ep *endpointState) recordFinishedLocked(now time.Time, r *store.Job) {
	if ep.stats.finished == nil {
		ep.stats.finished = make(map[store.Status]int64)
	}
	ep.stats.finished[r.Status]++
	ran := r.StartedAt > 0 && r.Status != store.Cancelled
	exec := time.Duration(r.ExecutionMs) * time.Millisecond
	if ran {
		ep.stats.execution.add(exec)
	}
	ep.history.Finished(now, r.Status == store.Completed, r.Status == store.Failed || r.Status == store.TimedOut, exec, ran)
}

// StoreSize is the job store's size on disk in bytes, by part (see
// store.Usage).
func (s *Scheduler) StoreSize() (lsm, vlog, spilled int64) {
	u := s.store.Usage()
	return u.Index, u.Log, u.Files
}
