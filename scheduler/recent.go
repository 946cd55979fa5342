package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/emberhq/ember/scheduler/history"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/store"
)

// recentJobs are the ids of an endpoint's newest jobs, at most
// limits.RecentJobs, in a fixed ring: what the console's recent-jobs list
// reads (RecentJobs). Submit adds to it; recovery refills it from the
// store's scan. Ids of jobs gone since (past retention, purged) stay
// until pushed out and are skipped when read.
type recentJobs struct {
	ids  [limits.RecentJobs]string
	next int // where the next id goes
	n    int // ids held
}

func (r *recentJobs) add(id string) {
	r.ids[r.next] = id
	r.next = (r.next + 1) % len(r.ids)
	r.n = min(r.n+1, len(r.ids))
}

// newest returns up to limit ids, newest first.
func (r *recentJobs) newest(limit int) []string {
	n := min(limit, r.n)
	out := make([]string, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ids[(r.next-i+len(r.ids))%len(r.ids)])
	}
	return out
}

// recentCandidate is a job recovery saw, for refilling recentJobs.
type recentCandidate struct {
	seq uint64
	id  string
}

// noteRecent keeps r as a candidate for its endpoint's recent jobs. The
// list is cut back to the newest limits.RecentJobs whenever it reaches
// twice that, so recovery holds at most that many per endpoint whatever
// the store holds.
func (rc *recovery) noteRecent(r *store.Job) {
	if rc.recent == nil {
		rc.recent = make(map[string][]recentCandidate)
	}
	l := append(rc.recent[r.EndpointID], recentCandidate{seq: r.Seq, id: r.ID})
	if len(l) >= 2*limits.RecentJobs {
		l = newestCandidates(l)
	}
	rc.recent[r.EndpointID] = l
}

