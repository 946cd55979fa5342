// Package gputest builds go-nvml mock servers for tests of GPU code that
// needs more than the mocks give: MIG instances, which the mock servers of
// go-nvml do not list. It is test support, not part of Ember.
package gputest

import (
	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Instance is one MIG instance of a mock GPU.
type Instance struct {
	// Index is its MIG device index on the parent (the slot).
	Index int
	UUID  string
	Name  string
	// MemoryBytes is its memory; the mock reports all of it free.
	MemoryBytes     uint64
	GPUInstance     int
	ComputeInstance int
}

// MIGServer is a DGX A100 mock whose GPUs listed in instances are in MIG
// mode with those instances (other slots empty, up to 7 as on an A100).
// DeviceGetHandleByUUID finds the instances too, as the real NVML does.
func MIGServer(instances map[int][]Instance) *server.Server {
	s := dgxa100.New()
	handles := map[string]nvml.Device{}
	for gpu, list := range instances {
		d := s.Devices[gpu].(*server.Device)
		d.MigMode = nvml.DEVICE_MIG_ENABLE
		slots := map[int]nvml.Device{}
		for _, in := range list {
			mh := &mock.Device{
				GetUUIDFunc: func() (string, nvml.Return) { return in.UUID, nvml.SUCCESS },
				GetNameFunc: func() (string, nvml.Return) { return in.Name, nvml.SUCCESS },
				GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
					return nvml.Memory{Total: in.MemoryBytes, Free: in.MemoryBytes}, nvml.SUCCESS
				},
				GetGpuInstanceIdFunc:     func() (int, nvml.Return) { return in.GPUInstance, nvml.SUCCESS },
				GetComputeInstanceIdFunc: func() (int, nvml.Return) { return in.ComputeInstance, nvml.SUCCESS },
				IsMigDeviceHandleFunc:    func() (bool, nvml.Return) { return true, nvml.SUCCESS },
				GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) {
					return d, nvml.SUCCESS
				},
			}
			slots[in.Index] = mh
			handles[in.UUID] = mh
		}
		d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
		d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= 7 {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			if h, ok := slots[i]; ok {
				return h, nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		}
	}
	byUUID := s.DeviceGetHandleByUUIDFunc
	s.DeviceGetHandleByUUIDFunc = func(uuid string) (nvml.Device, nvml.Return) {
		if h, ok := handles[uuid]; ok {
			return h, nvml.SUCCESS
		}
		return byUUID(uuid)
	}
	return s
}
