package scheduler

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/emberhq/ember/scheduler/history"
	"github.com/emberhq/ember/scheduler/store"
)

// jobMeta is what scheduling keeps in memory of a live job: the lifecycle
// fields of its record. Payloads, webhook, s3Config and results stay in the
// store; a queue of 100,000 jobs must stay small.
type jobMeta struct {
	ID, EndpointID, WorkerID  string
	Status                    store.Status
	Seq                       uint64
	ExecutionTimeoutMs, TTLMs int64
	SubmittedAt, StartedAt    int64
	DelayMs                   int64
	Attempts, Retries         int
	LowPriority, Sync         bool
}

func metaOf(r *store.Job) jobMeta {
	return jobMeta{
		ID: r.ID, EndpointID: r.EndpointID, WorkerID: r.WorkerID, Status: r.Status, Seq: r.Seq,
		ExecutionTimeoutMs: r.ExecutionTimeoutMs, TTLMs: r.TTLMs, SubmittedAt: r.SubmittedAt,
		StartedAt: r.StartedAt, DelayMs: r.DelayMs, Attempts: r.Attempts, Retries: r.Retries,
		LowPriority: r.LowPriority, Sync: r.Sync,
	}
}

// Deadline is the job's hard TTL.
func (m *jobMeta) Deadline() time.Time { return time.UnixMilli(m.SubmittedAt + m.TTLMs) }

// job is the in-memory state of a live job.
type job struct {
	rec jobMeta
	// unsaved is the full submitted record while its first write is in
	// flight; readers use it instead of the store until then.
	unsaved *store.Job

	queued     bool // in its endpoint's ready queue
	finalizing bool // a terminal write is in flight; the job is no longer takeable or cancellable
	// ttlIdx is the position in the scheduler's TTL heap; -1 when not in
	// it. An int32 beside the two bools keeps job in a smaller size class
	// (a queue of 100,000 jobs is 100,000 of these).
	ttlIdx int32
	worker *worker // holds the job now
	// runState exists once the job was first taken; queued jobs (most of a
	// long queue) do without it.
	*runState

	// streamCh is closed when a chunk arrives or the job ends; made on
	// demand by a waiting /stream (most jobs never have one).
	streamCh chan struct{}

	// done is closed when the job turns terminal or is deleted; made on
	// demand by a waiter. final is set first; nil if the job was deleted.
	done  chan struct{}
	final *JobView
}

// runState is what a job accumulates once a worker has taken it.
type runState struct {
	// pastWorkers held the job in earlier attempts; a final result from one
	// of them is still accepted (first final result wins).
	pastWorkers []string
	leaseSeen   time.Time       // last sign the holding worker still has the job
	progress    json.RawMessage // latest progress update, shown on /status
	// stream says where the job's unread stream chunks lie on disk (stream.go).
	stream    streamCursor
	execTimer *time.Timer
	// stored is the full record as read when the job was taken; its
	// payload fields never change, so the result write need not read the
	// store again.
	stored *store.Job
}

func newJob(r *store.Job) *job {
	return &job{rec: metaOf(r), ttlIdx: -1}
}

// merged is a job's current record: the lifecycle fields from memory (mem,
// authoritative: the take write is asynchronous) and what memory does not
// keep (payloads, webhook, s3Config) from the stored record.
func merged(m jobMeta, full *store.Job) store.Job {
	r := *full
	r.ID, r.EndpointID, r.WorkerID, r.Status, r.Seq = m.ID, m.EndpointID, m.WorkerID, m.Status, m.Seq
	r.ExecutionTimeoutMs, r.TTLMs, r.SubmittedAt, r.StartedAt, r.DelayMs = m.ExecutionTimeoutMs, m.TTLMs, m.SubmittedAt, m.StartedAt, m.DelayMs
	r.Attempts, r.Retries, r.LowPriority, r.Sync = m.Attempts, m.Retries, m.LowPriority, m.Sync
	return r
}

// doneCh returns the channel closed when the job ends. Callers hold s.mu.
func (j *job) doneCh() chan struct{} {
	if j.done == nil {
		j.done = make(chan struct{})
	}
	return j.done
}

