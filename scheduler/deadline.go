package scheduler

import (
	"container/heap"
	"time"
)

// ttlHeap orders live jobs by their TTL deadline. One goroutine sleeps until
// the earliest one instead of a timer per job: a queue of 100,000 jobs would
// otherwise hold 100,000 runtime timers.
type ttlHeap []*job

func (h ttlHeap) Len() int { return len(h) }
func (h ttlHeap) Less(a, b int) bool {
	return h[a].rec.SubmittedAt+h[a].rec.TTLMs < h[b].rec.SubmittedAt+h[b].rec.TTLMs
}
func (h ttlHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].ttlIdx = int32(a)
	h[b].ttlIdx = int32(b)
}
func (h *ttlHeap) Push(x any) {
	j := x.(*job)
	j.ttlIdx = int32(len(*h))
	*h = append(*h, j)
}
func (h *ttlHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	j.ttlIdx = -1
	return j
}

// armTTLLocked deletes the job when its TTL runs out, even mid-run: after
// that /status answers 404. A webhook, if any, still reports TIMED_OUT.
func (s *Scheduler) armTTLLocked(j *job) {
	heap.Push(&s.ttls, j)
	if j.ttlIdx == 0 {
		// A new earliest deadline: the loop must re-arm.
		select {
		case s.ttlWake <- struct{}{}:
		default:
		}
	}
}

// disarmTTLLocked forgets the job's deadline (it ended).
func (s *Scheduler) disarmTTLLocked(j *job) {
	if i := int(j.ttlIdx); i >= 0 && i < len(s.ttls) && s.ttls[i] == j {
		heap.Remove(&s.ttls, i)
	}
}

// ttlLoop expires jobs at their deadlines until the scheduler closes.
func (s *Scheduler) ttlLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		now := s.now().UnixMilli()
		var due []*job
		for len(s.ttls) > 0 {
			j := s.ttls[0]
			if j.rec.SubmittedAt+j.rec.TTLMs > now {
				break
			}
			heap.Pop(&s.ttls)
			due = append(due, j)
		}
		wait := time.Hour
		if len(s.ttls) > 0 {
			j := s.ttls[0]
			wait = time.Duration(j.rec.SubmittedAt+j.rec.TTLMs-now) * time.Millisecond
		}
		s.mu.Unlock()
		for _, j := range due {
			s.expire(j)
		}
		t.Reset(wait)
		select {
		case <-s.ctx.Done():
			return
		case <-s.ttlWake:
		case <-t.C:
		}
	}
}
