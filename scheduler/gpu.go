package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emberhq/ember/scheduler/spec"
)

// GPU is one GPU the scheduler may give to workers.
type GPU struct {
	UUID string `json:"uuid"`
	// Name is the model name as NVML reports it ("NVIDIA H100 80GB HBM3").
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memoryBytes"`
	// MIG marks a MIG instance (UUID "MIG-..."): placed like a GPU, with
	// its own memory, but only as a worker's one GPU, because CUDA uses one
	// MIG instance per process.
	MIG bool `json:"mig,omitempty"`
}

// gpuMatches reports whether a GPU fits an endpoint's gpuTypes entry: the
// model name, compared case-insensitively, equal or containing the entry
// ("H100" matches "NVIDIA H100 80GB HBM3").
func gpuMatches(g GPU, want string) bool {
	return strings.Contains(strings.ToLower(g.Name), strings.ToLower(strings.TrimSpace(want)))
}

// candidatesLocked lists the GPUs an endpoint may use, in its gpuTypes
// priority order (all GPUs, in inventory order, when it names none).
// A worker with more than one GPU gets whole GPUs only (see GPU.MIG).
func (s *Scheduler) candidatesLocked(ep *endpointState) []GPU {
	all := s.cfg.GPUs
	if ep.def.GPUCount > 1 && slices.ContainsFunc(all, func(g GPU) bool { return g.MIG }) {
		all = slices.DeleteFunc(slices.Clone(all), func(g GPU) bool { return g.MIG })
	}
	if len(ep.def.GPUTypes) == 0 {
		return all
	}
	var out []GPU
	seen := make(map[string]bool)
	for _, t := range ep.def.GPUTypes {
		for _, g := range all {
			if !seen[g.UUID] && gpuMatches(g, t) {
				seen[g.UUID] = true
				out = append(out, g)
			}
		}
	}
	return out
}

// allocateGPUsLocked picks gpuCount free GPUs for a new worker of ep, or
// returns nil when not enough are free. GPUs are exclusive: a GPU belongs
// to at most one live worker, and all choices happen under s.mu, so two
// concurrent scale-ups cannot pick the same one. GPUs marked unhealthy, and
// GPUs with less free memory than the endpoint's gpuMemoryMb, are skipped.
func (s *Scheduler) allocateGPUsLocked(ep *endpointState, workerID string) []string {
	n := ep.def.GPUCount
	if n == 0 || !s.cfg.AllocateGPUs {
		return nil
	}
	var picked []string
	for _, g := range s.candidatesLocked(ep) {
		if _, busy := s.gpuOwner[g.UUID]; busy || !s.placeableLocked(ep, g) {
			continue
		}
		picked = append(picked, g.UUID)
		if len(picked) == n {
			break
		}
	}
	if len(picked) < n {
		return nil
	}
	for _, u := range picked {
		s.gpuOwner[u] = workerID
	}
	return picked
}

// placeableLocked says whether an unowned GPU may be given to a worker of
// ep: it is healthy and has the free memory the endpoint asks for (memory
// other processes on the machine use counts against it).
func (s *Scheduler) placeableLocked(ep *endpointState, g GPU) bool {
	if _, bad := s.badGPUs[g.UUID]; bad {
		return false
	}
	need := uint64(ep.def.GPUMemoryMB) << 20
	if need == 0 || s.cfg.GPUFreeMemory == nil {
		return true
	}
	// scaleLocked runs on every job event: a reading a second old is fresh
	// enough, and keeps NVML calls off the submission path.
	now := s.now()
	r, ok := s.freeMem[g.UUID]
	if !ok || now.Sub(r.at) >= time.Second {
		free, err := s.cfg.GPUFreeMemory(g.UUID)
		if err != nil {
			s.log.Warn("read GPU free memory", "gpu", g.UUID, "err", err)
			return false
		}
		r = freeReading{bytes: free, at: now}
		s.freeMem[g.UUID] = r
	}
	return r.bytes >= need
}

// freeReading is a GPU's free memory as NVML last reported it.
type freeReading struct {
	bytes uint64
	at    time.Time
}

