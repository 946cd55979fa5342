// Package scheduler is Ember's brain: it owns jobs from submission to their
// terminal state, the per-endpoint ready queues, worker leases, timers
// (TTL, execution timeout, retention), the webhooks due when jobs end
// (delivered by package webhook) and the workers themselves (through an
// oci.Runtime).
//
// All in-memory state sits behind one mutex. Durable writes happen outside
// it, through the store's group commit, and a state change becomes visible
// only after it is durable.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
	"github.com/emberhq/ember/scheduler/webhook"
)

// Config configures a Scheduler. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the store and per-worker directories.
	DataDir string
	// Runtime starts workers.
	Runtime oci.Runtime
	// WorkerAPIBase is the base URL workers use to reach the worker API,
	// e.g. http://127.0.0.1:7080. It goes into the RunPod webhook templates.
	WorkerAPIBase string
	// Tunables are the settings that may change while running.
	Tunables

	// StreamHold caps how long /stream waits for a chunk. Default 5 s.
	StreamHold time.Duration
	// WebhookAttempts is the total number of POSTs per webhook (RunPod: 3).
	WebhookAttempts int
	// MinFreeBytes: below this much free disk, new work is refused
	// (package diskguard). Default limits.DefaultMinFreeDisk.
	MinFreeBytes uint64
	// DiskReserveBytes: below this much free disk, the store refuses
	// every write, so that Badger never faults on a full disk; between it
	// and MinFreeBytes only writes that finish accepted work go through.
	// Default limits.DefaultDiskReserve (at most half of MinFreeBytes); it
	// must not exceed MinFreeBytes.
	DiskReserveBytes uint64
	// SpillThreshold: payloads above it are kept in files (default 64 KiB).
	SpillThreshold int
	// AllocateGPUs makes the scheduler give each worker gpuCount GPUs of
	// GPUs, exclusively; workers that cannot get theirs wait (throttled).
	// Off for the process runtime, whose workers see the host as it is.
	AllocateGPUs bool
	// GPUs is the machine's GPU inventory.
	GPUs []GPU
	// GPUFreeMemory reads a GPU's free memory now (NVML), for endpoints
	// that ask for a minimum (gpuMemoryMb); nil skips that check.
	GPUFreeMemory func(uuid string) (uint64, error)
	// Adopt takes back a worker that an earlier emberd started and that is
	// still running (a container outlives the daemon); nil or an error
	// means it is not adopted and its record is dropped.
	Adopt func(rec store.WorkerRecord) (oci.Worker, error)
	// GPUPark is the CUDA driver's checkpoint API, for parking workers
	// (park.go); nil: parking is not supported, and endpoints asking for
	// it are refused.
	GPUPark cudackpt.Driver
	// MemAvailable reads the host's available memory (MemAvailable in
	// /proc/meminfo), which a park must fit in. Default: that file.
	MemAvailable func() (uint64, error)
	// RequireImage: workers run as containers, so endpoints need an image
	// (otherwise a command).
	RequireImage bool
	// ImageExists says whether an image reference resolves to an imported
	// image (nil when it does); with RequireImage, an endpoint naming one
	// that does not is refused. Nil skips the check.
	ImageExists func(ref string) error
	// AbsoluteCommand: workers are host processes started from a
	// directory of their own (the process runtime), so an endpoint's
	// program must be an absolute path.
	AbsoluteCommand bool
	// ServeInNetns serves the worker API inside the network namespace of
	// the process pid, for workers on network "none"; the daemon provides
	// it. Closing the result stops serving there.
	ServeInNetns func(pid int) (io.Closer, error)
	// InMemoryStore is for unit tests only.
	InMemoryStore bool
	// Store is the job store. Nil: Open opens the Badger store that
	// StoreOptions describes. Open takes it over: Close closes it, and so
	// does an Open that fails.
	Store store.Store
	// HTTPClient sends webhooks. Default: a client with a 10 s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	c.Tunables.setDefaults()
	def(&c.StreamHold, 5*time.Second)
	if c.WebhookAttempts <= 0 {
		c.WebhookAttempts = 3
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = limits.DefaultMinFreeDisk
	}
	if c.DiskReserveBytes == 0 {
		c.DiskReserveBytes = max(min(limits.DefaultDiskReserve, c.MinFreeBytes/2), 1)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MemAvailable == nil {
		c.MemAvailable = hostMemAvailable
	}
}