// streamWait returns the channel closed on the next chunk or the job's end.
// Callers hold s.mu.
func (j *job) streamWait() chan struct{} {
	if j.streamCh == nil {
		j.streamCh = make(chan struct{})
	}
	return j.streamCh
}

func (j *job) stopTimers() {
	if j.runState != nil && j.execTimer != nil {
		j.execTimer.Stop()
	}
}

func (j *job) wakeStream() {
	if j.streamCh != nil {
		close(j.streamCh)
		j.streamCh = nil
	}
}

// fifo is a queue of jobs with O(1) push, pop and lazy removal: a job that
// leaves the queue by other means (cancel, TTL) just has queued=false and is
// skipped when it reaches the head.
type fifo struct {
	items []*job
	head  int
}

func (q *fifo) push(j *job) { q.items = append(q.items, j) }

// pushFront puts a re-queued job ahead of newer arrivals.
func (q *fifo) pushFront(j *job) {
	if q.head > 0 {
		q.head--
		q.items[q.head] = j
		return
	}
	q.items = append([]*job{j}, q.items...)
}

func (q *fifo) pop() *job {
	for q.head < len(q.items) {
		j := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		if q.head > 1024 && q.head*2 > len(q.items) {
			q.items = append([]*job(nil), q.items[q.head:]...)
			q.head = 0
		}
		if j.queued {
			return j
		}
	}
	return nil
}

// peek returns the oldest still-queued job without removing it.
func (q *fifo) peek() *job {
	for q.head < len(q.items) {
		j := q.items[q.head]
		if j.queued {
			return j
		}
		q.items[q.head] = nil
		q.head++
	}
	return nil
}

func (q *fifo) sort() {
	live := q.items[q.head:]
	sort.Slice(live, func(a, b int) bool { return live[a].rec.Seq < live[b].rec.Seq })
}

// endpointState is an endpoint's definition plus its live queues, workers
// and counters.
type endpointState struct {
	def     store.Endpoint
	deleted bool

	high, low  fifo
	inQueue    int
	lowQueued  int // of inQueue, the low-priority jobs
	inProgress int
	// takers are the job-take long-polls waiting for a job, oldest first.
	// Each new takeable job wakes exactly one of them, so a burst of jobs
	// does not wake every idle worker for every job.
	takers []*taker

	workers map[string]*worker
	// throttled counts workers the scaler wants but cannot place (no free
	// GPU), for /health.
	throttled int
	// crash-loop back-off: consecutive workers that died before becoming ready
	failures  int
	nextStart time.Time
	// startFails counts the workers in a row that failed to start or
	// exited before their first job-take, startErr says why the last one
	// did (startfail.go).
	startFails int
	startErr   string

	counters rollingCounters
	stats    endpointStats
	// history is the last hour in 10 s buckets, for the console's charts
	// (history.go); recent are the ids of the newest jobs (recent.go).
	history *history.Series
	recent  recentJobs
	// ghosts are workers that ended unhealthy (crashed before becoming
	// ready, missed the init timeout, reported themselves unhealthy),
	// newest last. They stay visible, in /health and `ember worker list`,
	// until a worker of the endpoint becomes ready again.
	ghosts []WorkerInfo
	// stopped are the endpoint's workers that have exited, newest last
	// (at most limits.LogStoppedWorkers), so that its logs still show
	// them while their files are kept (logs.go).
	stopped []WorkerInfo
	// slotsHint is the concurrency the endpoint's workers last declared
	// (batch take size plus jobs held): how many jobs a new worker is
	// expected to run at once.
	slotsHint int
}

func (s *Scheduler) addEndpointLocked(e store.Endpoint) {
	s.endpoints[e.ID] = &endpointState{
		def:      e,
		workers:  make(map[string]*worker),
		counters: newRollingCounters(s.tun().RunRetention),
		stats:    newEndpointStats(),
		history:  history.New(s.now()),
	}
}

