package scheduler

import (
	"testing"

	"github.com/emberhq/ember/scheduler/spec"
)

// TestEndpointInit: an endpoint's workers get the runtime's init unless
// the endpoint says init false; the store keeps the choice.
func TestEndpointInit(t *testing.T) {
	h := newHarness(t, nil)
	if w := h.worker(); w.spec.NoInit {
		t.Errorf("default endpoint: worker spec NoInit, want the init")
	}
	if e, _ := h.s.Endpoint(h.ep); e.NoInit {
		t.Errorf("default endpoint stored NoInit")
	}

	name, cmd, one, zero, off := "no-init", []string{"fake-worker"}, 1, 0, false
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &zero, Init: &off})
	if err != nil {
		t.Fatal(err)
	}
	if !e.NoInit {
		t.Errorf("init false not stored: %+v", e)
	}
	if w := h.worker(); !w.spec.NoInit {
		t.Errorf("init false: worker spec %+v, want NoInit", w.spec)
	}
}
