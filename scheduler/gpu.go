package scheduler

import (
	"fmt"
	"strings"
)

// GPU is one GPU the scheduler may give to workers.
type GPU struct {
	UUID string
	// Name is the model name as NVML reports it ("NVIDIA H100 80GB HBM3").
	Name        string
	MemoryBytes uint64
}

// gpuMatches reports whether a GPU fits an endpoint's gpuTypes entry: the
// model name, compared case-insensitively, equal or containing the entry
// ("H100" matches "NVIDIA H100 80GB HBM3").
func gpuMatches(g GPU, want string) bool {
	return strings.Contains(strings.ToLower(g.Name), strings.ToLower(strings.TrimSpace(want)))
}

// candidatesLocked lists the GPUs an endpoint may use, in its gpuTypes
// priority order (all GPUs, in inventory order, when it names none).
func (s *Scheduler) candidatesLocked(ep *endpointState) []GPU {
	if len(ep.def.GPUTypes) == 0 {
		return s.cfg.GPUs
	}
	var out []GPU
	seen := make(map[string]bool)
	for _, t := range ep.def.GPUTypes {
		for _, g := range s.cfg.GPUs {
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
// concurrent scale-ups cannot pick the same one.
func (s *Scheduler) allocateGPUsLocked(ep *endpointState, workerID string) []string {
	n := ep.def.GPUCount
	if n == 0 || !s.cfg.AllocateGPUs {
		return nil
	}
	var picked []string
	for _, g := range s.candidatesLocked(ep) {
		if _, busy := s.gpuOwner[g.UUID]; !busy {
			picked = append(picked, g.UUID)
			if len(picked) == n {
				break
			}
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
	probe.def.GPUTypes = types
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
	if len(names) == 0 {
		return fieldErr("gpuCount", "is %d, but this machine has no GPU (NVML found none); use gpuCount 0 for CPU workers", gpuCount)
	}
	return fieldErr("gpuCount", "is %d, but this machine has only %d %s (it has: %s)", gpuCount, len(have), what, strings.Join(names, ", "))
}