// Scheduler owns jobs, endpoints and workers.
type Scheduler struct {
	cfg   Config
	store store.Store
	log   *slog.Logger
	now   func() time.Time

	ctx    context.Context // ends at Close; parent of every owned goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	endpoints map[string]*endpointState
	// claimedNames are endpoint names a create or rename has claimed
	// while it commits (endpoint.go, claimNameLocked), by endpoint id.
	claimedNames map[string]string
	jobs         map[string]*job // live jobs: queued, in progress, or finalizing
	workers      map[string]*worker
	seq          uint64
	closed       bool
	gpuOwner     map[string]string // GPU UUID -> worker id
	badGPUs      map[string]string // GPU UUID -> why it is out of placement
	freeMem      map[string]freeReading
	parkUsed     uint64        // host memory parked workers hold or reserved (park.go)
	ttls         ttlHeap       // live jobs by TTL deadline
	ttlWake      chan struct{} // a new earliest deadline

	// retryMu serialises retries so two concurrent /retry calls cannot both
	// resurrect the same job.
	retryMu sync.Mutex

	webhooks webhookOutbox
	// probe is the liveness check's attempt to take mu (liveness.go).
	probeMu sync.Mutex
	probe   *lockProbe

	// tunables are the settings SetTunables may change while running.
	tunables atomic.Pointer[Tunables]

	disk *diskguard.Guard
}

// StoreOptions describes the Badger store for cfg, which Open opens when
// cfg.Store is nil: in cfg.DataDir (in memory with InMemoryStore), with
// cfg's spill threshold, refusing writes below cfg's disk reserve after its
// default, so that the store's gate and the disk guard (package diskguard)
// count with the same figure. It fails, as Open does, when the reserve
// exceeds MinFreeBytes.
func StoreOptions(cfg Config) (store.BadgerOptions, error) {
	cfg.setDefaults()
	if cfg.DiskReserveBytes > cfg.MinFreeBytes {
		return store.BadgerOptions{}, fmt.Errorf("scheduler: the disk reserve (%d bytes, --disk-reserve-mb) must not exceed the free space kept for new work (%d bytes, --min-free-disk-mb)", cfg.DiskReserveBytes, cfg.MinFreeBytes)
	}
	return store.BadgerOptions{Dir: cfg.DataDir, InMemory: cfg.InMemoryStore, SpillThreshold: cfg.SpillThreshold, Reserve: cfg.DiskReserveBytes, Logger: cfg.Logger}, nil
}

// Open opens the store (or takes over cfg.Store), recovers every job from
// it (one scan), and starts the timers, webhook deliveries, autoscaler and
// store maintenance.
func Open(cfg Config) (_ *Scheduler, err error) {
	st := cfg.Store
	defer func() {
		if err != nil && st != nil {
			st.Close()
		}
	}()
	cfg.setDefaults()
	if cfg.Runtime == nil {
		return nil, errors.New("scheduler: no runtime configured")
	}
	if !cfg.InMemoryStore {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, "workers"), 0o750); err != nil {
			return nil, fmt.Errorf("create worker dir: %w", err)
		}
	}
	opts, err := StoreOptions(cfg)
	if err != nil {
		return nil, err
	}
	if st == nil {
		b, err := store.OpenBadger(opts)
		if err != nil {
			return nil, err
		}
		st = b
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		cfg:          cfg,
		store:        st,
		log:          cfg.Logger,
		now:          cfg.Now,
		ctx:          ctx,
		cancel:       cancel,
		endpoints:    make(map[string]*endpointState),
		claimedNames: make(map[string]string),
		jobs:         make(map[string]*job),
		workers:      make(map[string]*worker),
		ttlWake:      make(chan struct{}, 1),
		gpuOwner:     make(map[string]string),
		badGPUs:      make(map[string]string),
		freeMem:      make(map[string]freeReading),
		disk:         diskguard.New(cfg.DataDir, cfg.MinFreeBytes, cfg.DiskReserveBytes),
	}
	if cfg.InMemoryStore {
		s.disk = nil // nothing on disk to guard
	}
	t := cfg.Tunables
	s.tunables.Store(&t)
	outbox := webhook.NewOutbox(webhook.Config{Store: st, Client: cfg.HTTPClient, Attempts: cfg.WebhookAttempts,
		RetryDelay: func() time.Duration { return s.tun().WebhookRetryDelay }, Logger: cfg.Logger})
	s.webhooks = outbox
	// Held so that an adopted worker that exits during recovery waits.
	s.mu.Lock()
	err = s.recover()
	s.mu.Unlock()
	if err != nil {
		cancel()
		return nil, err
	}
	s.goOwned(func() { s.store.Maintain(ctx, time.Minute) })
	s.goOwned(s.tickLoop)
	s.goOwned(s.ttlLoop)
	s.goOwned(func() { outbox.Run(ctx) })
	return s, nil
}

