package scheduler

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/emberhq/ember/oci/gpu"
	"github.com/emberhq/ember/oci/gpu/gputest"
	"github.com/emberhq/ember/scheduler/spec"
)

// TestMIGPlacement places workers on MIG instances listed through NVML
// (go-nvml's mock): an instance is a GPU with its own memory size for
// gpuMemoryMb and gpuTypes, and never one of several GPUs of a worker.
func TestMIGPlacement(t *testing.T) {
	const small, big = "MIG-aaaaaaaa-0000-0000-0000-000000000001", "MIG-aaaaaaaa-0000-0000-0000-000000000002"
	lib := gputest.MIGServer(map[int][]gputest.Instance{0: {
		{Index: 0, UUID: small, Name: "NVIDIA A100-SXM4-40GB MIG 1g.5gb", MemoryBytes: 5 << 30, GPUInstance: 13},
		{Index: 1, UUID: big, Name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb", MemoryBytes: 20 << 30, GPUInstance: 2},
	}})
	inv, err := gpu.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	// Two whole GPUs and the two instances, as emberd lists them.
	var gpus []GPU
	for _, d := range inv.Allocatable() {
		if d.MIG == nil && d.Index > 2 {
			continue
		}
		gpus = append(gpus, GPU{UUID: d.UUID, Name: d.Name, MemoryBytes: d.MemoryTotal, MIG: d.MIG != nil})
	}
	if len(gpus) != 4 || !gpus[2].MIG || gpus[2].MemoryBytes != 5<<30 || gpus[3].MemoryBytes != 20<<30 {
		t.Fatalf("GPUs from the inventory: %+v", gpus)
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	h := newHarness(t, func(c *Config) {
		c.AllocateGPUs, c.GPUs = true, gpus
		c.GPUFreeMemory = func(uuid string) (uint64, error) { return gpu.FreeMemory(lib, uuid) }
	})
	h.worker()

	// 10 GiB on a MIG instance: the 1g.5gb one is too small.
	name, cmd, one, mem, types := "mig", []string{"w"}, 1, 10<<10, []string{"MIG"}
	if _, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one,
		GPUCount: &one, GPUMemoryMB: &mem, GPUTypes: &types}); err != nil {
		t.Fatal(err)
	}
	if w := h.worker(); len(w.spec.GPUs) != 1 || w.spec.GPUs[0] != big {
		t.Fatalf("10 GiB worker got %v, want the 20 GiB instance %s", w.spec.GPUs, big)
	}

	// Two GPUs: the whole ones, never an instance.
	gpuEndpoint(t, h, "pair", 2, 1, 1, nil)
	if w := h.worker(); len(w.spec.GPUs) != 2 || strings.HasPrefix(w.spec.GPUs[0], "MIG-") || strings.HasPrefix(w.spec.GPUs[1], "MIG-") {
		t.Fatalf("two-GPU worker got %v, want the two whole GPUs", w.spec.GPUs)
	}

	// Three GPUs: only two can be had together.
	three, n := 3, "three"
	_, err = h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &n, Command: &cmd, GPUCount: &three})
	if err == nil || !strings.Contains(err.Error(), "only 2") || !strings.Contains(err.Error(), "MIG") {
		t.Fatalf("gpuCount 3 with 2 whole GPUs and 2 instances: %v; want a refusal naming the MIG rule", err)
	}

	// One GPU, any: the small instance is still free and placeable.
	gpuEndpoint(t, h, "any", 1, 1, 1, nil)
	if w := h.worker(); len(w.spec.GPUs) != 1 || w.spec.GPUs[0] != small {
		t.Fatalf("one-GPU worker got %v, want the free instance %s", w.spec.GPUs, small)
	}
}
