package gpu

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// FreeMemory is the free memory, in bytes, of the GPU with the given UUID,
// as NVML reports it now. It is two NVML calls (the handle by UUID, the
// memory info) and is meant for placement decisions.
//
// lib must be initialised: call lib.Init once (at startup, with a matching
// Shutdown at exit) rather than around each call, because with the real
// library the first Init loads it and attaches to every GPU, which takes
// far longer than the query. Without it the error wraps
// nvml.ERROR_UNINITIALIZED. Errors wrap NVML's Return, so that
// errors.Is(err, nvml.ERROR_GPU_IS_LOST) tells a lost GPU.
func FreeMemory(lib nvml.Interface, uuid string) (uint64, error) {
	if lib == nil {
		return 0, errors.New("gpu: free memory: nil NVML interface")
	}
	h, ret := lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return 0, fmt.Errorf("gpu %s: NVML handle: %w", uuid, ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return 0, fmt.Errorf("gpu %s: NVML memory info: %w", uuid, ret)
	}
	return mem.Free, nil
}

// healthEvents are the NVML events WatchHealth registers for, where the
// GPU supports them: critical XIDs (the driver's error reports) and
// double-bit (uncorrectable) ECC errors. Single-bit ECC errors are left
// out: the hardware corrected them, the GPU goes on working, and a rising
// rate of them is reported by the driver as an XID (92) anyway.
const healthEvents = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError

// healthWait is how long one EventSetWait blocks: the longest WatchHealth
// takes to notice that its context has ended.
const healthWait = 500 * time.Millisecond

// applicationXIDs are the XIDs that WatchHealth ignores: errors that a
// program on the GPU causes (a bad kernel, a bad pointer, a hung or killed
// context), which the driver recovers from by tearing down that program's
// context. The GPU stays usable by the next program; marking it bad would
// let one buggy worker take GPUs out of service. The same list is what
// NVIDIA's Kubernetes device plugin skips.
var applicationXIDs = map[uint64]bool{
	13:  true, // graphics engine exception: illegal instruction or address in a kernel, out-of-range access
	31:  true, // GPU memory page fault: the program used an invalid address
	43:  true, // GPU stopped processing: a program faulted or was stopped (the channel was reset)
	45:  true, // preemptive cleanup, due to previous errors: the context of a killed or failed program torn down
	68:  true, // video processor exception: a bad video decode/encode stream
	109: true, // context switch timeout: usually a program's kernel that does not yield
}

// xidNames are NVIDIA's descriptions of the XIDs most often seen, for the
// reason WatchHealth reports.
var xidNames = map[uint64]string{
	13:  "graphics engine exception",
	31:  "GPU memory page fault",
	32:  "invalid or corrupted push buffer stream",
	38:  "driver firmware error",
	43:  "GPU stopped processing",
	45:  "preemptive cleanup, due to previous errors",
	48:  "double-bit ECC error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remapping recording event",
	64:  "ECC page retirement or row remapping recording failure",
	68:  "video processor exception",
	69:  "graphics engine class error",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	109: "context switch timeout error",
	119: "GSP RPC timeout",
	120: "GSP error",
	140: "unrecovered ECC error",
}

// xidReason reads like "XID 79 (GPU has fallen off the bus)".
func xidReason(xid uint64) string {
	if name, ok := xidNames[xid]; ok {
		return fmt.Sprintf("XID %d (%s)", xid, name)
	}
	return fmt.Sprintf("XID %d", xid)
}

