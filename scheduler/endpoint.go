package scheduler

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/store"
)

// EndpointSpec is a create or update request. Nil pointers mean "not given":
// on create the RunPod default applies, on update the value is kept.
type EndpointSpec struct {
	Name               *string
	Image              *string
	Command            *[]string
	Env                *map[string]string
	WorkersMin         *int
	WorkersMax         *int
	IdleTimeout        *int // seconds
	ExecutionTimeoutMs *int64
	ScalerType         *string
	ScalerValue        *int
	GPUCount           *int
	GPUTypes           *[]string
	MemoryMB           *int
	CPUs               *float64
	PidsLimit          *int
	Network            *string
	InitTimeout        *int // seconds
	Flashboot          *bool
	FlashbootWindow    *int // seconds
	MaxAttempts        *int
	GPUMemoryMB        *int
	// Init: false runs the worker's entrypoint as its container's PID 1,
	// without the runtime's init.
	Init *bool
}

// RunPod's endpoint defaults (docs/compat.md, Endpoint configuration).
const (
	DefaultWorkersMax         = 3
	DefaultIdleTimeoutSec     = 5
	DefaultExecutionTimeoutMs = 600_000
	DefaultScalerValue        = 4
	DefaultGPUCount           = 1
	ScalerQueueDelay          = "QUEUE_DELAY"
	ScalerRequestCount        = "REQUEST_COUNT"
	DefaultPidsLimit          = 4096
	// DefaultInitTimeoutSec is how long a new worker may load (pull
	// weights, compile kernels) before its first job-take or ping.
	DefaultInitTimeoutSec = 420
	// DefaultFlashbootWindowSec is how long a frozen worker is kept for
	// revival before it is stopped.
	DefaultFlashbootWindowSec = 300
	maxAttemptsLimit          = 100
	NetworkHost               = "host"
	NetworkNone               = "none"
	maxWorkersLimit           = 1000
	maxGPUsPerWorker          = 16
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func (sp EndpointSpec) apply(e *store.Endpoint) {
	if sp.Name != nil {
		e.Name = *sp.Name
	}
	if sp.Image != nil {
		e.Image = *sp.Image
	}
	if sp.Command != nil {
		e.Command = append([]string(nil), (*sp.Command)...)
	}
	if sp.Env != nil {
		e.Env = make(map[string]string, len(*sp.Env))
		for k, v := range *sp.Env {
			e.Env[k] = v
		}
	}
	if sp.WorkersMin != nil {
		e.WorkersMin = *sp.WorkersMin
	}
	if sp.WorkersMax != nil {
		e.WorkersMax = *sp.WorkersMax
	}
	if sp.IdleTimeout != nil {
		e.IdleTimeoutSec = *sp.IdleTimeout
	}
	if sp.ExecutionTimeoutMs != nil {
		e.ExecutionTimeoutMs = *sp.ExecutionTimeoutMs
	}
	if sp.ScalerType != nil {
		e.ScalerType = *sp.ScalerType
	}
	if sp.ScalerValue != nil {
		e.ScalerValue = *sp.ScalerValue
	}
	if sp.GPUCount != nil {
		e.GPUCount = *sp.GPUCount
	}
	if sp.GPUTypes != nil {
		e.GPUTypes = append([]string(nil), (*sp.GPUTypes)...)
	}
	if sp.MemoryMB != nil {
		e.MemoryMB = *sp.MemoryMB
	}
	if sp.CPUs != nil {
		e.CPUs = *sp.CPUs
	}
	if sp.PidsLimit != nil {
		e.PidsLimit = *sp.PidsLimit
	}
	if sp.Network != nil {
		e.Network = *sp.Network
	}
	if sp.InitTimeout != nil {
		e.InitTimeoutSec = *sp.InitTimeout
	}
	if sp.Flashboot != nil {
		e.Flashboot = *sp.Flashboot
	}
	if sp.FlashbootWindow != nil {
		e.FlashbootWindowSec = *sp.FlashbootWindow
	}
	if sp.MaxAttempts != nil {
		e.MaxAttempts = *sp.MaxAttempts
	}
	if sp.GPUMemoryMB != nil {
		e.GPUMemoryMB = *sp.GPUMemoryMB
	}
	if sp.Init != nil {
		e.NoInit = !*sp.Init
	}
}

func defaultEndpoint() store.Endpoint {
	return store.Endpoint{
		WorkersMax:         DefaultWorkersMax,
		IdleTimeoutSec:     DefaultIdleTimeoutSec,
		ExecutionTimeoutMs: DefaultExecutionTimeoutMs,
		ScalerType:         ScalerQueueDelay,
		ScalerValue:        DefaultScalerValue,
		GPUCount:           DefaultGPUCount,
		PidsLimit:          DefaultPidsLimit,
		Network:            NetworkHost,
		InitTimeoutSec:     DefaultInitTimeoutSec,
		FlashbootWindowSec: DefaultFlashbootWindowSec,
	}
}

// validateEndpoint checks a complete endpoint against RunPod's ranges. The
// messages name the field (by its JSON name) and the limit.
func validateEndpoint(e *store.Endpoint) error {
	switch {
	case e.Name == "":
		return fieldErr("name", "is required")
	case len(e.Name) > limits.EndpointName:
		return fieldErr("name", "is %d characters, over the limit of %d", len(e.Name), limits.EndpointName)
	case !nameRE.MatchString(e.Name):
		return fieldErr("name", "must be 1-%d characters of letters, digits, '.', '_' or '-', starting with a letter or digit", limits.EndpointName)
	case len(e.Image) > limits.ImageRef:
		return fieldErr("image", "is %d characters, over the limit of %d", len(e.Image), limits.ImageRef)
	case len(e.Command) > limits.CommandArgs:
		return fieldErr("command", "has %d arguments, over the limit of %d", len(e.Command), limits.CommandArgs)
	case len(e.Env) > limits.EnvEntries:
		return fieldErr("env", "has %d variables, over the limit of %d", len(e.Env), limits.EnvEntries)
	case e.WorkersMin < 0 || e.WorkersMin > maxWorkersLimit:
		return fieldErr("workersMin", "must be between 0 and %d", maxWorkersLimit)
	case e.WorkersMax < 1 || e.WorkersMax > maxWorkersLimit:
		return fieldErr("workersMax", "must be between 1 and %d", maxWorkersLimit)
	case e.WorkersMin > e.WorkersMax:
		return fieldErr("workersMin", "(%d) must not exceed workersMax (%d)", e.WorkersMin, e.WorkersMax)
	case e.IdleTimeoutSec < 1 || e.IdleTimeoutSec > 3600:
		return fieldErr("idleTimeout", "must be between 1 and 3600 seconds")
	case e.ExecutionTimeoutMs < MinExecutionTimeoutMs || e.ExecutionTimeoutMs > MaxExecutionTimeoutMs:
		return fieldErr("executionTimeoutMs", "must be between %d and %d ms (5 s to 7 days)", MinExecutionTimeoutMs, MaxExecutionTimeoutMs)
	case e.ScalerType != ScalerQueueDelay && e.ScalerType != ScalerRequestCount:
		return fieldErr("scalerType", "must be %s or %s", ScalerQueueDelay, ScalerRequestCount)
	case e.ScalerValue < 1 || e.ScalerValue > 3600:
		return fieldErr("scalerValue", "must be between 1 and 3600")
	case e.GPUCount < 0 || e.GPUCount > maxGPUsPerWorker:
		return fieldErr("gpuCount", "must be between 0 and %d", maxGPUsPerWorker)
	case len(e.GPUTypes) > 8:
		return fieldErr("gpuTypes", "has more than 8 entries")
	case e.MemoryMB < 0 || e.MemoryMB > 16<<20:
		return fieldErr("memoryMb", "must be between 0 (no limit) and %d MiB", 16<<20)
	case e.MemoryMB > 0 && e.MemoryMB < 16:
		return fieldErr("memoryMb", "must be at least 16 MiB (or 0 for no limit)")
	case e.CPUs < 0 || e.CPUs > 1024:
		return fieldErr("cpus", "must be between 0 (no limit) and 1024")
	case e.CPUs > 0 && e.CPUs < 0.01:
		return fieldErr("cpus", "must be at least 0.01 (or 0 for no limit)")
	case e.PidsLimit < 0 || e.PidsLimit > 1<<22:
		return fieldErr("pidsLimit", "must be between 0 (no limit) and %d", 1<<22)
	case e.Network != NetworkHost && e.Network != NetworkNone:
		return fieldErr("network", "must be %q or %q", NetworkHost, NetworkNone)
	case e.InitTimeoutSec < 10 || e.InitTimeoutSec > 86400:
		return fieldErr("initTimeout", "must be between 10 and 86400 seconds (1 day)")
	case e.FlashbootWindowSec < 1 || e.FlashbootWindowSec > 86400:
		return fieldErr("flashbootWindow", "must be between 1 and 86400 seconds (1 day)")
	case e.MaxAttempts < 0 || e.MaxAttempts > maxAttemptsLimit:
		return fieldErr("maxAttempts", "must be between 0 (the daemon's --max-attempts) and %d", maxAttemptsLimit)
	case e.GPUMemoryMB < 0 || e.GPUMemoryMB > 16<<20:
		return fieldErr("gpuMemoryMb", "must be between 0 (any) and %d MiB", 16<<20)
	case e.GPUMemoryMB > 0 && e.GPUCount == 0:
		return fieldErr("gpuMemoryMb", "is set but gpuCount is 0 (a CPU endpoint uses no GPU)")
	}
	cmdTotal := 0
	for i, a := range e.Command {
		if a == "" && i == 0 {
			return fieldErr("command", "the program (first element) is empty")
		}
		if strings.ContainsRune(a, 0) {
			return fieldErr("command", "argument %d contains a NUL byte", i)
		}
		// Sizes as execve counts them: each string with its NUL.
		if n := len(a) + 1; n > limits.CommandArg {
			return fieldErr("command", "argument %d is %d bytes with its NUL, over the limit of %d bytes per argument", i, n, limits.CommandArg)
		}
		cmdTotal += len(a) + 1
	}
	if cmdTotal > limits.CommandTotal {
		return fieldErr("command", "is %d bytes in all (each argument with its NUL), over the limit of %d bytes", cmdTotal, limits.CommandTotal)
	}
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same error for the same endpoint
	envTotal := 0
	for _, k := range keys {
		v := e.Env[k]
		if !envKeyRE.MatchString(k) {
			return fieldErr("env", "%q is not a valid variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			return fieldErr("env", "value of %s contains a NUL byte", k)
		}
		n := len(k) + 1 + len(v) + 1 // "KEY=VALUE" and its NUL
		if n > limits.EnvEntry {
			return fieldErr("env", "%s is %d bytes as KEY=VALUE with its NUL, over the limit of %d bytes per variable", k, n, limits.EnvEntry)
		}
		envTotal += n
	}
	if envTotal > limits.EnvTotal {
		return fieldErr("env", "is %d bytes in all (each variable as KEY=VALUE with its NUL), over the limit of %d bytes", envTotal, limits.EnvTotal)
	}
	for _, t := range e.GPUTypes {
		if strings.TrimSpace(t) == "" {
			return fieldErr("gpuTypes", "contains an empty entry")
		}
	}
	return nil
}

// CreateEndpoint validates, persists and activates a new endpoint.
func (s *Scheduler) CreateEndpoint(ctx context.Context, sp EndpointSpec) (store.Endpoint, error) {
	e := defaultEndpoint()
	sp.apply(&e)
	if err := validateEndpoint(&e); err != nil {
		return store.Endpoint{}, err
	}
	if err := s.checkRunnable(&e, sp, true); err != nil {
		return store.Endpoint{}, err
	}
	s.mu.Lock()
	err := s.checkGPUFit(e.GPUCount, e.GPUTypes)
	s.mu.Unlock()
	if err != nil {
		return store.Endpoint{}, err
	}
	now := s.now()
	e.ID = newEndpointID()
	e.Generation = 1
	e.CreatedAt, e.UpdatedAt = now.UnixMilli(), now.UnixMilli()

	s.mu.Lock()
	err = s.claimNameLocked(e.Name, e.ID)
	s.mu.Unlock()
	if err != nil {
		return store.Endpoint{}, err
	}
	defer s.releaseName(e.Name, e.ID)

	if err := s.disk.Check(NewWork, 0); err != nil {
		return store.Endpoint{}, err
	}
	b := s.store.NewBatch()
	if err := b.PutEndpoint(&e); err != nil {
		return store.Endpoint{}, err
	}
	if err := s.store.Commit(ctx, b); err != nil {
		return store.Endpoint{}, persistErr("persist endpoint", err)
	}
	s.mu.Lock()
	s.addEndpointLocked(e)
	s.mu.Unlock()
	s.log.Info("endpoint created", "endpoint", e.ID, "name", e.Name)
	s.kick(e.ID)
	return e, nil
}

// claimNameLocked claims name for endpoint id, which is being created or
// renamed to it: it fails with ErrConflict when another endpoint has the
// name, or another create or rename has claimed it and is still
// committing. The name check and the endpoint's arrival in s.endpoints are
// separate critical sections (the store's commit runs between them,
// unlocked); the claim closes that gap. The caller releases it with
// releaseName once the endpoint is in s.endpoints or has failed.
func (s *Scheduler) claimNameLocked(name, id string) error {
	for _, other := range s.endpoints {
		if other.def.Name == name && other.def.ID != id {
			return existsf("an endpoint named %q already exists (%s)", name, other.def.ID)
		}
	}
	if holder, ok := s.claimedNames[name]; ok && holder != id {
		return existsf("an endpoint named %q is being created or renamed (%s)", name, holder)
	}
	s.claimedNames[name] = id
	return nil
}

// releaseName ends id's claim on name (claimNameLocked).
func (s *Scheduler) releaseName(name, id string) {
	s.mu.Lock()
	if s.claimedNames[name] == id {
		delete(s.claimedNames, name)
	}
	s.mu.Unlock()
}

// UpdateEndpoint changes the given fields. A change to what a worker runs
// (changesWorkers) raises the endpoint's generation and replaces the
// workers of older ones (rollLocked); a change of scaling or job policy
// alone applies to the workers there are.
func (s *Scheduler) UpdateEndpoint(ctx context.Context, id string, sp EndpointSpec) (store.Endpoint, error) {
	s.mu.Lock()
	ep, ok := s.endpoints[id]
	if !ok {
		s.mu.Unlock()
		return store.Endpoint{}, fmt.Errorf("%w: endpoint %s", ErrNotFound, id)
	}
	e := cloneEndpoint(ep.def)
	base := cloneEndpoint(ep.def)
	if sp.Name != nil && *sp.Name != e.Name {
		if err := s.claimNameLocked(*sp.Name, id); err != nil {
			s.mu.Unlock()
			return store.Endpoint{}, err
		}
		defer s.releaseName(*sp.Name, id)
	}
	s.mu.Unlock()
	sp.apply(&e)
	if err := validateEndpoint(&e); err != nil {
		return store.Endpoint{}, err
	}
	if err := s.checkRunnable(&e, sp, false); err != nil {
		return store.Endpoint{}, err
	}
	s.mu.Lock()
	err := s.checkGPUFit(e.GPUCount, e.GPUTypes)
	s.mu.Unlock()
	if err != nil {
		return store.Endpoint{}, err
	}
	e.UpdatedAt = s.now().UnixMilli()
	bump := changesWorkers(&base, &e)
	if bump {
		e.Generation++
	}
	if err := s.disk.Check(NewWork, 0); err != nil {
		return store.Endpoint{}, err
	}
	b := s.store.NewBatch()
	if err := b.PutEndpoint(&e); err != nil {
		return store.Endpoint{}, err
	}
	if err := s.store.Commit(ctx, b); err != nil {
		return store.Endpoint{}, persistErr("persist endpoint", err)
	}
	s.mu.Lock()
	if ep, ok := s.endpoints[id]; ok {
		ep.def = e
		// The change may make it startable: try again at once.
		resetStarts(ep)
		if bump {
			s.log.Info("endpoint updated; replacing its workers", "endpoint", id, "generation", e.Generation)
			s.rollLocked(ep)
		}
	}
	s.mu.Unlock()
	s.kick(id)
	return e, nil
}

// Endpoint returns one endpoint definition.
func (s *Scheduler) Endpoint(id string) (store.Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.endpoints[id]
	if !ok {
		return store.Endpoint{}, fmt.Errorf("%w: endpoint %s", ErrNotFound, id)
	}
	return cloneEndpoint(ep.def), nil
}

// Endpoints lists endpoints by creation time.
func (s *Scheduler) Endpoints() []store.Endpoint {
	s.mu.Lock()
	out := make([]store.Endpoint, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		out = append(out, cloneEndpoint(ep.def))
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// DeleteEndpoint removes an endpoint that has no queued or running jobs and
// stops its workers. Refusing instead of cancelling keeps a delete from
// silently discarding accepted work.
func (s *Scheduler) DeleteEndpoint(ctx context.Context, id string) error {
	s.mu.Lock()
	ep, ok := s.endpoints[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: endpoint %s", ErrNotFound, id)
	}
	if ep.inQueue > 0 || ep.inProgress > 0 {
		q, r := ep.inQueue, ep.inProgress
		s.mu.Unlock()
		return conflictf("endpoint %s has %d queued and %d running jobs; purge the queue and cancel running jobs first", id, q, r)
	}
	ep.deleted = true
	s.mu.Unlock()

	b := s.store.NewBatch()
	b.DeleteEndpoint(id)
	if err := s.store.Commit(ctx, b); err != nil {
		s.mu.Lock()
		ep.deleted = false
		s.mu.Unlock()
		return persistErr("delete endpoint", err)
	}
	s.mu.Lock()
	delete(s.endpoints, id)
	for _, w := range ep.workers {
		s.retireWorkerLocked(w, "endpoint deleted")
	}
	s.mu.Unlock()
	s.log.Info("endpoint deleted", "endpoint", id)
	return nil
}

func cloneEndpoint(e store.Endpoint) store.Endpoint {
	e.Command = append([]string(nil), e.Command...)
	e.GPUTypes = append([]string(nil), e.GPUTypes...)
	if e.Env != nil {
		env := make(map[string]string, len(e.Env))
		for k, v := range e.Env {
			env[k] = v
		}
		e.Env = env
	}
	return e
}

// newEndpointID makes a short lowercase id like RunPod's ("8f3k2mz9q1xw0a").
func newEndpointID() string {
	u := uuid.New()
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [14]byte
	for i := range b {
		b[i] = alphabet[int(u[i])%len(alphabet)]
	}
	return string(b[:])
}

// newJobID makes a job id: a UUID, then "-e1" (RunPod's ids end in a
// region tag). The UUID is version 7, time-ordered: job records are keyed
// by id, so new records land at the end of the key space instead of all
// over it, and Badger's compactions rewrite only the newest tables instead
// of the whole level below at every flush (its table builders live on the
// Go heap: with random ids they held tens of MB during a /run burst).
func newJobID(sync bool) string {
	id := uuid.Must(uuid.NewV7()).String() + "-e1"
	if sync {
		return "sync-" + id
	}
	return id
}

// checkRunnable refuses an endpoint this daemon's runtime cannot start:
// container runtimes need an image that is imported, the process runtime
// a command given by its absolute path. sp says what a create or update
// sets: an update is checked only for the fields it changes, so that an
// endpoint made before a rule existed can still be edited.
func (s *Scheduler) checkRunnable(e *store.Endpoint, sp EndpointSpec, create bool) error {
	switch {
	case s.cfg.RequireImage && e.Image == "":
		return fieldErr("image", "is required: workers run as containers of an imported image (see ember image import); emberd --runtime process runs a host command instead")
	case !s.cfg.RequireImage && len(e.Command) == 0:
		return fieldErr("command", "is required: emberd runs with --runtime process, where a worker is a host command")
	}
	if s.cfg.RequireImage && s.cfg.ImageExists != nil && (create || sp.Image != nil) {
		if err := s.cfg.ImageExists(e.Image); err != nil {
			return fieldErr("image", "%v: import it first with `ember image import FILE` or `ember image pull REF`", err)
		}
	}
	if s.cfg.AbsoluteCommand && (create || sp.Command != nil) && !filepath.IsAbs(e.Command[0]) {
		// The process runtime runs it from the worker's own directory:
		// a relative program is not found there, and every start fails.
		return fieldErr("command", "program %q is not an absolute path: give an absolute path (e.g. /usr/bin/python3); workers run on the host from a directory of their own", e.Command[0])
	}
	return nil
}