// push makes j takeable. front puts it ahead of everything of its priority.
func (ep *endpointState) push(j *job, front bool) {
	j.queued = true
	q := &ep.high
	if j.rec.LowPriority {
		q = &ep.low
	}
	if front {
		q.pushFront(j)
	} else {
		q.push(j)
	}
	ep.inQueue++
	if j.rec.LowPriority {
		ep.lowQueued++
	}
	ep.wakeOne()
}

// taker is one waiting job-take.
type taker struct {
	ch     chan struct{} // closed when woken
	worker string
}

// wakeOne wakes the longest-waiting taker.
func (ep *endpointState) wakeOne() {
	if len(ep.takers) == 0 {
		return
	}
	t := ep.takers[0]
	ep.takers[0] = nil
	ep.takers = ep.takers[1:]
	close(t.ch)
}

// wait registers a taker for worker.
func (ep *endpointState) wait(worker string) *taker {
	t := &taker{ch: make(chan struct{}), worker: worker}
	ep.takers = append(ep.takers, t)
	return t
}

// leave removes t after it stopped waiting. A taker that was woken but left
// without taking (timeout, disconnect) passes the wake-up on, so the job it
// was woken for does not sit in the queue while others wait.
func (ep *endpointState) leave(t *taker) {
	for i, x := range ep.takers {
		if x == t {
			ep.takers = append(ep.takers[:i], ep.takers[i+1:]...)
			return
		}
	}
	if ep.inQueue > 0 {
		ep.wakeOne()
	}
}

// wakeWorker wakes the takes of one worker (it is draining: they must
// return empty now).
func (ep *endpointState) wakeWorker(worker string) {
	kept := ep.takers[:0]
	for _, t := range ep.takers {
		if t.worker == worker {
			close(t.ch)
		} else {
			kept = append(kept, t)
		}
	}
	for i := len(kept); i < len(ep.takers); i++ {
		ep.takers[i] = nil
	}
	ep.takers = kept
}

// pop takes the next job: every normal-priority job before any low-priority
// one.
func (ep *endpointState) pop() *job {
	j := ep.high.pop()
	if j == nil {
		j = ep.low.pop()
	}
	if j != nil {
		ep.dequeued(j)
	}
	return j
}

func (ep *endpointState) dequeued(j *job) {
	j.queued = false
	ep.inQueue--
	if j.rec.LowPriority {
		ep.lowQueued--
	}
}

// unqueue removes j from the ready queue (lazily).
func (ep *endpointState) unqueue(j *job) {
	if j.queued {
		ep.dequeued(j)
	}
}

func (ep *endpointState) sortQueues() {
	ep.high.sort()
	ep.low.sort()
}

// oldestWait is how long the oldest normal-priority queued job has waited.
func (ep *endpointState) oldestWait(now time.Time) time.Duration {
	j := ep.high.peek()
	if j == nil {
		return 0
	}
	return now.Sub(time.UnixMilli(j.rec.SubmittedAt))
}

// rollingCounters count completions, failures and retries over a window in
// one-minute buckets, for /health.
type rollingCounters struct {
	width   time.Duration
	buckets []counterBucket
}

type counterBucket struct {
	minute                     int64
	completed, failed, retried int
}

func newRollingCounters(window time.Duration) rollingCounters {
	n := int(window/time.Minute) + 1
	if n < 2 {
		n = 2
	}
	return rollingCounters{width: window, buckets: make([]counterBucket, n)}
}

func (c *rollingCounters) bucket(now time.Time) *counterBucket {
	m := now.Unix() / 60
	b := &c.buckets[m%int64(len(c.buckets))]
	if b.minute != m {
		*b = counterBucket{minute: m}
	}
	return b
}

func (c *rollingCounters) add(now time.Time, st store.Status, retried bool) {
	b := c.bucket(now)
	switch {
	case retried:
		b.retried++
	case st == store.Completed:
		b.completed++
	case st == store.Failed || st == store.TimedOut:
		b.failed++
	}
}

func (c *rollingCounters) sum(now time.Time) (completed, failed, retried int) {
	m := now.Unix() / 60
	for _, b := range c.buckets {
		if m-b.minute < int64(len(c.buckets)) {
			completed += b.completed
			failed += b.failed
			retried += b.retried
		}
	}
	return
}
