package emberd

import (
	"reflect"
	"testing"

	"github.com/emberhq/ember/oci/gpu"
	"github.com/emberhq/ember/oci/gpu/gputest"
)

// MIG instances are placed as GPUs of their own size and watched for
// errors through their parent GPU.
func TestSchedulerGPUsMIG(t *testing.T) {
	const a, b = "MIG-aaaaaaaa-0000-0000-0000-000000000001", "MIG-aaaaaaaa-0000-0000-0000-000000000002"
	inv, err := gpu.Discover(gputest.MIGServer(map[int][]gputest.Instance{1: {
		{Index: 0, UUID: a, Name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb", MemoryBytes: 20 << 30, GPUInstance: 1},
		{Index: 1, UUID: b, Name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb", MemoryBytes: 20 << 30, GPUInstance: 2},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	gs := schedulerGPUs(inv)
	if len(gs) != 9 {
		t.Fatalf("%d GPUs, want 7 whole and 2 instances: %+v", len(gs), gs)
	}
	for _, g := range gs {
		if g.UUID == inv.Devices[1].UUID {
			t.Errorf("GPU 1, in MIG mode, is offered whole: %+v", g)
		}
	}
	if last := gs[8]; last.UUID != b || !last.MIG || last.MemoryBytes != 20<<30 {
		t.Errorf("last GPU %+v, want instance %s of 20 GiB", last, b)
	}
	targets := healthTargets(inv, gs)
	if got := targets[inv.Devices[1].UUID]; !reflect.DeepEqual(got, []string{a, b}) {
		t.Errorf("a report on GPU 1 takes out %v, want its instances", got)
	}
	if got := targets[inv.Devices[0].UUID]; !reflect.DeepEqual(got, []string{inv.Devices[0].UUID}) {
		t.Errorf("a report on GPU 0 takes out %v, want itself", got)
	}
	if len(targets) != 8 {
		t.Errorf("%d GPUs watched, want 8 (7 whole, 1 parent)", len(targets))
	}
}
