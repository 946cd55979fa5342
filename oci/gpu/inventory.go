// Package gpu finds the host's NVIDIA GPUs and gives chosen ones to a
// container by editing its OCI runtime spec.
//
// Ember runs workers through libcontainer without the NVIDIA Container
// Toolkit's runtime shim, so nothing else adds GPUs to a worker: this
// package does what that shim's legacy mode or a CDI-aware runtime would do.
// The inventory comes from NVML through nvml.Interface so that tests (and
// hosts without a GPU) use go-nvml's mock; the injection comes from CDI specs
// when the host has them for nvidia.com/gpu, and otherwise from the inventory
// plus the driver files found on the host.
package gpu

import (
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Device is one full GPU, or one MIG instance (see MIG), as NVML reported
// it at discovery time.
type Device struct {
	// Index is NVML's index on the host. It follows PCI bus order and is
	// not stable across reboots or driver changes: use UUID to name a GPU.
	Index int
	// UUID is "GPU-" and a UUID; the stable name of the GPU.
	UUID string
	// Name is the model, e.g. "NVIDIA H100 80GB HBM3".
	Name string
	// Minor is the device node's minor number: the GPU is /dev/nvidia<Minor>.
	// It usually equals Index but need not, so it is asked for, never
	// derived.
	Minor int
	// PCIBusID is the domain:bus:device.function address ("" if NVML did not
	// say); /proc/driver/nvidia/gpus/ is keyed by it.
	PCIBusID string
	// MemoryTotal and MemoryFree are in bytes. Free is a snapshot.
	MemoryTotal uint64
	MemoryFree  uint64
	// MIGEnabled is the current MIG mode. A GPU in MIG mode is only usable
	// through its MIG instances (Inventory.MIGDevices), so the Injector
	// refuses the GPU itself rather than give a worker a GPU that CUDA
	// cannot see.
	MIGEnabled bool
	// MIG is set on a MIG instance (then UUID is "MIG-...", Name and the
	// memory are the instance's, and Index, Minor and PCIBusID are its
	// parent's); nil on a full GPU.
	MIG *MIG
	// Err is set when NVML failed on a query for this GPU (for example
	// ERROR_GPU_IS_LOST): the GPU is listed so that operators see it, but it
	// must not be given to a worker. The Injector refuses it.
	Err error
}

// Healthy says whether the GPU answered every query at discovery.
func (d Device) Healthy() bool { return d.Err == nil }

// Inventory is what Discover found.
type Inventory struct {
	// DriverVersion is the kernel driver's version, e.g. "550.54.15"; empty
	// when there is no driver. The Injector uses it to skip user-space
	// libraries left behind by an older driver.
	DriverVersion string
	// CUDADriverVersion is the highest CUDA version the driver supports, as
	// NVML encodes it: 1000*major + 10*minor (12040 is CUDA 12.4).
	CUDADriverVersion int
	// Devices are the full GPUs, in NVML index order.
	Devices []Device
	// MIGDevices are the MIG instances of the GPUs in MIG mode, by parent
	// index and then MIG index.
	MIGDevices []Device
	// NoDriver says why Devices is empty when the driver is missing (for a
	// startup log line); empty when the driver answered.
	NoDriver string
}

// CUDAVersion formats CUDADriverVersion as "12.4" ("" when unknown).
func (inv Inventory) CUDAVersion() string {
	v := inv.CUDADriverVersion
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
}

// Lookup returns the device (a full GPU or a MIG instance) with the given
// UUID.
func (inv Inventory) Lookup(uuid string) (Device, bool) {
	for _, list := range [][]Device{inv.Devices, inv.MIGDevices} {
		for _, d := range list {
			if d.UUID == uuid {
				return d, true
			}
		}
	}
	return Device{}, false
}

// Allocatable lists the devices the Injector accepts, the set a scheduler
// may hand out: the healthy full GPUs not in MIG mode, in index order, then
// the healthy MIG instances.
func (inv Inventory) Allocatable() []Device {
	var out []Device
	for _, d := range inv.Devices {
		if d.Healthy() && !d.MIGEnabled && d.UUID != "" {
			out = append(out, d)
		}
	}
	for _, d := range inv.MIGDevices {
		if d.Healthy() && d.UUID != "" {
			out = append(out, d)
		}
	}
	return out
}

// UUIDs lists the UUIDs of Allocatable.
func (inv Inventory) UUIDs() []string {
	var out []string
	for _, d := range inv.Allocatable() {
		out = append(out, d.UUID)
	}
	return out
}

// noDriver reports whether NVML's Init failure means "this host has no
// usable NVIDIA driver" rather than a fault: no libnvidia-ml (CPU-only
// appliance) or libraries installed but no kernel module loaded (a
// generic image on a machine without a GPU). Either way the host has zero
// GPUs and emberd should still serve CPU endpoints.
func noDriver(ret nvml.Return) bool {
	return ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED
}

// Discover lists the host's GPUs through lib; pass nvml.New() for the real
// library, a go-nvml mock in tests. It initialises and shuts down NVML
// itself (NVML reference-counts Init, so this is safe alongside other
// users).
//
// A host without the driver is not an error: Discover returns an inventory
// with no devices and NoDriver set. A GPU that fails a query is listed
// with Err set rather than failing the whole inventory, so that one lost GPU
// does not take the others out of service.
func Discover(lib nvml.Interface) (Inventory, error) {
	if lib == nil {
		return Inventory{}, errors.New("gpu: discover: nil NVML interface")
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if noDriver(ret) {
			return Inventory{NoDriver: fmt.Sprintf("NVML init: %v", ret)}, nil
		}
		return Inventory{}, fmt.Errorf("gpu: NVML init: %w", ret)
	}
	defer lib.Shutdown()

	var inv Inventory
	v, ret := lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("gpu: NVML driver version: %w", ret)
	}
	inv.DriverVersion = v
	// An old driver may not report a CUDA version; that only loses a
	// diagnostic, so it is not fatal.
	if cv, ret := lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		inv.CUDADriverVersion = cv
	}

	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("gpu: NVML device count: %w", ret)
	}
	for i := range n {
		d := describe(lib, i)
		inv.Devices = append(inv.Devices, d)
		if !d.MIGEnabled || !d.Healthy() {
			continue
		}
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue // describe got it a moment ago; d would have Err
		}
		migs, err := describeMIG(d, h)
		if err != nil {
			// The GPU stays listed (its MIG mode makes it unallocatable);
			// its instances are not offered.
			inv.Devices[len(inv.Devices)-1].Err = err
			continue
		}
		inv.MIGDevices = append(inv.MIGDevices, migs...)
	}
	return inv, nil
}

