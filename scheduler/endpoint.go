package scheduler

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/google/uuid"

	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// CreateEndpoint validates, persists and activates a new endpoint.
func (s *Scheduler) CreateEndpoint(ctx context.Context, sp spec.EndpointSpec) (store.Endpoint, error) {
	e := spec.Default()
	sp.Apply(&e)
	if err := spec.Validate(&e); err != nil {
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

	if err := s.disk.Check(diskguard.NewWork, 0); err != nil {
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
func (s *Scheduler) UpdateEndpoint(ctx context.Context, id string, sp spec.EndpointSpec) (store.Endpoint, error) {
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
	sp.Apply(&e)
	if err := spec.Validate(&e); err != nil {
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
	if err := s.disk.Check(diskguard.NewWork, 0); err != nil {
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
func (s *Scheduler) checkRunnable(e *store.Endpoint, sp spec.EndpointSpec, create bool) error {
	switch {
	case s.cfg.RequireImage && e.Image == "":
		return spec.Errorf("image", "is required: workers run as containers of an imported image (see ember image import); emberd --runtime process runs a host command instead")
	case !s.cfg.RequireImage && len(e.Command) == 0:
		return spec.Errorf("command", "is required: emberd runs with --runtime process, where a worker is a host command")
	}
	if s.cfg.RequireImage && s.cfg.ImageExists != nil && (create || sp.Image != nil) {
		if err := s.cfg.ImageExists(e.Image); err != nil {
			return spec.Errorf("image", "%v: import it first with `ember image import FILE` or `ember image pull REF`", err)
		}
	}
	if s.cfg.AbsoluteCommand && (create || sp.Command != nil) && !filepath.IsAbs(e.Command[0]) {
		// The process runtime runs it from the worker's own directory:
		// a relative program is not found there, and every start fails.
		return spec.Errorf("command", "program %q is not an absolute path: give an absolute path (e.g. /usr/bin/python3); workers run on the host from a directory of their own", e.Command[0])
	}
	return s.checkPark(e, sp, create)
}
