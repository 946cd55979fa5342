package scheduler

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/workerid"
)

// WorkerState is a worker's lifecycle state.
type WorkerState string

// Worker states: initializing -> idle <-> running -> draining -> stopped,
// plus unhealthy.
const (
	WorkerInitializing WorkerState = "initializing"
	WorkerIdle         WorkerState = "idle"
	WorkerRunning      WorkerState = "running"
	WorkerDraining     WorkerState = "draining"
	WorkerStopped      WorkerState = "stopped"
	WorkerUnhealthy    WorkerState = "unhealthy"
	// WorkerFrozen: past its idle timeout on a FlashBoot endpoint, every
	// process suspended, memory kept; a job thaws it.
	WorkerFrozen WorkerState = "frozen"
	// WorkerParked: frozen with its GPU state moved to host memory and its
	// GPUs given up (park.go); a job revives it on the same GPUs.
	WorkerParked WorkerState = "parked"
)

// liveStates are the states a listed worker can be in (all but stopped),
// in lifecycle order.
var liveStates = []WorkerState{WorkerInitializing, WorkerIdle, WorkerRunning, WorkerDraining, WorkerFrozen, WorkerParked, WorkerUnhealthy}

type worker struct {
	id       string
	endpoint string
	token    string
	state    WorkerState
	handle   oci.Worker
	dir      string
	logPath  string

	startedAt  time.Time
	ready      bool // made its first take or ping
	lastActive time.Time
	lastPing   time.Time
	pinged     bool
	version    string

	held map[string]*job
	gpus []string // UUIDs, exclusively this worker's

	stopQ  []string
	stopCh chan struct{}

	draining  bool
	recycle   bool // stopPod: stop after its current jobs
	unhealthy bool
	reason    string

	// slots is the concurrency the worker declared: the most jobs it held
	// plus asked for at once. asking is what its pending takes ask for.
	slots  int
	asking int

	// FlashBoot. frozen: decided, the freeze may still be under way;
	// thawing: revived, the thaw may still be under way. A take of a
	// frozen worker waits on thawCh. freezeMu orders the Freeze and Thaw
	// calls; suspended (under freezeMu) says the processes really are.
	frozen    bool
	frozenAt  time.Time
	thawing   bool
	thawCh    chan struct{}
	freezeMu  sync.Mutex
	suspended bool
	// park is set from the decision to park the worker to the end of its
	// revival (park.go); parkRefused: a park for being idle failed, and is
	// not tried again.
	park        *parkState
	parkRefused bool

	// stopping holds the jobs the worker was told to stop, with the time
	// after which it is killed if it still runs them; killed says it was.
	stopping map[string]time.Time
	killed   bool
	// backedOff: its failure already delayed the endpoint's next start.
	backedOff bool
	// retired: stopped for no fault of its own (retireWorkerLocked says
	// why, in retiredWhy); the jobs it still holds when it exits do not
	// use up an attempt.
	retired    bool
	retiredWhy string
	// generation is the endpoint generation the worker was started with;
	// outdated: a newer one exists and the worker, busy then, takes no new
	// job and is stopped once its jobs end (rolling.go).
	generation int64
	outdated   bool
}