// describe queries one GPU. The first failed query that leaves the GPU
// unusable is kept in Err; optional facts (PCI address, MIG mode on GPUs
// that do not support MIG) are left at their zero values.
func describe(lib nvml.Interface, index int) Device {
	d := Device{Index: index, Minor: -1}
	h, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		d.Err = fmt.Errorf("gpu %d: NVML handle: %w", index, ret)
		return d
	}
	fail := func(what string, ret nvml.Return) {
		if d.Err == nil {
			d.Err = fmt.Errorf("gpu %d: NVML %s: %w", index, what, ret)
		}
	}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		fail("UUID", ret)
	}
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		fail("name", ret)
	}
	if d.Minor, ret = h.GetMinorNumber(); ret != nvml.SUCCESS {
		d.Minor = -1
		fail("minor number", ret)
	}
	if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryTotal, d.MemoryFree = mem.Total, mem.Free
	} else {
		fail("memory info", ret)
	}
	switch cur, _, ret := h.GetMigMode(); ret {
	case nvml.SUCCESS:
		d.MIGEnabled = cur == nvml.DEVICE_MIG_ENABLE
	case nvml.ERROR_NOT_SUPPORTED:
		// Not a MIG-capable GPU.
	default:
		fail("MIG mode", ret)
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.PCIBusID = busID(pci.BusId[:])
	}
	return d
}

// busID turns NVML's NUL-terminated C string into a Go string, lower-cased
// as /proc/driver/nvidia/gpus/ spells it.
func busID(raw []int8) string {
	var b strings.Builder
	for _, c := range raw {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return strings.ToLower(b.String())
}

// Check asks NVML whether each GPU still answers; it is the hook a
// scheduler calls before (re)assigning GPUs, since a GPU can fall off the
// bus (XID 79) long after Discover. It returns nil when all answer, or the
// failures joined, each naming its UUID and wrapping NVML's Return (so
// errors.Is(err, nvml.ERROR_GPU_IS_LOST) works).
func Check(lib nvml.Interface, uuids ...string) error {
	if lib == nil {
		return errors.New("gpu: check: nil NVML interface")
	}
	if len(uuids) == 0 {
		return nil
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: check: NVML init: %w", ret)
	}
	defer lib.Shutdown()
	var errs []error
	for _, u := range uuids {
		h, ret := lib.DeviceGetHandleByUUID(u)
		if ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("gpu %s: NVML handle: %w", u, ret))
			continue
		}
		// A handle can still be had for a GPU that has fallen off the bus;
		// a live query such as memory info is what fails then.
		if _, ret := h.GetMemoryInfo(); ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("gpu %s: NVML memory info: %w", u, ret))
		}
	}
	return errors.Join(errs...)
}
