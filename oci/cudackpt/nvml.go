package cudackpt

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPUMemory is the GPU memory pid uses now, in bytes, summed over every
// GPU (and every MIG instance of a GPU in MIG mode), as NVML's
// per-process accounting reports it: the entries for pid among each
// device's running compute processes. A process NVML does not list holds
// 0. An entry whose figure NVML cannot give (VALUE_NOT_AVAILABLE, seen
// without the rights to read another process's accounting) makes it an
// error rather than a low figure: the figure bounds the host memory a
// checkpoint will take.
//
// lib must be initialised (lib.Init, once at startup), as for
// gpu.FreeMemory in oci/gpu/health.go. pid is a host PID: NVML reports
// PIDs in the host's namespace. Errors wrap NVML's Return.
func GPUMemory(lib nvml.Interface, pid int) (uint64, error) {
	if lib == nil {
		return 0, errors.New("cudackpt: GPU memory: nil NVML interface")
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return 0, fmt.Errorf("cudackpt: GPU memory of pid %d: NVML device count: %w", pid, ret)
	}
	var total uint64
	for i := range n {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return 0, fmt.Errorf("cudackpt: GPU memory of pid %d: NVML handle of GPU %d: %w", pid, i, ret)
		}
		handles, err := processDevices(dev)
		if err != nil {
			return 0, fmt.Errorf("cudackpt: GPU memory of pid %d: GPU %d: %w", pid, i, err)
		}
		for j, h := range handles {
			procs, ret := h.GetComputeRunningProcesses()
			if ret != nvml.SUCCESS {
				return 0, fmt.Errorf("cudackpt: GPU memory of pid %d: GPU %d (handle %d): NVML compute processes: %w", pid, i, j, ret)
			}
			for _, p := range procs {
				if int(p.Pid) != pid {
					continue
				}
				if p.UsedGpuMemory == notAvailable {
					return 0, fmt.Errorf("cudackpt: GPU memory of pid %d: GPU %d: NVML does not report the process's memory (VALUE_NOT_AVAILABLE)", pid, i)
				}
				total += p.UsedGpuMemory
			}
		}
	}
	return total, nil
}

// notAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned field holds it.
const notAvailable = ^uint64(0)

// processDevices are the handles whose compute processes are those of
// dev: its MIG instances when MIG is on (the parent's list then has no
// per-process memory), else dev itself.
func processDevices(dev nvml.Device) ([]nvml.Device, error) {
	cur, _, ret := dev.GetMigMode()
	if ret == nvml.ERROR_NOT_SUPPORTED || (ret == nvml.SUCCESS && cur != nvml.DEVICE_MIG_ENABLE) {
		return []nvml.Device{dev}, nil
	}
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML MIG mode: %w", ret)
	}
	max, ret := dev.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML MIG device count: %w", ret)
	}
	var out []nvml.Device
	for k := range max {
		mig, ret := dev.GetMigDeviceHandleByIndex(k)
		if ret == nvml.ERROR_NOT_FOUND {
			continue // no instance in that slot
		}
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML MIG device %d: %w", k, ret)
		}
		out = append(out, mig)
	}
	return out, nil
}
