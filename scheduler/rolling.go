package scheduler

import (
	"fmt"
	"maps"
	"slices"

	"github.com/emberhq/ember/scheduler/store"
)

// Rolling updates. An endpoint has a generation, 1 when created. An update
// that changes what a worker runs raises it, and the workers of older
// generations are replaced:
//
//   - idle, frozen and still-initializing ones are stopped at once (retired:
//     a job they hold goes back without using up an attempt);
//   - busy ones are outdated: they take no new job and are stopped once the
//     jobs they hold have ended, so no job is cut short by the update;
//   - neither counts as capacity (takesJobs), so the scaler starts workers
//     of the new generation for the queue and for workersMin at once, next
//     to the old ones still finishing. workersMax bounds the new generation
//     only: like any draining worker, an outdated one is not counted, so a
//     busy endpoint briefly runs more containers than workersMax (the old
//     ones' GPUs, if any, are only free once they exit: a new worker that
//     needs one is throttled until then).

// changesWorkers reports whether going from old to new changes what a
// worker runs, which raises the generation. The fields that do are the ones
// the worker's container is made from (startWorkerLocked, workerEnv):
//
//   - image, command, env: the process and its environment;
//   - memoryMb, cpus, pidsLimit: its cgroup limits;
//   - network: its network namespace;
//   - init: whether ember-init is its container's PID 1;
//   - gpuCount: the GPUs it holds and RUNPOD_GPU_COUNT in its environment;
//   - gpuTypes, gpuMemoryMb: which GPUs it may be placed on (a worker on a
//     GPU the endpoint no longer accepts must move).
//
// The others are policy the scheduler applies around unchanged workers and
// take effect at once without replacing any: name; workersMin, workersMax,
// idleTimeout, scalerType, scalerValue (scaling); executionTimeoutMs and
// maxAttempts (per job, read when a job is queued or handed out);
// initTimeout (checked against running workers as they start); flashboot,
// flashbootWindow, gpuPark and gpuParkDelay (what happens to a worker once
// idle).
func changesWorkers(old, new *store.Endpoint) bool {
	return old.Image != new.Image ||
		!slices.Equal(old.Command, new.Command) ||
		!maps.Equal(old.Env, new.Env) ||
		old.MemoryMB != new.MemoryMB ||
		old.CPUs != new.CPUs ||
		old.PidsLimit != new.PidsLimit ||
		old.Network != new.Network ||
		old.NoInit != new.NoInit ||
		old.GPUCount != new.GPUCount ||
		!slices.Equal(old.GPUTypes, new.GPUTypes) ||
		old.GPUMemoryMB != new.GPUMemoryMB
}

// outdatedLocked reports whether w was started with an older generation of
// its endpoint than the current one.
func (ep *endpointState) outdatedLocked(w *worker) bool {
	return w.generation < ep.def.Generation
}

// rollLocked replaces the endpoint's workers of older generations (see
// above): idle, frozen and initializing ones are retired now, busy ones
// are marked to stop once their jobs end. The caller runs the scaler,
// which starts their replacements.
func (s *Scheduler) rollLocked(ep *endpointState) {
	why := fmt.Sprintf("endpoint updated to generation %d", ep.def.Generation)
	for _, w := range ep.workers {
		if w.draining || !ep.outdatedLocked(w) {
			continue
		}
		if len(w.held) == 0 {
			s.retireWorkerLocked(w, why)
			continue
		}
		if !w.outdated {
			w.outdated = true
			// Its pending takes were waiting for jobs; they now wait for
			// the worker's stop (Take) and are answered empty then.
			ep.wakeWorker(w.id)
			s.log.Info("worker finishes its jobs, then stops", "worker", w.id, "endpoint", w.endpoint,
				"reason", why, "jobs", len(w.held))
		}
	}
}