func (s *Scheduler) goOwned(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops every worker (draining them up to the stop grace), stops the
// background loops and closes the store. Queued jobs stay queued on disk.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	// Handles are read under the lock: runWorker sets them concurrently.
	// A worker still starting has none; runWorker stops it once it starts.
	var live []oci.Worker
	for _, w := range s.workers {
		s.retireWorkerLocked(w, "daemon stopping")
		if w.handle != nil {
			live = append(live, w.handle)
		}
	}
	for _, j := range s.jobs {
		j.stopTimers()
	}
	s.mu.Unlock()
	deadline := time.NewTimer(s.tun().StopGrace + 2*time.Second)
	defer deadline.Stop()
	expired := false
	for _, h := range live {
		if !expired {
			select {
			case <-h.Done():
				continue
			case <-deadline.C:
				// The timer fires once: every worker still running from
				// here on is killed without waiting again.
				expired = true
			}
		}
		h.Kill()
	}
	s.cancel()
	s.wg.Wait()
	return s.store.Close()
}

// recover rebuilds the in-memory queues from one scan of the job records.
// Jobs that were in progress when the daemon died go back to the queue with
// their attempt counted, or fail once they have used up their attempts.
func (s *Scheduler) recover() error {
	if err := s.loadEndpointsLocked(); err != nil {
		return err
	}
	rc := &recovery{adopted: s.adoptWorkers(), now: s.now()}
	err := s.store.ScanJobs(s.ctx, func(r *store.Job) error {
		s.recoverJobLocked(rc, r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover jobs: %w", err)
	}
	if err := s.recoverStreamsLocked(); err != nil {
		return err
	}
	// The queues are built in scan order (job id order); restore arrival order.
	for _, ep := range s.endpoints {
		ep.sortQueues()
	}
	s.fillRecentLocked(rc)
	if err := s.persistRecovery(rc); err != nil {
		return err
	}
	if err := s.webhooks.Load(s.ctx); err != nil {
		return err
	}
	// Workers taken back from an emberd that went away before it replaced
	// them after an update (rolling.go).
	for _, ep := range s.endpoints {
		s.rollLocked(ep)
	}
	s.log.Info("queue recovered", "queued", rc.queued, "requeued", rc.requeued, "failed", rc.failed, "resumed", rc.resumed, "endpoints", len(s.endpoints), "workers_adopted", len(rc.adopted))
	return nil
}

// loadEndpointsLocked adds every stored endpoint, filling in the fields
// that records written before they existed lack.
func (s *Scheduler) loadEndpointsLocked() error {
	eps, err := s.store.Endpoints(s.ctx)
	if err != nil {
		return fmt.Errorf("load endpoints: %w", err)
	}
	for _, e := range eps {
		// Records written before these fields existed.
		if e.Network == "" {
			e.Network = spec.NetworkHost
		}
		if e.InitTimeoutSec == 0 {
			e.InitTimeoutSec = spec.DefaultInitTimeoutSec
		}
		if e.FlashbootWindowSec == 0 {
			e.FlashbootWindowSec = spec.DefaultFlashbootWindowSec
		}
		if e.Generation == 0 {
			e.Generation = 1
		}
		if e.GPUPark == "" {
			e.GPUPark = spec.ParkNever
		}
		if e.GPUParkDelaySec == 0 {
			e.GPUParkDelaySec = spec.DefaultGPUParkDelaySec
		}
		s.addEndpointLocked(e)
	}
	return nil
}

// recovery is what recover learns in its scan of the job records.
type recovery struct {
	adopted map[string]*worker // workers taken back, by id
	now     time.Time
	// How many live jobs were queued, re-queued after losing their worker,
	// failed for having used up their attempts, or resumed on an adopted
	// worker.
	queued, requeued, failed, resumed int
	fixes                             []*store.Job // records to rewrite
	orphans                           []string     // jobs of endpoints that no longer exist
	// recent are the newest jobs seen of each endpoint, by endpoint id
	// (recent.go).
	recent map[string][]recentCandidate
}

// recoverJobLocked puts back one stored job, unless it is terminal: on
// its adopted worker, in its endpoint's queue, or among the failed ones
// when the daemon died while it ran and it has used up its attempts.
func (s *Scheduler) recoverJobLocked(rc *recovery, r *store.Job) {
	if r.Seq > s.seq {
		s.seq = r.Seq
	}
	if _, ok := s.endpoints[r.EndpointID]; ok {
		rc.noteRecent(r)
	}
	if r.Status.Terminal() {
		return
	}
	ep, ok := s.endpoints[r.EndpointID]
	if !ok {
		rc.orphans = append(rc.orphans, r.ID)
		return
	}
	// One copy of the endpoint id for all its jobs instead of one
	// decoded per record.
	r.EndpointID = ep.def.ID
	if w := rc.adopted[r.WorkerID]; r.Status == store.InProgress && w != nil {
		// Its worker outlived the daemon and was taken back: the job
		// goes on there (its pings and result still count).
		j := newJob(r)
		s.jobs[j.rec.ID] = j
		j.worker = w
		j.runState = &runState{leaseSeen: rc.now}
		w.held[j.rec.ID] = j
		ep.inProgress++
		s.setWorkerStateLocked(w)
		s.armTTLLocked(j)
		attempt := j.rec.Attempts
		j.execTimer = time.AfterFunc(time.Duration(j.rec.ExecutionTimeoutMs)*time.Millisecond, func() { s.executionTimeout(j, attempt) })
		rc.resumed++
		return
	}
	if r.Status != store.InProgress {
		rc.queued++
		s.admitLocked(ep, newJob(r))
		return
	}
	rec := *r
	rc.fixes = append(rc.fixes, &rec)
	if rec.Attempts >= s.maxAttempts(ep) {
		rec.Status = store.Failed
		rec.Error = fmt.Sprintf("worker lost: emberd restarted while the job was running, after %d attempts", rec.Attempts)
		rec.FinishedAt = rc.now.UnixMilli()
		if rec.StartedAt > 0 {
			rec.ExecutionMs = rec.FinishedAt - rec.StartedAt
		}
		rc.failed++
		return
	}
	rec.Status = store.InQueue
	rec.WorkerID = ""
	rec.StartedAt = 0
	rc.requeued++
	s.admitLocked(ep, newJob(&rec))
}

// persistRecovery writes what recovery changed: the jobs re-queued or
// failed (with the webhooks of those that failed) and the removal of
// orphaned jobs. On a full disk it only warns: the queues are rebuilt in
// memory all the same, and the next start redoes the fixes.
func (s *Scheduler) persistRecovery(rc *recovery) error {
	if len(rc.fixes) == 0 && len(rc.orphans) == 0 {
		return nil
	}
	b := s.store.NewBatch()
	for _, r := range rc.fixes {
		if err := b.PutJob(r, s.expiryFor(r)); err != nil {
			return err
		}
		if r.Status.Terminal() {
			// Queued in memory by Load, once committed.
			if _, err := putWebhook(b, r); err != nil {
				return err
			}
		}
	}
	for _, id := range rc.orphans {
		b.DeleteJob(id)
	}
	if err := s.store.Commit(s.ctx, b); errors.Is(err, ErrInsufficientStorage) {
		// Started on a full disk: the queues are rebuilt in memory
		// all the same, and the next start redoes these fixes.
		s.log.Warn("recovery not persisted: the data disk is full", "err", err)
	} else if err != nil {
		return fmt.Errorf("persist recovery: %w", err)
	}
	return nil
}

// expiryFor is when a record disappears: the TTL deadline while the job is
// live, the retention window once it is terminal.
func (s *Scheduler) expiryFor(r *store.Job) time.Time {
	if r.Status.Terminal() {
		ret := s.tun().RunRetention
		if r.Sync {
			ret = s.tun().SyncRetention
		}
		return time.UnixMilli(r.FinishedAt).Add(ret)
	}
	return r.Deadline()
}

// tickLoop is the slow safety net: autoscaling, idle reaping and lease
// checks also run on events, this catches what events miss.
func (s *Scheduler) tickLoop() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.mu.Lock()
			if !s.closed {
				for _, ep := range s.endpoints {
					s.checkInitLocked(ep)
					s.expireFrozenLocked(ep)
					s.parkIdleLocked(ep)
					s.scaleLocked(ep)
					s.sampleHistoryLocked(ep)
				}
				s.checkLeasesLocked()
				for _, w := range s.workers {
					s.checkStopsLocked(w)
				}
			}
			s.mu.Unlock()
		}
	}
}

// kick re-evaluates an endpoint's workers right away (scale from zero
// without waiting for the tick).
func (s *Scheduler) kick(endpointID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ep, ok := s.endpoints[endpointID]; ok && !s.closed {
		s.scaleLocked(ep)
	}
}

func msSince(from int64, now time.Time) int64 {
	d := now.UnixMilli() - from
	if d < 0 {
		return 0
	}
	return d
}

func ceilDiv(a, b int) int {
	if b <= 0 {
		return a
	}
	return int(math.Ceil(float64(a) / float64(b)))
}
