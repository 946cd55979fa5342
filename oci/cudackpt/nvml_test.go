package cudackpt

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// gpu is a mock GPU without MIG running procs.
func gpu(procs ...nvml.ProcessInfo) *mock.Device {
	return &mock.Device{
		GetMigModeFunc: func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED },
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return procs, nvml.SUCCESS
		},
	}
}

func host(devs ...*mock.Device) *mock.Interface {
	return &mock.Interface{
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

func TestGPUMemory(t *testing.T) {
	const gib = 1 << 30
	// pid 10 on GPUs 0 and 2 (a process using two GPUs), 11 on GPU 1.
	lib := host(
		gpu(nvml.ProcessInfo{Pid: 10, UsedGpuMemory: 4 * gib}, nvml.ProcessInfo{Pid: 11, UsedGpuMemory: gib}),
		gpu(nvml.ProcessInfo{Pid: 11, UsedGpuMemory: 2 * gib}),
		gpu(nvml.ProcessInfo{Pid: 10, UsedGpuMemory: 512 << 20}),
	)
	for pid, want := range map[int]uint64{10: 4*gib + 512<<20, 11: 3 * gib, 12: 0} {
		got, err := GPUMemory(lib, pid)
		if err != nil || got != want {
			t.Errorf("GPUMemory(%d) = %d, %v; want %d", pid, got, err, want)
		}
	}
}

func TestGPUMemoryMIG(t *testing.T) {
	mig0 := gpu(nvml.ProcessInfo{Pid: 20, UsedGpuMemory: 1000})
	mig1 := gpu(nvml.ProcessInfo{Pid: 20, UsedGpuMemory: 234}, nvml.ProcessInfo{Pid: 21, UsedGpuMemory: 5})
	parent := &mock.Device{
		GetMigModeFunc:           func() (int, int, nvml.Return) { return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS },
		GetMaxMigDeviceCountFunc: func() (int, nvml.Return) { return 7, nvml.SUCCESS },
		GetMigDeviceHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			switch i {
			case 0:
				return mig0, nvml.SUCCESS
			case 3:
				return mig1, nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		},
		// The parent lists the processes without their memory: it must
		// not be counted.
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: 20, UsedGpuMemory: notAvailable}}, nvml.SUCCESS
		},
	}
	got, err := GPUMemory(host(parent), 20)
	if err != nil || got != 1234 {
		t.Fatalf("GPUMemory on MIG = %d, %v; want 1234", got, err)
	}
}

func TestGPUMemoryErrors(t *testing.T) {
	if _, err := GPUMemory(nil, 1); err == nil {
		t.Error("nil NVML: no error")
	}
	lost := gpu()
	lost.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
	if _, err := GPUMemory(host(gpu(), lost), 1); !errors.Is(err, nvml.ERROR_GPU_IS_LOST) || !strings.Contains(err.Error(), "GPU 1") {
		t.Errorf("lost GPU: %v", err)
	}
	na := gpu(nvml.ProcessInfo{Pid: 3, UsedGpuMemory: notAvailable})
	if _, err := GPUMemory(host(na), 3); err == nil || !strings.Contains(err.Error(), "VALUE_NOT_AVAILABLE") {
		t.Errorf("memory not available: %v", err)
	}
	uninit := &mock.Interface{DeviceGetCountFunc: func() (int, nvml.Return) { return 0, nvml.ERROR_UNINITIALIZED }}
	if _, err := GPUMemory(uninit, 1); !errors.Is(err, nvml.ERROR_UNINITIALIZED) {
		t.Errorf("uninitialised NVML: %v", err)
	}
}
