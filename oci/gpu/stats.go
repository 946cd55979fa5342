package gpu

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// DeviceStats are a GPU's live readings, for `ember gpu list`.
type DeviceStats struct {
	// UtilizationPercent is the share of the last sample period (1/6 s to
	// 1 s, by model) during which a kernel ran on the GPU.
	UtilizationPercent uint32
	MemoryUsedBytes    uint64
	MemoryTotalBytes   uint64
	// TemperatureC is the GPU die's temperature in degrees Celsius.
	TemperatureC uint32
}

// Stats reads the utilisation, memory use and temperature of the GPU with
// the given UUID: four NVML calls (the handle by UUID, the utilisation
// rates, the memory info, the GPU sensor's temperature). Any one failing
// fails the whole reading.
//
// As with FreeMemory, lib must be initialised by the caller and kept so;
// errors wrap NVML's Return (errors.Is(err, nvml.ERROR_GPU_IS_LOST)).
func Stats(lib nvml.Interface, uuid string) (DeviceStats, error) {
	if lib == nil {
		return DeviceStats{}, errors.New("gpu: stats: nil NVML interface")
	}
	h, ret := lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return DeviceStats{}, fmt.Errorf("gpu %s: NVML handle: %w", uuid, ret)
	}
	util, ret := h.GetUtilizationRates()
	if ret != nvml.SUCCESS {
		return DeviceStats{}, fmt.Errorf("gpu %s: NVML utilization: %w", uuid, ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return DeviceStats{}, fmt.Errorf("gpu %s: NVML memory info: %w", uuid, ret)
	}
	temp, ret := h.GetTemperature(nvml.TEMPERATURE_GPU)
	if ret != nvml.SUCCESS {
		return DeviceStats{}, fmt.Errorf("gpu %s: NVML temperature: %w", uuid, ret)
	}
	return DeviceStats{
		UtilizationPercent: util.Gpu,
		MemoryUsedBytes:    mem.Used,
		MemoryTotalBytes:   mem.Total,
		TemperatureC:       temp,
	}, nil
}