// reclaimGPUsLocked makes room for a worker of ep that could not be
// placed: when not enough of the GPUs it may use are free or being freed,
// it stops workers of other endpoints that sit on such GPUs without work:
// frozen workers first (they hold GPU memory and nothing else), then idle
// ones, least recently used first. Workers an endpoint keeps as its
// workersMin are left alone unless frozen, and so are idle workers of an
// endpoint with jobs waiting (they are about to take one).
func (s *Scheduler) reclaimGPUsLocked(ep *endpointState) {
	need := ep.def.GPUCount
	if need == 0 || !s.cfg.AllocateGPUs {
		return
	}
	wanted, have := s.gpuSupplyLocked(ep)
	if have >= need {
		return
	}
	for _, v := range s.gpuVictimsLocked(ep, wanted) {
		if have >= need {
			break
		}
		owner := s.endpoints[v.w.endpoint]
		if owner == nil || (!v.w.frozen && owner.capacity().alive <= owner.def.WorkersMin) {
			continue // an earlier victim took it down to its minimum
		}
		owner.stats.reclaimed++
		if s.parkableLocked(owner, v.w, false) {
			// Parked instead of stopped: its GPUs are free once its GPU
			// state is in host memory (gpuSupplyLocked counts them).
			s.parkLocked(owner, v.w, true)
			have += v.gpus
			continue
		}
		s.retireWorkerLocked(v.w, fmt.Sprintf("GPU reclaimed for endpoint %s", ep.def.ID))
		if v.w.frozen && v.w.handle != nil {
			// Frozen: nothing to drain; the runtime thaws and kills it.
			v.w.handle.Kill()
		}
		have += v.gpus
	}
}

// gpuSupplyLocked returns the healthy GPUs that ep may use (wanted, by
// UUID) and how many of them a worker of ep could have soon: free and
// placeable, or held by a worker on its way out.
func (s *Scheduler) gpuSupplyLocked(ep *endpointState) (wanted map[string]bool, have int) {
	cands := s.candidatesLocked(ep)
	wanted = make(map[string]bool, len(cands))
	for _, g := range cands {
		owner, busy := s.gpuOwner[g.UUID]
		if _, bad := s.badGPUs[g.UUID]; bad {
			continue
		}
		wanted[g.UUID] = true
		if !busy {
			if s.placeableLocked(ep, g) {
				have++
			}
			continue
		}
		if w := s.workers[owner]; w != nil && (w.draining || (w.park != nil && w.park.phase == parkParking)) {
			have++ // on its way out, or being parked
		}
	}
	return wanted, have
}

// gpuVictim is a worker that may be stopped to free gpus of the GPUs
// another endpoint wants.
type gpuVictim struct {
	w    *worker
	gpus int
}

// gpuVictimsLocked lists the workers of endpoints other than ep that hold
// GPUs in wanted and may give them up (reclaimable), in the order they
// are reclaimed.
func (s *Scheduler) gpuVictimsLocked(ep *endpointState, wanted map[string]bool) []gpuVictim {
	var victims []gpuVictim
	for _, w := range s.workers {
		if w.endpoint == ep.def.ID || !reclaimable(w, s.endpoints[w.endpoint]) {
			continue
		}
		n := 0
		for _, u := range w.gpus {
			if wanted[u] {
				n++
			}
		}
		if n > 0 {
			victims = append(victims, gpuVictim{w, n})
		}
	}
	// First the holders of GPUs a parked worker of ep waits for (it
	// revives there, without a cold start), then those that can be parked
	// rather than stopped, then frozen ones, then the least recently used.
	type key struct{ blocking, parkable bool }
	keys := make(map[*worker]key, len(victims))
	for _, v := range victims {
		k := key{parkable: s.parkableLocked(s.endpoints[v.w.endpoint], v.w, false)}
		for _, u := range v.w.gpus {
			k.blocking = k.blocking || parkedFor(ep, u)
		}
		keys[v.w] = k
	}
	sort.Slice(victims, func(i, j int) bool {
		a, b := victims[i].w, victims[j].w
		ka, kb := keys[a], keys[b]
		if ka.blocking != kb.blocking {
			return ka.blocking
		}
		if ka.parkable != kb.parkable {
			return ka.parkable
		}
		if a.frozen != b.frozen {
			return a.frozen
		}
		return a.lastActive.Before(b.lastActive)
	})
	return victims
}

