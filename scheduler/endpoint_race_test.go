package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/emberhq/ember/scheduler/spec"
)

// TestConcurrentCreateSameName: of concurrent creates (and renames) to one
// name, exactly one succeeds and the rest get ErrConflict. The name check
// and the add used to be two critical sections with the store's commit
// between them, so several creates of one name all passed the check. The
// store is on disk (real fsyncs), which is what opens that window.
func TestConcurrentCreateSameName(t *testing.T) {
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.DataDir = t.TempDir()
	cfg.InMemoryStore = false
	cfg.MinFreeBytes = 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cmd, zero := []string{"fake"}, 0
	const rounds, racers = 20, 8
	for round := range rounds {
		name := fmt.Sprintf("dup-%d", round)
		// Half the racers create the name; the other half rename an
		// endpoint of their own to it.
		var own []string
		for i := range racers / 2 {
			n := fmt.Sprintf("own-%d-%d", round, i)
			e, err := s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &n, Command: &cmd, WorkersMin: &zero, GPUCount: &zero})
			if err != nil {
				t.Fatal(err)
			}
			own = append(own, e.ID)
		}
		var wg sync.WaitGroup
		errs := make([]error, racers)
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				<-start
				if i%2 == 0 {
					_, errs[i] = s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, GPUCount: &zero})
				} else {
					_, errs[i] = s.UpdateEndpoint(ctx, own[i/2], spec.EndpointSpec{Name: &name})
				}
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrConflict):
				t.Fatalf("round %d racer %d: %v, want success or ErrConflict", round, i, err)
			}
		}
		named := 0
		for _, e := range s.Endpoints() {
			if e.Name == name {
				named++
			}
		}
		if ok != 1 || named != 1 {
			t.Fatalf("round %d: %d of %d creates and renames to %q succeeded and %d endpoints have the name; want exactly 1", round, ok, racers, name, named)
		}
	}
}
