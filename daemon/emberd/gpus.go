package emberd

import (
	"github.com/emberhq/ember/oci/gpu"
	"github.com/emberhq/ember/scheduler"
)

// schedulerGPUs are the GPUs the scheduler may place workers on: the
// inventory's allocatable devices, whole GPUs and MIG instances, each with
// its own memory size.
func schedulerGPUs(inv gpu.Inventory) []scheduler.GPU {
	var out []scheduler.GPU
	for _, d := range inv.Allocatable() {
		out = append(out, scheduler.GPU{UUID: d.UUID, Name: d.Name, MemoryBytes: d.MemoryTotal, MIG: d.MIG != nil})
	}
	return out
}

// healthTargets maps the GPUs to watch for errors to the placed GPUs a
// report on each takes out of service. NVML reports XIDs and ECC errors
// on whole GPUs, so a MIG instance is watched through its parent, and a
// bad parent takes all its instances out.
func healthTargets(inv gpu.Inventory, placed []scheduler.GPU) map[string][]string {
	out := map[string][]string{}
	for _, g := range placed {
		watch := g.UUID
		if d, ok := inv.Lookup(g.UUID); ok && d.MIG != nil {
			watch = d.MIG.ParentUUID
		}
		out[watch] = append(out[watch], g.UUID)
	}
	return out
}