// reclaimable says whether w, a worker of owner (nil when that endpoint is
// gone), may be stopped for another endpoint's GPUs: it holds no job and is
// not already leaving, and it is frozen, or idle (not thawing) in an
// endpoint above its workersMin with no jobs waiting. s.mu is held.
func reclaimable(w *worker, owner *endpointState) bool {
	if w.draining || len(w.held) > 0 || w.park != nil {
		return false
	}
	if w.frozen {
		return true
	}
	if w.state != WorkerIdle || w.thawing || owner == nil || owner.inQueue-owner.lowQueued > 0 {
		return false
	}
	return owner.capacity().alive > owner.def.WorkersMin
}

// MarkGPUUnhealthy takes a GPU out of placement (NVML reported a critical
// XID or ECC error) and stops the worker using it; the jobs it held go back
// to the queue.
func (s *Scheduler) MarkGPUUnhealthy(uuid, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, already := s.badGPUs[uuid]; already {
		return
	}
	s.badGPUs[uuid] = reason
	s.log.Error("GPU unhealthy: taken out of placement", "gpu", uuid, "reason", reason)
	if w := s.workers[s.gpuOwner[uuid]]; w != nil {
		w.unhealthy = true
		w.reason = "its GPU " + uuid + " is unhealthy: " + reason
		s.drainWorkerLocked(w, w.reason)
	}
}

// GPUInfo is one GPU as `ember gpu list` shows it.
type GPUInfo struct {
	GPU
	// Worker and EndpointID say who holds it ("" when free).
	Worker     string `json:"worker,omitempty"`
	EndpointID string `json:"endpointId,omitempty"`
	// Unhealthy is the reason it was taken out of placement.
	Unhealthy string `json:"unhealthy,omitempty"`
}

// GPUs lists the machine's GPUs with their holders and health.
func (s *Scheduler) GPUs() []GPUInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]GPUInfo, 0, len(s.cfg.GPUs))
	for _, g := range s.cfg.GPUs {
		info := GPUInfo{GPU: g, Unhealthy: s.badGPUs[g.UUID]}
		if w := s.workers[s.gpuOwner[g.UUID]]; w != nil {
			info.Worker, info.EndpointID = w.id, w.endpoint
		}
		out = append(out, info)
	}
	return out
}

// releaseGPUsLocked frees a stopped worker's GPUs.
func (s *Scheduler) releaseGPUsLocked(w *worker) {
	for _, u := range w.gpus {
		if s.gpuOwner[u] == w.id {
			delete(s.gpuOwner, u)
		}
	}
	w.gpus = nil
}

// checkGPUFit refuses an endpoint that could never be placed on this
// machine: more GPUs per worker than there are GPUs of its types.
func (s *Scheduler) checkGPUFit(gpuCount int, types []string) error {
	if gpuCount == 0 || !s.cfg.AllocateGPUs {
		return nil
	}
	probe := &endpointState{}
	probe.def.GPUTypes, probe.def.GPUCount = types, gpuCount
	have := s.candidatesLocked(probe)
	if len(have) >= gpuCount {
		return nil
	}
	var names []string
	for _, g := range s.cfg.GPUs {
		names = append(names, g.Name)
	}
	what := "GPUs"
	if len(types) > 0 {
		what = fmt.Sprintf("GPUs of types %q", types)
	}
	if gpuCount > 1 && slices.ContainsFunc(s.cfg.GPUs, func(g GPU) bool { return g.MIG }) {
		what += " usable together (a MIG instance is only ever a worker's one GPU)"
	}
	if len(names) == 0 {
		return spec.Errorf("gpuCount", "is %d, but this machine has no GPU (NVML found none); use gpuCount 0 for CPU workers", gpuCount)
	}
	return spec.Errorf("gpuCount", "is %d, but this machine has only %d %s (it has: %s)", gpuCount, len(have), what, strings.Join(names, ", "))
}
