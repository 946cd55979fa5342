package gpu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// MIG says where a MIG instance sits: a slice of a GPU in MIG mode (a GPU
// instance, and a compute instance in it) that CUDA uses as a GPU of its
// own, with its own memory. Ember hands out the instances an operator has
// made (nvidia-smi mig -cgi ... -C); it never changes a GPU's MIG mode or
// its instances.
type MIG struct {
	// ParentUUID is the UUID of the GPU the instance is carved from; its
	// device node (/dev/nvidia<Minor> of the Device) is the parent's.
	ParentUUID string
	// Index is NVML's index of the instance among its parent's MIG
	// devices (what nvidia-smi and CDI's "GPU:MIG" names use).
	Index int
	// GPUInstance and ComputeInstance are the instance IDs; with the
	// parent's minor they name the capability device nodes that give a
	// process access to the instance (see DefaultMIGMinors).
	GPUInstance, ComputeInstance int
}

// DefaultMIGMinors is the driver's table of MIG capability minor numbers:
// lines such as "gpu0/gi1/access 12" and "gpu0/gi1/ci0/access 13", the
// device /dev/nvidia-caps/nvidia-cap12 giving access to GPU instance 1 of
// the GPU with minor 0.
const DefaultMIGMinors = "/proc/driver/nvidia-caps/mig-minors"

// describeMIG lists the MIG instances of parent (a GPU in MIG mode, handle
// h). An instance that fails a query is listed with Err set, like a full
// GPU; a slot without an instance is skipped.
func describeMIG(parent Device, h nvml.Device) ([]Device, error) {
	max, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu %d: NVML MIG device count: %w", parent.Index, ret)
	}
	var out []Device
	for i := range max {
		mh, ret := h.GetMigDeviceHandleByIndex(i)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue // no instance in this slot
		}
		d := Device{
			Index:    parent.Index,
			Minor:    parent.Minor,
			PCIBusID: parent.PCIBusID,
			MIG:      &MIG{ParentUUID: parent.UUID, Index: i, GPUInstance: -1, ComputeInstance: -1},
		}
		fail := func(what string, ret nvml.Return) {
			if d.Err == nil {
				d.Err = fmt.Errorf("gpu %d MIG %d: NVML %s: %w", parent.Index, i, what, ret)
			}
		}
		if ret != nvml.SUCCESS {
			fail("MIG handle", ret)
			out = append(out, d)
			continue
		}
		if d.UUID, ret = mh.GetUUID(); ret != nvml.SUCCESS {
			fail("UUID", ret)
		}
		if d.Name, ret = mh.GetName(); ret != nvml.SUCCESS || d.Name == "" {
			// The name only serves gpuTypes matching: the parent's will do.
			d.Name = parent.Name + " MIG"
		}
		if mem, ret := mh.GetMemoryInfo(); ret == nvml.SUCCESS {
			d.MemoryTotal, d.MemoryFree = mem.Total, mem.Free
		} else {
			fail("memory info", ret)
		}
		if d.MIG.GPUInstance, ret = mh.GetGpuInstanceId(); ret != nvml.SUCCESS {
			fail("GPU instance id", ret)
		}
		if d.MIG.ComputeInstance, ret = mh.GetComputeInstanceId(); ret != nvml.SUCCESS {
			fail("compute instance id", ret)
		}
		out = append(out, d)
	}
	return out, nil
}

// migCaps returns the capability device names (under /dev/nvidia-caps) a
// process needs to use instance m of the GPU with the given minor: its GPU
// instance's and its compute instance's access nodes, from the driver's
// table at path.
func migCaps(path string, minor int, m *MIG) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("MIG capability table %s: %w (is the nvidia-caps support of the driver loaded?)", path, err)
		}
		return nil, fmt.Errorf("MIG capability table: %w", err)
	}
	minors := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if n, err := strconv.Atoi(f[1]); err == nil {
			minors[f[0]] = n
		}
	}
	gi := fmt.Sprintf("gpu%d/gi%d/access", minor, m.GPUInstance)
	ci := fmt.Sprintf("gpu%d/gi%d/ci%d/access", minor, m.GPUInstance, m.ComputeInstance)
	var out []string
	for _, k := range []string{gi, ci} {
		n, ok := minors[k]
		if !ok {
			return nil, fmt.Errorf("MIG instance %s: %s has no %q (the instance was destroyed after discovery?)", m.ParentUUID, path, k)
		}
		out = append(out, filepath.Join("nvidia-caps", "nvidia-cap"+strconv.Itoa(n)))
	}
	return out, nil
}