// newestCandidates sorts l by arrival and keeps the newest
// limits.RecentJobs.
func newestCandidates(l []recentCandidate) []recentCandidate {
	slices.SortFunc(l, func(a, b recentCandidate) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	if len(l) > limits.RecentJobs {
		l = slices.Clone(l[len(l)-limits.RecentJobs:])
	}
	return l
}

// fillRecentLocked refills the endpoints' recent jobs from what recovery
// saw, oldest first.
func (s *Scheduler) fillRecentLocked(rc *recovery) {
	for id, l := range rc.recent {
		ep := s.endpoints[id]
		if ep == nil {
			continue
		}
		for _, c := range newestCandidates(l) {
			ep.recent.add(c.id)
		}
	}
	rc.recent = nil
}

// RecentJob is one entry of an endpoint's recent jobs. Times are Unix
// milliseconds (0: not yet), durations milliseconds. Input and Output
// are cut to limits.RecentJobPreview bytes (then a JSON string of their
// first bytes, with the Truncated flag set); the Error text likewise.
type RecentJob struct {
	ID                   string
	Status               store.Status
	CreatedAt, StartedAt int64
	CompletedAt          int64
	DelayTime            int64
	HasDelay             bool
	ExecutionTime        int64
	HasExecution         bool
	WorkerID             string
	Input, Output        json.RawMessage
	Error                string
	InputTruncated       bool
	OutputTruncated      bool
	ErrorTruncated       bool
}

// RecentJobs returns up to limit (at most limits.RecentJobs) of an
// endpoint's newest jobs, newest first: live ones as they are now,
// finished ones as stored. Jobs no longer stored (past their retention)
// are left out. The store is read one job at a time, so a request holds
// at most one job's payloads beyond the previews it returns.
func (s *Scheduler) RecentJobs(ctx context.Context, endpointID string, limit int) ([]RecentJob, error) {
	limit = min(max(limit, 0), limits.RecentJobs)
	type live struct {
		meta     jobMeta
		input    json.RawMessage // of a job whose record is not yet written
		progress json.RawMessage
	}
	s.mu.Lock()
	ep, ok := s.endpoints[endpointID]
	if !ok || ep.deleted {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	ids := ep.recent.newest(limit)
	lives := make(map[string]live)
	for _, id := range ids {
		j, ok := s.jobs[id]
		if !ok {
			continue
		}
		l := live{meta: j.rec}
		if j.unsaved != nil {
			l.input = preview(j.unsaved.Input)
		}
		if j.runState != nil && j.progress != nil {
			l.progress = preview(j.progress)
		}
		lives[id] = l
	}
	now := s.now()
	s.mu.Unlock()

	out := make([]RecentJob, 0, len(ids))
	for _, id := range ids {
		l, isLive := lives[id]
		var r *store.Job
		if !isLive || l.input == nil {
			var err error
			r, err = s.store.Job(ctx, id, false)
			if err == nil && (r.InputRef != "" || r.OutputRef != "") {
				// Payloads kept apart (above the spill threshold): loaded
				// for their previews, then dropped.
				r, err = s.store.Job(ctx, id, true)
			}
			switch {
			case errors.Is(err, store.ErrNotFound):
				if !isLive {
					continue // gone: past its retention, or purged
				}
				r = nil
			case err != nil:
				return nil, fmt.Errorf("read job %s: %w", id, err)
			}
		}
		var rj RecentJob
		if r != nil {
			rj = RecentJob{
				ID: r.ID, Status: r.Status, CreatedAt: r.SubmittedAt, StartedAt: r.StartedAt,
				WorkerID: r.WorkerID, Error: r.Error,
			}
			rj.Input, rj.InputTruncated = cut(r.Input)
			rj.Output, rj.OutputTruncated = cut(r.Output)
			if r.Status.Terminal() {
				rj.CompletedAt = r.FinishedAt
			}
			if r.StartedAt > 0 {
				rj.DelayTime, rj.HasDelay = r.DelayMs, true
				if r.Status.Terminal() {
					rj.ExecutionTime, rj.HasExecution = r.ExecutionMs, true
				}
			}
		}
		if isLive {
			// Memory is ahead of the store for a live job: its status,
			// worker and timings.
			m := l.meta
			rj.ID, rj.Status, rj.CreatedAt, rj.StartedAt, rj.WorkerID = m.ID, m.Status, m.SubmittedAt, m.StartedAt, m.WorkerID
			rj.CompletedAt, rj.HasDelay, rj.HasExecution = 0, false, false
			if m.StartedAt > 0 {
				rj.DelayTime, rj.HasDelay = m.DelayMs, true
				rj.ExecutionTime, rj.HasExecution = msSince(m.StartedAt, now), true
			}
			if l.input != nil {
				rj.Input, rj.InputTruncated = cut(l.input)
			}
			if l.progress != nil {
				rj.Output, rj.OutputTruncated = cut(l.progress)
			}
		}
		if len(rj.Error) > limits.RecentJobPreview {
			rj.Error, rj.ErrorTruncated = validPrefix(rj.Error, limits.RecentJobPreview), true
		}
		out = append(out, rj)
	}
	return out, nil
}

// preview copies at most a little more than limits.RecentJobPreview bytes
// of v (enough for cut to see that it is longer), so that the copy made
// under the lock stays small.
func preview(v json.RawMessage) json.RawMessage {
	return slices.Clone(v[:min(len(v), limits.RecentJobPreview+1)])
}

// cut returns v when it fits limits.RecentJobPreview; otherwise a JSON
// string of its first bytes (cut at a character boundary) and true.
func cut(v json.RawMessage) (json.RawMessage, bool) {
	if len(v) <= limits.RecentJobPreview {
		return v, false
	}
	b, _ := json.Marshal(validPrefix(string(v), limits.RecentJobPreview))
	return b, true
}

// validPrefix is s cut to at most n bytes without splitting a UTF-8
// character.
func validPrefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// History returns an endpoint's last hour in 10 s buckets, oldest first
// (package history), with the current bucket's queue depth and workers
// sampled now.
func (s *Scheduler) History(endpointID string) ([]history.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.endpoints[endpointID]
	if !ok || ep.deleted {
		return nil, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	return ep.history.Points(s.now(), ep.gaugesLocked()), nil
}

// sampleHistoryLocked samples the endpoint's gauges into its history's
// current bucket (tickLoop, every half second), so that each bucket
// keeps the queue depth and workers seen last while it was current.
func (s *Scheduler) sampleHistoryLocked(ep *endpointState) {
	ep.history.Sample(s.now(), ep.gaugesLocked())
}

// gaugesLocked are the endpoint's queue depth and workers now (those not
// stopped, ghosts not counted).
func (ep *endpointState) gaugesLocked() history.Gauges {
	g := history.Gauges{QueueDepth: ep.inQueue}
	for _, w := range ep.workers {
		if w.state != WorkerStopped {
			g.Workers++
		}
	}
	return g
}