// WorkerInfo is a worker as `ember worker list` shows it.
type WorkerInfo struct {
	ID         string      `json:"id"`
	EndpointID string      `json:"endpointId"`
	State      WorkerState `json:"state"`
	PID        int         `json:"pid,omitempty"`
	StartedAt  time.Time   `json:"startedAt"`
	Jobs       []string    `json:"jobs"`
	SDKVersion string      `json:"sdkVersion,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	LogPath    string      `json:"logPath,omitempty"`
	// GPUs are the UUIDs of the GPUs it holds, exclusively.
	GPUs []string `json:"gpus,omitempty"`
	// Generation is the endpoint generation the worker runs (0 for a
	// worker that ended unhealthy before it was known: not shown).
	Generation int64 `json:"generation,omitempty"`
	// Outdated: a newer generation exists; the worker finishes its jobs,
	// takes no new one and then stops.
	Outdated bool `json:"outdated,omitempty"`
	// ParkedBytes is the host memory a parked worker's GPU state takes;
	// ParkedGPUs are the GPUs it was parked from and revives on.
	ParkedBytes uint64   `json:"parkedBytes,omitempty"`
	ParkedGPUs  []string `json:"parkedGpus,omitempty"`
}

// Workers lists the live workers, optionally of one endpoint.
func (s *Scheduler) Workers(endpointID string) []WorkerInfo {
	s.mu.Lock()
	var out []WorkerInfo
	for _, w := range s.workers {
		if endpointID != "" && w.endpoint != endpointID {
			continue
		}
		info := WorkerInfo{ID: w.id, EndpointID: w.endpoint, State: w.state, StartedAt: w.startedAt, SDKVersion: w.version,
			Reason: w.reason, LogPath: w.logPath, Jobs: []string{}, GPUs: append([]string(nil), w.gpus...),
			Generation: w.generation, Outdated: w.outdated}
		if w.handle != nil {
			info.PID = w.handle.PID()
		}
		if p := w.park; p != nil && p.phase == parkParked {
			info.ParkedBytes, info.ParkedGPUs = p.bytes, append([]string(nil), p.gpus...)
		}
		for id := range w.held {
			info.Jobs = append(info.Jobs, id)
		}
		sort.Strings(info.Jobs)
		out = append(out, info)
	}
	for _, ep := range s.endpoints {
		if endpointID == "" || ep.def.ID == endpointID {
			out = append(out, ep.ghosts...)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// WorkerLog says where worker id's log file is and whether the worker is
// live. For a worker that has exited, path is where it logged (the file
// stays until the data directory is cleaned, or may be gone); it is "" when
// that cannot be known (in-memory store) or id is not a plain file name.
func (s *Scheduler) WorkerLog(id string) (path string, live bool) {
	s.mu.Lock()
	w := s.workers[id]
	if w != nil {
		path = w.logPath
	}
	s.mu.Unlock()
	if w != nil {
		return path, true
	}
	if s.cfg.InMemoryStore || id == "" || id[0] == '.' || filepath.Base(id) != id {
		return "", false
	}
	return filepath.Join(s.cfg.DataDir, "workers", id+".log"), false
}

func (s *Scheduler) workerCountsLocked(ep *endpointState) WorkerCounts {
	var c WorkerCounts
	for _, w := range ep.workers {
		switch w.state {
		case WorkerInitializing:
			c.Initializing++
		case WorkerIdle:
			c.Idle++
		case WorkerRunning:
			c.Running++
		case WorkerUnhealthy:
			c.Unhealthy++
		}
	}
	// Frozen workers are not counted: RunPod's counters have no such
	// state, and a frozen worker is neither ready nor running.
	c.Unhealthy += len(ep.ghosts)
	// RunPod's responses always show ready == idle.
	c.Ready = c.Idle
	c.Throttled = ep.throttled
	return c
}

func (s *Scheduler) markSeenLocked(w *worker) {
	if !w.ready {
		w.ready = true
		w.lastActive = s.now()
		startup := s.now().Sub(w.startedAt)
		if ep := s.endpoints[w.endpoint]; ep != nil {
			ep.failures = 0
			ep.startFails = 0
			ep.ghosts = nil
			ep.stats.coldStart.add(startup)
			ep.history.ColdStart(s.now(), startup)
		}
		s.log.Info("worker ready", "worker", w.id, "endpoint", w.endpoint, "startup", startup.Round(time.Millisecond))
	}
	s.setWorkerStateLocked(w)
}

func (s *Scheduler) setWorkerStateLocked(w *worker) {
	switch {
	case w.state == WorkerStopped:
	case w.unhealthy:
		w.state = WorkerUnhealthy
	case w.draining:
		w.state = WorkerDraining
	case w.park != nil && w.park.phase == parkParked:
		w.state = WorkerParked
	case w.frozen:
		w.state = WorkerFrozen
	case !w.ready:
		w.state = WorkerInitializing
	case len(w.held) > 0:
		w.state = WorkerRunning
	default:
		w.state = WorkerIdle
	}
}

func randomToken() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// startWorkerLocked registers a worker and launches it in the background;
// the worker counts as initializing until its first take or ping.
func (s *Scheduler) startWorkerLocked(ep *endpointState) bool {
	id := workerid.New()
	gpus := s.allocateGPUsLocked(ep, id)
	if ep.def.GPUCount > 0 && s.cfg.AllocateGPUs && gpus == nil {
		return false // throttled: no GPU free
	}
	w := &worker{
		gpus:      gpus,
		id:        id,
		endpoint:  ep.def.ID,
		token:     randomToken(),
		state:     WorkerInitializing,
		startedAt: s.now(),
		held:      make(map[string]*job),
		stopCh:    make(chan struct{}),
		thawCh:    make(chan struct{}),

		generation: ep.def.Generation,
	}
	ep.stats.started++
	if !s.cfg.InMemoryStore {
		w.dir = filepath.Join(s.cfg.DataDir, "workers", id)
		w.logPath = filepath.Join(s.cfg.DataDir, "workers", id+".log")
	} else {
		w.dir = os.TempDir()
		w.logPath = os.DevNull
	}
	ep.workers[id] = w
	s.workers[id] = w
	spec := oci.Spec{
		ID:       id,
		Endpoint: ep.def.ID,
		Image:    ep.def.Image,
		Command:  append([]string(nil), ep.def.Command...),
		Env:      s.workerEnv(ep, w),
		LogPath:  w.logPath,
		Dir:      w.dir,
		Resources: oci.Resources{
			MemoryBytes: int64(ep.def.MemoryMB) << 20,
			CPUs:        ep.def.CPUs,
			PidsLimit:   int64(ep.def.PidsLimit),
		},
		Network: ep.def.Network,
		GPUs:    gpus,
		NoInit:  ep.def.NoInit,
	}
	if !s.cfg.InMemoryStore {
		// One volume per endpoint, shared by its workers, at /runpod-volume
		// (where RunPod mounts network volumes and workers keep caches).
		spec.VolumeDir = filepath.Join(s.cfg.DataDir, "volumes", ep.def.ID)
	}
	s.rememberWorker(w)
	s.log.Info("starting worker", "worker", id, "endpoint", ep.def.ID, "runtime", s.cfg.Runtime.Name(), "gpus", gpus)
	s.goOwned(func() { s.runWorker(w, spec) })
	return true
}

// runWorker owns one worker from start to exit.
func (s *Scheduler) runWorker(w *worker, ws oci.Spec) {
	if ws.VolumeDir != "" {
		if err := os.MkdirAll(ws.VolumeDir, 0o750); err != nil {
			s.workerExited(w, oci.ExitStatus{Code: -1, Err: err})
			return
		}
	}
	if ws.Dir != os.TempDir() {
		if err := os.MkdirAll(ws.Dir, 0o750); err != nil {
			s.workerExited(w, oci.ExitStatus{Code: -1, Err: err})
			return
		}
		defer os.RemoveAll(ws.Dir)
	}
	h, err := s.cfg.Runtime.Start(s.ctx, ws)
	if err != nil {
		s.log.Error("worker failed to start", "worker", w.id, "endpoint", w.endpoint, "err", err)
		s.mu.Lock()
		w.reason = err.Error() // what `ember worker list` and a failed job show
		s.mu.Unlock()
		s.workerExited(w, oci.ExitStatus{Code: -1, Err: err})
		return
	}
	s.mu.Lock()
	w.handle = h
	stopNow := w.draining
	s.mu.Unlock()
	if ws.Network == spec.NetworkNone && s.cfg.ServeInNetns != nil {
		// The worker's network namespace has only loopback: emberd serves
		// the worker API there too, on the same address.
		closer, err := s.cfg.ServeInNetns(h.PID())
		if err != nil {
			s.log.Error("serve the worker API in the worker's network namespace", "worker", w.id, "err", err)
			h.Kill()
		} else {
			defer closer.Close()
		}
	}
	if stopNow {
		h.Stop(s.tun().StopGrace)
	}
	select {
	case <-h.Done():
	case <-s.ctx.Done():
		h.Kill()
		<-h.Done()
	}
	s.workerExited(w, h.Exit())
}

// workerExited re-queues what the worker held and applies crash-loop
// back-off when it died before ever becoming ready.
func (s *Scheduler) workerExited(w *worker, st oci.ExitStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.state = WorkerStopped
	hadGPUs := len(w.gpus) > 0
	s.releaseGPUsLocked(w)
	s.parkExitedLocked(w)
	b := s.store.NewBatch()
	b.DeleteWorker(w.id)
	s.store.CommitAsync(b)
	delete(s.workers, w.id)
	ep := s.endpoints[w.endpoint]
	if ep != nil {
		rememberStoppedLocked(ep, w)
	}
	if ep != nil {
		delete(ep.workers, w.id)
	}
	reason := "worker " + st.String()
	if w.retired {
		reason += " after it was stopped (" + w.retiredWhy + ")"
	}
	for _, j := range w.held {
		if j.finalizing {
			continue
		}
		if st.OOMKilled {
			// Running it again would run out of memory again: fail now,
			// saying why, instead of burning the remaining attempts.
			j.pastWorkers = append(j.pastWorkers, w.id)
			s.releaseLocked(j)
			s.goOwned(func() { s.failLost(j, reason) })
			continue
		}
		s.requeueLocked(j, reason, !w.retired)
	}
	clean := st.Err == nil && st.Code == 0 && w.draining
	if clean {
		s.log.Info("worker stopped", "worker", w.id, "endpoint", w.endpoint)
	} else {
		s.log.Warn("worker exited", "worker", w.id, "endpoint", w.endpoint, "status", st.String(), "log", w.logPath)
	}
	if ep == nil || s.closed {
		return
	}
	if w.unhealthy || (!w.ready && !w.draining) {
		// A crash before the first take, a missed init timeout or an
		// unhealthy report: shown until a worker of the endpoint is ready
		// again, and new workers back off exponentially.
		info := WorkerInfo{ID: w.id, EndpointID: w.endpoint, State: WorkerUnhealthy, StartedAt: w.startedAt,
			SDKVersion: w.version, Reason: w.reason, LogPath: w.logPath, Jobs: []string{}}
		if info.Reason == "" {
			info.Reason = reason + " before its first job-take"
		}
		ep.ghosts = append(ep.ghosts, info)
		if len(ep.ghosts) > maxGhosts {
			ep.ghosts = ep.ghosts[len(ep.ghosts)-maxGhosts:]
		}
		s.backOffLocked(ep, w, info.Reason)
		if !w.ready {
			s.startFailedLocked(ep, info.Reason)
		}
	}
	if hadGPUs {
		// Its GPUs are free: endpoints waiting for one go first (they may
		// have reclaimed this very worker).
		for _, other := range s.endpoints {
			if other != ep && other.throttled > 0 {
				s.scaleLocked(other)
			}
		}
	}
	s.scaleLocked(ep)
}

// backOffLocked delays the endpoint's next worker start after an unhealthy
// one, exponentially in the number of unhealthy workers in a row (1 s to
// 64 s), once per worker.
func (s *Scheduler) backOffLocked(ep *endpointState, w *worker, reason string) {
	if w.backedOff {
		return
	}
	w.backedOff = true
	ep.failures++
	backoff := time.Second << min(ep.failures-1, 6)
	ep.nextStart = s.now().Add(backoff)
	s.log.Warn("worker unhealthy; backing off", "worker", w.id, "endpoint", ep.def.ID, "reason", reason, "failures", ep.failures, "retry_in", backoff)
}

// maxGhosts bounds the unhealthy workers an endpoint keeps showing.
const maxGhosts = 8

// drainWorkerLocked stops a worker: no new jobs (its pending take answers
// 204 at once), its pending job-stop poll answered at once too, SIGTERM so
// the SDK finishes in-flight jobs, SIGKILL after the stop grace.
func (s *Scheduler) drainWorkerLocked(w *worker, why string) {
	if w.draining {
		return
	}
	w.draining = true
	s.setWorkerStateLocked(w)
	if ep := s.endpoints[w.endpoint]; ep != nil {
		// Wake the worker's pending take so it returns empty now.
		ep.wakeWorker(w.id)
	}
	// runpod-python exits only once its take and its stop poll have both
	// returned: a stop poll held for --stop-hold would keep an idle worker,
	// and its GPU, that long. StopSignals answers a draining worker at once.
	s.wakeStopPollLocked(w)
	s.log.Info("stopping worker", "worker", w.id, "endpoint", w.endpoint, "reason", why)
	if w.handle != nil {
		w.handle.Stop(s.tun().StopGrace)
		if w.park != nil {
			// Parked (or parking): nothing to drain, and its CUDA calls
			// would block on the driver's lock until the stop grace.
			w.handle.Kill()
		}
	}
}

// retireWorkerLocked stops a worker for no fault of its own: the operator
// asked, its endpoint no longer needs it (idle timeout, deletion, a stopPod
// request), another endpoint needs its GPU, or emberd is stopping. The
// jobs it holds when it exits go back to the queue without using up an
// attempt, so stopping a worker never fails a job. A worker already
// stopping for a fault (unhealthy, silent) stays counted.
func (s *Scheduler) retireWorkerLocked(w *worker, why string) {
	if !w.draining {
		w.retired = true
		w.retiredWhy = why
	}
	s.drainWorkerLocked(w, why)
}

// maybeRecycleLocked stops a worker that asked for it (stopPod), or that
// an update of its endpoint outdated (rolling.go), once it has no job left.
func (s *Scheduler) maybeRecycleLocked(w *worker) {
	if len(w.held) > 0 || w.draining {
		return
	}
	switch {
	case w.recycle:
		s.retireWorkerLocked(w, "stopPod requested by the worker")
	case w.outdated:
		s.retireWorkerLocked(w, "its jobs ended after its endpoint was updated")
	}
}

// workerEnv is the RunPod worker environment (docs/compat.md): the
// endpoint's own variables first, then the protocol variables, which must
// win.
func (s *Scheduler) workerEnv(ep *endpointState, w *worker) []string {
	var env []string
	keys := make([]string, 0, len(ep.def.Env))
	for k := range ep.def.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+ep.def.Env[k])
	}
	host, _ := os.Hostname()
	return append(env, runpod.Worker{
		APIBase:      s.cfg.WorkerAPIBase,
		EndpointID:   ep.def.ID,
		WorkerID:     w.id,
		Token:        w.token,
		PingInterval: s.tun().PingInterval,
		Hostname:     host,
		GPUCount:     ep.def.GPUCount,
		CPUCount:     runtime.NumCPU(),
	}.Env()...)
}

// rememberWorker records a starting worker, so that a restarted emberd can
// take its container back. The write rides along with the next durable one:
// a worker lost with it is a container destroyed at restart, nothing worse.
func (s *Scheduler) rememberWorker(w *worker) {
	s.store.CommitAsync(s.workerBatchLocked(w))
}

// adoptWorkers takes back the workers of an earlier emberd whose containers
// still run, before the jobs are recovered so that their jobs stay with
// them. Records of workers not taken back are dropped.
func (s *Scheduler) adoptWorkers() map[string]*worker {
	recs, err := s.store.Workers(s.ctx)
	if err != nil {
		s.log.Warn("load worker records", "err", err)
		return nil
	}
	adopted := make(map[string]*worker)
	b := s.store.NewBatch()
	for _, r := range recs {
		ep := s.endpoints[r.Endpoint]
		var h oci.Worker
		if ep != nil && s.cfg.Adopt != nil {
			h, err = s.cfg.Adopt(r)
		}
		if ep == nil || h == nil || err != nil {
			b.DeleteWorker(r.ID)
			continue
		}
		w := &worker{
			id: r.ID, endpoint: r.Endpoint, token: r.Token, gpus: r.GPUs, handle: h,
			startedAt: time.UnixMilli(r.StartedAt), ready: true, lastActive: s.now(),
			held: make(map[string]*job), stopCh: make(chan struct{}), thawCh: make(chan struct{}),
			logPath: r.LogPath, dir: r.Dir, generation: max(r.Generation, 1),
		}
		if f, ok := h.(oci.Freezer); ok {
			// It may have been frozen (FlashBoot) when the earlier emberd
			// went away; a running worker is what the queue expects. A
			// parked one is thawed too: its CUDA processes stay locked
			// and checkpointed, and it waits for a job as parked.
			f.Thaw()
		}
		keep, why := s.adoptParkedLocked(w, r)
		// A parked worker's GPUs may be another's now: it claims them
		// only when it is taken back running.
		if w.park == nil && (r.Park == nil || keep) {
			for _, u := range r.GPUs {
				s.gpuOwner[u] = w.id
			}
		}
		ep.workers[w.id] = w
		s.workers[w.id] = w
		s.setWorkerStateLocked(w)
		if !keep {
			s.log.Warn("worker taken back after restart is stopped", "worker", w.id, "endpoint", w.endpoint, "reason", why)
			s.retireWorkerLocked(w, why)
			h.Kill()
		}
		adopted[w.id] = w
		s.goOwned(func() { s.watchAdopted(w, h) })
		s.log.Info("worker taken back after restart", "worker", w.id, "endpoint", w.endpoint)
	}
	if b.Len() > 0 {
		s.store.CommitAsync(b)
	}
	return adopted
}

// watchAdopted owns an adopted worker until it exits.
func (s *Scheduler) watchAdopted(w *worker, h oci.Worker) {
	select {
	case <-h.Done():
	case <-s.ctx.Done():
		h.Kill()
		<-h.Done()
	}
	s.workerExited(w, h.Exit())
}

// StopWorker drains a worker on request (`ember worker stop`): it takes no
// new job, its running jobs finish up to the stop grace, then it is killed.
// Jobs it did not finish go back to the queue without using up an attempt.
// The autoscaler starts a replacement if the endpoint still needs one.
func (s *Scheduler) StopWorker(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[id]
	if !ok {
		return fmt.Errorf("%w: worker %s", ErrNotFound, id)
	}
	s.retireWorkerLocked(w, "stopped by the operator")
	return nil
}
