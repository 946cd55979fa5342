package scheduler

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/store"
)

// Streamed output. A worker's job-stream posts are written to the store as
// they come (AddChunk) and stay there until /stream hands them out, oldest
// first, in pages of at most limits.StreamPage bytes (Stream). Memory holds
// only each job's streamCursor, so a worker that streams faster than its
// client reads costs disk, up to the per-job cap on unread bytes, and not
// memory. Past the cap the chunk is refused and the job fails with the
// reason; chunks posted after a job ended are refused too. Both refusals
// are counted per endpoint (/metrics: ember_stream_chunks_rejected_total).

// streamCursor is where a live job's unread stream chunks lie in the store:
// indexes first to next-1, unread bytes in all. Chunks below first have
// been handed out (and deleted); next is the index the next chunk gets.
type streamCursor struct {
	first, next uint64
	unread      int64
}

// added counts chunk idx of n bytes, now on disk.
func (c *streamCursor) added(idx uint64, n int) {
	c.next = idx + 1
	c.unread += int64(n)
}

// consumed moves past a page handed out from the range [from, to). An empty
// page means the range had nothing left on disk (its records expired): the
// cursor skips it rather than offer it again.
func (c *streamCursor) consumed(page []store.Chunk, to uint64) {
	if len(page) == 0 {
		c.first = max(c.first, to)
	} else {
		c.first = max(c.first, page[len(page)-1].Index+1)
		for _, ch := range page {
			c.unread -= int64(len(ch.Output))
		}
	}
	// Sizes recovered from the store's keys are close, not exact, for the
	// big chunks; an empty range has nothing unread whatever the sum says.
	if c.first >= c.next || c.unread < 0 {
		c.unread = 0
	}
}

// fromSpan is the cursor of chunks recovered from the store.
func fromSpan(sp store.ChunkSpan) streamCursor {
	return streamCursor{first: sp.First, next: sp.Next, unread: sp.Bytes}
}

// StreamLimitError refuses a chunk that would have taken a job's unread
// stream past the cap. The job has failed with Reason.
type StreamLimitError struct {
	JobID string
	// Limit is the cap on unread bytes, Unread what was unread before this
	// chunk, Chunk the refused chunk's size.
	Limit, Unread int64
	Chunk         int
	Reason        string
}

func (e *StreamLimitError) Error() string {
	return fmt.Sprintf("job %s: %s (%d bytes were unread, this chunk of %d bytes was not stored); the job has FAILED", e.JobID, e.Reason, e.Unread, e.Chunk)
}

// streamLimitReason is the error a job fails with when its worker streams
// past limit bytes that the client has not read.
func streamLimitReason(limit int64) string {
	return fmt.Sprintf("stream output exceeded the %s unread limit: the client is not reading /stream (emberd --max-unread-stream-mib)", sizeText(limit))
}

// sizeText writes whole MiB as such, anything else in bytes.
func sizeText(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}

// overflowChunk fails j, whose worker posted a chunk past the unread cap,
// tells the worker to stop it, and returns the refusal.
func (s *Scheduler) overflowChunk(ctx context.Context, j *job, endpointID, jobID, workerID string, limit, unread int64, n int) error {
	reason := streamLimitReason(limit)
	now := s.now()
	// The worker's hang-up must not leave the job running: the refusal is
	// decided, so it is written whatever happens to the request.
	views, err := s.finalize(context.WithoutCancel(ctx), []*job{j}, "stream limit failure", failedAt(reason, now))
	if err != nil {
		return err
	}
	if len(views) == 0 {
		// Something else ended it meanwhile (a result, a cancel).
		return s.lateChunk(endpointID, jobID)
	}
	s.mu.Lock()
	if w := s.workers[workerID]; w != nil {
		s.signalStopLocked(w, jobID)
	}
	if ep := s.endpoints[endpointID]; ep != nil {
		ep.stats.streamRejected.overLimit++
	}
	s.mu.Unlock()
	s.log.Warn("job failed: stream output over the unread limit", "job", jobID, "endpoint", endpointID,
		"worker", workerID, "limit_bytes", limit, "unread_bytes", unread)
	return &StreamLimitError{JobID: jobID, Limit: limit, Unread: unread, Chunk: n, Reason: reason}
}

// lateChunk refuses a chunk for a job that is not live: ended (and
// perhaps expired) or ending. A job of another endpoint is forbidden.
func (s *Scheduler) lateChunk(endpointID, jobID string) error {
	r, err := s.store.Job(s.ctx, jobID, false)
	switch {
	case err == nil && r.EndpointID != endpointID:
		return fmt.Errorf("%w: job %s is not on endpoint %s", ErrForbidden, jobID, endpointID)
	case err == nil && r.Status.Terminal():
		err = fmt.Errorf("%w: job %s is already %s; the chunk was not stored", ErrJobEnded, jobID, r.Status)
	case err == nil || errors.Is(err, store.ErrNotFound):
		// A live record not in memory is one whose terminal write is in
		// flight; no record is a job that ended and expired.
		err = fmt.Errorf("%w: job %s has ended; the chunk was not stored", ErrJobEnded, jobID)
	default:
		return fmt.Errorf("%w: read job %s: %v", ErrUnavailable, jobID, err)
	}
	return s.rejectLate(endpointID, err)
}