// WatchHealth watches the GPUs with the given UUIDs and calls report, once
// per GPU, for each that goes bad, with a reason such as "XID 79 (GPU has
// fallen off the bus)". It runs in the caller's goroutine (report is
// called from it) until ctx ends, and returns nil then; it returns earlier
// when there is nothing (left) to watch: no GPU supports events, or every
// GPU has been reported.
//
// It registers every GPU for critical XID events and double-bit ECC errors
// (those of the two it supports) in one NVML event set and waits on it,
// healthWait at a time so that it notices ctx. A GPU is bad on:
//   - a critical XID other than the application errors in applicationXIDs;
//   - a double-bit ECC error;
//   - NVML failing to reach it: no handle for its UUID, or
//     ERROR_GPU_IS_LOST or ERROR_RESET_REQUIRED when registering it or
//     when probed after the wait itself fails (the wait says that some GPU
//     is lost, not which, so each GPU's memory info is asked for);
//   - an event that NVML could not tie to a device: then every GPU not
//     reported yet is, as NVIDIA's device plugin does.
//
// A GPU whose events are not supported (ERROR_NOT_SUPPORTED) is skipped
// quietly, and so is one that NVML refuses to register for another reason.
//
// It initialises NVML and shuts it down itself; the error is for NVML
// failing to initialise or to create the event set.
func WatchHealth(ctx context.Context, lib nvml.Interface, uuids []string, report func(uuid, reason string)) error {
	if lib == nil || report == nil {
		return errors.New("gpu: watch health: nil NVML interface or report function")
	}
	if len(uuids) == 0 {
		return nil
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: watch health: NVML init: %w", ret)
	}
	defer lib.Shutdown()
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: watch health: NVML event set: %w", ret)
	}
	defer set.Free()

	w := &healthWatch{reported: map[string]bool{}, report: report}
	for _, u := range uuids {
		if w.reported[u] {
			continue // listed twice
		}
		h, ret := lib.DeviceGetHandleByUUID(u)
		if ret != nvml.SUCCESS {
			w.bad(u, fmt.Sprintf("NVML cannot reach the GPU: %v", ret))
			continue
		}
		mask := uint64(healthEvents)
		switch supported, ret := h.GetSupportedEventTypes(); {
		case ret == nvml.SUCCESS:
			mask &= supported
		case ret == nvml.ERROR_NOT_SUPPORTED, w.lost(u, ret):
			continue
		}
		// (Another failure to say what is supported: RegisterEvents decides.)
		if mask == 0 {
			continue
		}
		if ret := h.RegisterEvents(mask, set); ret != nvml.SUCCESS {
			w.lost(u, ret) // else not supported, or refused: not watched
			continue
		}
		w.watched = append(w.watched, watchedGPU{uuid: u, h: h})
	}

	for w.left() > 0 {
		if ctx.Err() != nil {
			return nil
		}
		e, ret := set.Wait(uint32(healthWait / time.Millisecond))
		switch ret {
		case nvml.SUCCESS:
			w.event(e)
		case nvml.ERROR_TIMEOUT:
		default:
			// ERROR_GPU_IS_LOST says that some GPU fell off the bus; find
			// which. Anything else: probe too, and do not spin on an error
			// that persists.
			w.probe()
			if ret != nvml.ERROR_GPU_IS_LOST {
				select {
				case <-ctx.Done():
				case <-time.After(healthWait):
				}
			}
		}
	}
	return nil
}

// healthWatch is WatchHealth's state.
type healthWatch struct {
	watched  []watchedGPU
	reported map[string]bool
	report   func(uuid, reason string)
}

type watchedGPU struct {
	uuid string
	h    nvml.Device
}

// bad reports a GPU, once.
func (w *healthWatch) bad(uuid, reason string) {
	if w.reported[uuid] {
		return
	}
	w.reported[uuid] = true
	w.report(uuid, reason)
}

// lost reports the GPU when ret says that it is lost or needs a reset.
func (w *healthWatch) lost(uuid string, ret nvml.Return) bool {
	if ret == nvml.ERROR_GPU_IS_LOST || ret == nvml.ERROR_RESET_REQUIRED {
		w.bad(uuid, fmt.Sprintf("NVML: %v", ret))
		return true
	}
	return false
}

// left counts the watched GPUs not reported yet.
func (w *healthWatch) left() int {
	n := 0
	for _, g := range w.watched {
		if !w.reported[g.uuid] {
			n++
		}
	}
	return n
}

// event handles one NVML event.
func (w *healthWatch) event(e nvml.EventData) {
	var reason string
	switch {
	case e.EventType&nvml.EventTypeXidCriticalError != 0:
		if applicationXIDs[e.EventData] {
			return
		}
		reason = xidReason(e.EventData)
	case e.EventType&nvml.EventTypeDoubleBitEccError != 0:
		reason = "double-bit ECC error (uncorrectable)"
	default:
		return
	}
	if uuid, ok := w.device(e.Device); ok {
		w.bad(uuid, reason)
		return
	}
	for _, g := range w.watched {
		w.bad(g.uuid, reason+" on an unidentified GPU")
	}
}

// device finds the watched GPU of an event's device: by handle (no NVML
// call, so it works for a GPU that no longer answers), else by UUID.
func (w *healthWatch) device(d nvml.Device) (string, bool) {
	if d == nil {
		return "", false
	}
	// Handles are compared as interface values, which panics on a type
	// that is not comparable (NVML's and go-nvml's mocks' are).
	if reflect.TypeOf(d).Comparable() {
		for _, g := range w.watched {
			if reflect.TypeOf(g.h) == reflect.TypeOf(d) && g.h == d {
				return g.uuid, true
			}
		}
	}
	if u, ret := d.GetUUID(); ret == nvml.SUCCESS {
		for _, g := range w.watched {
			if g.uuid == u {
				return u, true
			}
		}
	}
	return "", false
}

// probe asks each watched GPU not reported yet for its memory info and
// reports those that NVML says are lost or need a reset.
func (w *healthWatch) probe() {
	for _, g := range w.watched {
		if w.reported[g.uuid] {
			continue
		}
		if _, ret := g.h.GetMemoryInfo(); ret != nvml.SUCCESS {
			w.lost(g.uuid, ret)
		}
	}
}
