package spec

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/limits"
)

// Bounds of endpoint fields that scheduler/limits does not hold: they keep
// a definition sane rather than startable.
const (
	maxWorkers       = 1000
	maxGPUsPerWorker = 16
	maxGPUTypes      = 8
	maxAttempts      = 100
	maxMemoryMB      = 16 << 20 // 16 TiB, for memoryMb and gpuMemoryMb
	minMemoryMB      = 16
	maxCPUs          = 1024
	minCPUs          = 0.01
	maxPids          = 1 << 22
	maxScalerValue   = 3600
	maxIdleSec       = 3600
	minInitSec       = 10
	maxDaySec        = 86400
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate checks a complete endpoint (Default with a create's fields
// applied, or a stored one with an update's) against RunPod's ranges and
// the limits that keep its workers startable. The error is a *FieldError
// naming the field by its JSON name, and the limit; with several faults it
// is the first in the order of rules, then the command, env and gpuTypes
// entries.
func Validate(e *Endpoint) error {
	for _, r := range rules {
		if !r.ok(e) {
			return &FieldError{Field: r.field, Msg: r.msg(e)}
		}
	}
	for _, check := range []func(*Endpoint) error{checkCommand, checkEnv, checkGPUTypes} {
		if err := check(e); err != nil {
			return err
		}
	}
	return nil
}

// rule is one check of one field: ok says whether e passes, msg what is
// wrong when it does not.
type rule struct {
	field string
	ok    func(e *Endpoint) bool
	msg   func(e *Endpoint) string
}

// says is a rule message that does not depend on the endpoint.
func says(format string, a ...any) func(*Endpoint) string {
	s := fmt.Sprintf(format, a...)
	return func(*Endpoint) string { return s }
}

// between is the negation of "out of range", so that a NaN (gRPC can send
// one for cpus) is not refused here: these rules refuse exactly what the
// comparisons they replaced refused.
func between[T int | int64 | float64](v, lo, hi T) bool { return !(v < lo || v > hi) }

// rules are the checks of single fields and of fields against each other,
// in the order they are checked.
var rules = []rule{
	{"name", func(e *Endpoint) bool { return e.Name != "" }, says("is required")},
	{"name", func(e *Endpoint) bool { return len(e.Name) <= limits.EndpointName },
		func(e *Endpoint) string {
			return fmt.Sprintf("is %d characters, over the limit of %d", len(e.Name), limits.EndpointName)
		}},
	{"name", func(e *Endpoint) bool { return nameRE.MatchString(e.Name) },
		says("must be 1-%d characters of letters, digits, '.', '_' or '-', starting with a letter or digit", limits.EndpointName)},
	{"image", func(e *Endpoint) bool { return len(e.Image) <= limits.ImageRef },
		func(e *Endpoint) string {
			return fmt.Sprintf("is %d characters, over the limit of %d", len(e.Image), limits.ImageRef)
		}},
	{"command", func(e *Endpoint) bool { return len(e.Command) <= limits.CommandArgs },
		func(e *Endpoint) string {
			return fmt.Sprintf("has %d arguments, over the limit of %d", len(e.Command), limits.CommandArgs)
		}},
	{"env", func(e *Endpoint) bool { return len(e.Env) <= limits.EnvEntries },
		func(e *Endpoint) string {
			return fmt.Sprintf("has %d variables, over the limit of %d", len(e.Env), limits.EnvEntries)
		}},
	{"workersMin", func(e *Endpoint) bool { return between(e.WorkersMin, 0, maxWorkers) },
		says("must be between 0 and %d", maxWorkers)},
	{"workersMax", func(e *Endpoint) bool { return between(e.WorkersMax, 1, maxWorkers) },
		says("must be between 1 and %d", maxWorkers)},
	{"workersMin", func(e *Endpoint) bool { return e.WorkersMin <= e.WorkersMax },
		func(e *Endpoint) string {
			return fmt.Sprintf("(%d) must not exceed workersMax (%d)", e.WorkersMin, e.WorkersMax)
		}},
	{"idleTimeout", func(e *Endpoint) bool { return between(e.IdleTimeoutSec, 1, maxIdleSec) },
		says("must be between 1 and %d seconds", maxIdleSec)},
	{"executionTimeoutMs", func(e *Endpoint) bool {
		return between(e.ExecutionTimeoutMs, runpod.MinExecutionTimeoutMs, runpod.MaxExecutionTimeoutMs)
	}, says("must be between %d and %d ms (5 s to 7 days)", runpod.MinExecutionTimeoutMs, runpod.MaxExecutionTimeoutMs)},
	{"scalerType", func(e *Endpoint) bool { return e.ScalerType == ScalerQueueDelay || e.ScalerType == ScalerRequestCount },
		says("must be %s or %s", ScalerQueueDelay, ScalerRequestCount)},
	{"scalerValue", func(e *Endpoint) bool { return between(e.ScalerValue, 1, maxScalerValue) },
		says("must be between 1 and %d", maxScalerValue)},
	{"gpuCount", func(e *Endpoint) bool { return between(e.GPUCount, 0, maxGPUsPerWorker) },
		says("must be between 0 and %d", maxGPUsPerWorker)},
	{"gpuTypes", func(e *Endpoint) bool { return len(e.GPUTypes) <= maxGPUTypes },
		says("has more than %d entries", maxGPUTypes)},
	{"memoryMb", func(e *Endpoint) bool { return between(e.MemoryMB, 0, maxMemoryMB) },
		says("must be between 0 (no limit) and %d MiB", maxMemoryMB)},
	{"memoryMb", func(e *Endpoint) bool { return !(e.MemoryMB > 0 && e.MemoryMB < minMemoryMB) },
		says("must be at least %d MiB (or 0 for no limit)", minMemoryMB)},
	{"cpus", func(e *Endpoint) bool { return between(e.CPUs, 0, maxCPUs) },
		says("must be between 0 (no limit) and %d", maxCPUs)},
	{"cpus", func(e *Endpoint) bool { return !(e.CPUs > 0 && e.CPUs < minCPUs) },
		says("must be at least %v (or 0 for no limit)", minCPUs)},
	{"pidsLimit", func(e *Endpoint) bool { return between(e.PidsLimit, 0, maxPids) },
		says("must be between 0 (no limit) and %d", maxPids)},
	{"network", func(e *Endpoint) bool { return e.Network == NetworkHost || e.Network == NetworkNone },
		says("must be %q or %q", NetworkHost, NetworkNone)},
	{"initTimeout", func(e *Endpoint) bool { return between(e.InitTimeoutSec, minInitSec, maxDaySec) },
		says("must be between %d and %d seconds (1 day)", minInitSec, maxDaySec)},
	{"flashbootWindow", func(e *Endpoint) bool { return between(e.FlashbootWindowSec, 1, maxDaySec) },
		says("must be between 1 and %d seconds (1 day)", maxDaySec)},
	{"maxAttempts", func(e *Endpoint) bool { return between(e.MaxAttempts, 0, maxAttempts) },
		says("must be between 0 (the daemon's --max-attempts) and %d", maxAttempts)},
	{"gpuMemoryMb", func(e *Endpoint) bool { return between(e.GPUMemoryMB, 0, maxMemoryMB) },
		says("must be between 0 (any) and %d MiB", maxMemoryMB)},
	{"gpuMemoryMb", func(e *Endpoint) bool { return !(e.GPUMemoryMB > 0 && e.GPUCount == 0) },
		says("is set but gpuCount is 0 (a CPU endpoint uses no GPU)")},
	{"gpuPark", func(e *Endpoint) bool {
		return e.GPUPark == ParkNever || e.GPUPark == ParkOnReclaim || e.GPUPark == ParkIdle
	}, says("must be %q, %q or %q", ParkNever, ParkOnReclaim, ParkIdle)},
	{"gpuPark", func(e *Endpoint) bool { return e.GPUPark == ParkNever || e.GPUCount > 0 },
		func(e *Endpoint) string {
			return fmt.Sprintf("is %q but gpuCount is 0 (a CPU endpoint has no GPU to give up)", e.GPUPark)
		}},
	{"gpuParkDelay", func(e *Endpoint) bool { return between(e.GPUParkDelaySec, 1, maxDaySec) },
		says("must be between 1 and %d seconds (1 day)", maxDaySec)},
}

// checkCommand checks each argument of the command and their total, sized
// as execve counts them: each string with its NUL.
func checkCommand(e *Endpoint) error {
	total := 0
	for i, a := range e.Command {
		if a == "" && i == 0 {
			return Errorf("command", "the program (first element) is empty")
		}
		if strings.ContainsRune(a, 0) {
			return Errorf("command", "argument %d contains a NUL byte", i)
		}
		if n := len(a) + 1; n > limits.CommandArg {
			return Errorf("command", "argument %d is %d bytes with its NUL, over the limit of %d bytes per argument", i, n, limits.CommandArg)
		}
		total += len(a) + 1
	}
	if total > limits.CommandTotal {
		return Errorf("command", "is %d bytes in all (each argument with its NUL), over the limit of %d bytes", total, limits.CommandTotal)
	}
	return nil
}

// checkEnv checks each variable, in the order of their names so that the
// same endpoint gets the same error, and their total as execve counts it:
// "KEY=VALUE" and its NUL.
func checkEnv(e *Endpoint) error {
	total := 0
	for _, k := range slices.Sorted(maps.Keys(e.Env)) {
		v := e.Env[k]
		if !envKeyRE.MatchString(k) {
			return Errorf("env", "%q is not a valid variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			return Errorf("env", "value of %s contains a NUL byte", k)
		}
		n := len(k) + 1 + len(v) + 1
		if n > limits.EnvEntry {
			return Errorf("env", "%s is %d bytes as KEY=VALUE with its NUL, over the limit of %d bytes per variable", k, n, limits.EnvEntry)
		}
		total += n
	}
	if total > limits.EnvTotal {
		return Errorf("env", "is %d bytes in all (each variable as KEY=VALUE with its NUL), over the limit of %d bytes", total, limits.EnvTotal)
	}
	return nil
}

// checkGPUTypes refuses blank entries: they would match no GPU.
func checkGPUTypes(e *Endpoint) error {
	for _, t := range e.GPUTypes {
		if strings.TrimSpace(t) == "" {
			return Errorf("gpuTypes", "contains an empty entry")
		}
	}
	return nil
}