// rejectLate counts a late chunk and returns its refusal.
func (s *Scheduler) rejectLate(endpointID string, err error) error {
	s.mu.Lock()
	if ep := s.endpoints[endpointID]; ep != nil {
		ep.stats.streamRejected.late++
	}
	s.mu.Unlock()
	return err
}

// postLocks serialise the job-stream posts of one job (striped by job id).
var postLocks [256]sync.Mutex

func postLock(id string) *sync.Mutex { return &postLocks[stripe(id, len(postLocks))] }

// streamLocks stripe the per-job /stream critical section.
var streamLocks [64]sync.Mutex

func streamLock(id string) *sync.Mutex { return &streamLocks[stripe(id, len(streamLocks))] }

func stripe(id string, n int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return h.Sum32() % uint32(n)
}

// Stream hands out the oldest chunks not yet delivered, at most
// limits.StreamPage bytes of them (at least one chunk). When there are none
// and the job is still running it holds up to min(wait, StreamHold) for one.
func (s *Scheduler) Stream(ctx context.Context, endpointID, id string, wait time.Duration) (StreamView, error) {
	hold := s.cfg.StreamHold
	if wait > 0 && wait < hold {
		hold = wait
	}
	deadline := time.NewTimer(hold)
	defer deadline.Stop()
	for {
		lk := streamLock(id)
		lk.Lock()
		s.mu.Lock()
		j, live := s.jobs[id]
		if !live {
			s.mu.Unlock()
			v, err := s.streamStored(ctx, endpointID, id)
			lk.Unlock()
			return v, err
		}
		if j.rec.EndpointID != endpointID {
			s.mu.Unlock()
			lk.Unlock()
			return StreamView{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
		}
		status := j.rec.Status
		if j.runState != nil && j.stream.next > j.stream.first {
			from, to := j.stream.first, j.stream.next
			s.mu.Unlock()
			v, err := s.streamPage(ctx, j, id, status, from, to)
			lk.Unlock()
			return v, err
		}
		ch := j.streamWait()
		s.mu.Unlock()
		lk.Unlock()
		select {
		case <-ch:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		}
		return StreamView{Status: status, Stream: []Chunk{}}, nil
	}
}

// streamPage hands out a page of live job j's chunks in [from, to) and
// moves its cursor past them. Only the stream lock of the job is held: new
// chunks land at to and beyond meanwhile, and j's record may change (id is
// read from the request, not from it).
func (s *Scheduler) streamPage(ctx context.Context, j *job, id string, status store.Status, from, to uint64) (StreamView, error) {
	page, _, err := s.store.ChunkPage(ctx, id, from, to, limits.StreamPage)
	if err != nil {
		return StreamView{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	v, err := s.deliverChunks(ctx, status, page)
	if err != nil {
		return StreamView{}, err // not handed out: the cursor stays
	}
	s.mu.Lock()
	j.stream.consumed(page, to)
	s.mu.Unlock()
	return v, nil
}

// streamStored serves /stream for a job that has left memory (terminal):
// its unread chunks a page at a time, then an empty stream for as long as
// the result is retained. While pages remain the answer says IN_PROGRESS,
// not the terminal status: RunPod's JS and Go clients stop reading at the
// first terminal answer, and would lose the rest (README, "Choices where
// RunPod is silent").
func (s *Scheduler) streamStored(ctx context.Context, endpointID, id string) (StreamView, error) {
	r, err := s.store.Job(ctx, id, false)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.EndpointID != endpointID) {
		return StreamView{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
	}
	if err != nil {
		return StreamView{}, err
	}
	page, more, err := s.store.ChunkPage(ctx, id, 0, math.MaxUint64, limits.StreamPage)
	if err != nil {
		return StreamView{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	status := r.Status
	if more && status.Terminal() {
		status = store.InProgress
	}
	return s.deliverChunks(ctx, status, page)
}

// deliverChunks deletes the chunks durably before handing them out, so a
// later read never repeats them.
func (s *Scheduler) deliverChunks(ctx context.Context, status store.Status, chunks []store.Chunk) (StreamView, error) {
	v := StreamView{Status: status, Stream: make([]Chunk, 0, len(chunks))}
	if len(chunks) == 0 {
		return v, nil
	}
	b := s.store.NewBatch()
	for _, c := range chunks {
		b.DeleteChunk(c.JobID, c.Index)
		v.Stream = append(v.Stream, Chunk{Output: c.Output})
	}
	if err := s.store.Commit(ctx, b); err != nil {
		return StreamView{}, persistErr("mark chunks delivered", err)
	}
	s.store.ReleaseChunks(chunks[0].JobID, chunks)
	return v, nil
}

// recoverStreamsLocked gives each recovered live job the cursor of the
// stream chunks it has on disk (one pass over the chunk keys), so that its
// unread chunks are still handed out, count against the cap, and are not
// overwritten by the next attempt's.
func (s *Scheduler) recoverStreamsLocked() error {
	n := 0
	err := s.store.ScanChunkSpans(s.ctx, func(jobID string, sp store.ChunkSpan) {
		j, ok := s.jobs[jobID]
		if !ok {
			return // a terminal job's chunks are read from the store as they are
		}
		if j.runState == nil {
			j.runState = &runState{}
		}
		j.stream = fromSpan(sp)
		n++
	})
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("stream chunks recovered", "jobs", n)
	}
	return nil
}
