package gpu

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// statsDevice is a mock GPU whose readings can each be made to fail.
func statsDevice(fail string) *mock.Device {
	ret := func(what string) nvml.Return {
		if what == fail {
			return nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.SUCCESS
	}
	return &mock.Device{
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 87, Memory: 40}, ret("utilization")
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Used: 61 << 30, Free: 19 << 30}, ret("memory")
		},
		GetTemperatureFunc: func(sensor nvml.TemperatureSensors) (uint32, nvml.Return) {
			if sensor != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 64, ret("temperature")
		},
	}
}

func TestStats(t *testing.T) {
	tests := []struct {
		name, uuid, fail string
		want             DeviceStats
		err              string
		is               error
	}{
		{name: "ok", uuid: "GPU-1", want: DeviceStats{UtilizationPercent: 87, MemoryUsedBytes: 61 << 30, MemoryTotalBytes: 80 << 30, TemperatureC: 64}},
		{name: "unknown uuid", uuid: "GPU-nope", err: "gpu GPU-nope: NVML handle: ", is: nvml.ERROR_NOT_FOUND},
		{name: "lost", uuid: "GPU-lost", err: "gpu GPU-lost: NVML handle: ", is: nvml.ERROR_GPU_IS_LOST},
		{name: "no utilization", uuid: "GPU-1", fail: "utilization", err: "gpu GPU-1: NVML utilization: ", is: nvml.ERROR_NOT_SUPPORTED},
		{name: "no memory", uuid: "GPU-1", fail: "memory", err: "gpu GPU-1: NVML memory info: ", is: nvml.ERROR_NOT_SUPPORTED},
		{name: "no temperature", uuid: "GPU-1", fail: "temperature", err: "gpu GPU-1: NVML temperature: ", is: nvml.ERROR_NOT_SUPPORTED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := statsDevice(tt.fail)
			lib := &mock.Interface{
				DeviceGetHandleByUUIDFunc: func(uuid string) (nvml.Device, nvml.Return) {
					switch uuid {
					case "GPU-1":
						return dev, nvml.SUCCESS
					case "GPU-lost":
						return nil, nvml.ERROR_GPU_IS_LOST
					}
					return nil, nvml.ERROR_NOT_FOUND
				},
			}
			got, err := Stats(lib, tt.uuid)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Stats = %+v, %v; want %+v", got, err, tt.want)
				}
			} else if err == nil || !strings.HasPrefix(err.Error(), tt.err) || !errors.Is(err, tt.is) || got != (DeviceStats{}) {
				t.Fatalf("Stats = %+v, %v; want an error starting %q wrapping %v", got, err, tt.err, tt.is)
			}
			if n := len(lib.InitCalls()) + len(lib.ShutdownCalls()); n != 0 {
				t.Errorf("Stats called Init or Shutdown %d times: the caller holds NVML initialised", n)
			}
			if calls := dev.GetTemperatureCalls(); len(calls) > 0 && calls[0].TemperatureSensors != nvml.TEMPERATURE_GPU {
				t.Errorf("temperature read from sensor %v", calls[0].TemperatureSensors)
			}
		})
	}
	if _, err := Stats(nil, "GPU-1"); err == nil {
		t.Error("Stats(nil) did not fail")
	}
}
