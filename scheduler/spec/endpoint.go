package spec

import "maps"

// Endpoint is a complete endpoint definition. Its JSON form is the store's
// record of it (scheduler/store aliases it as store.Endpoint), so the tags
// must not change: records written by earlier versions are read with them.
type Endpoint struct {
	ID                 string            `json:"id"`
	Name               string            `json:"name"`
	Image              string            `json:"image,omitempty"`
	Command            []string          `json:"command,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	WorkersMin         int               `json:"workersMin"`
	WorkersMax         int               `json:"workersMax"`
	IdleTimeoutSec     int               `json:"idleTimeout"`
	ExecutionTimeoutMs int64             `json:"executionTimeoutMs"`
	ScalerType         string            `json:"scalerType"`
	ScalerValue        int               `json:"scalerValue"`
	GPUCount           int               `json:"gpuCount"`
	GPUTypes           []string          `json:"gpuTypes,omitempty"`
	MemoryMB           int               `json:"memoryMb,omitempty"`
	CPUs               float64           `json:"cpus,omitempty"`
	PidsLimit          int               `json:"pidsLimit,omitempty"`
	Network            string            `json:"network,omitempty"`
	// InitTimeoutSec, FlashbootWindowSec: 0 in records written before the
	// fields existed, read as the defaults.
	InitTimeoutSec     int  `json:"initTimeout,omitempty"`
	Flashboot          bool `json:"flashboot,omitempty"`
	FlashbootWindowSec int  `json:"flashbootWindow,omitempty"`
	MaxAttempts        int  `json:"maxAttempts,omitempty"`
	GPUMemoryMB        int  `json:"gpuMemoryMb,omitempty"`
	NoInit             bool `json:"noInit,omitempty"` // init false; zero (older records too): an init
	// GPUPark, GPUParkDelaySec: "" and 0 in records written before the
	// fields existed, read as the defaults.
	GPUPark         string `json:"gpuPark,omitempty"`
	GPUParkDelaySec int    `json:"gpuParkDelay,omitempty"`
	CreatedAt       int64  `json:"createdAt"`
	UpdatedAt       int64  `json:"updatedAt"`
	// Generation counts the updates that changed what a worker runs
	// (changesWorkers in package scheduler); records written before it
	// existed have none and read as generation 1.
	Generation int64 `json:"generation,omitempty"`
	// Template and TemplateVersion name the template the endpoint was
	// deployed from (daemon/templates); empty for one created directly.
	Template        string `json:"template,omitempty"`
	TemplateVersion int    `json:"templateVersion,omitempty"`
}

// EndpointSpec is a create or update request. Nil pointers mean "not given":
// on create the RunPod default applies, on update the value is kept.
type EndpointSpec struct {
	Name               *string
	Image              *string
	Command            *[]string
	Env                *map[string]string
	WorkersMin         *int
	WorkersMax         *int
	IdleTimeout        *int // seconds
	ExecutionTimeoutMs *int64
	ScalerType         *string
	ScalerValue        *int
	GPUCount           *int
	GPUTypes           *[]string
	MemoryMB           *int
	CPUs               *float64
	PidsLimit          *int
	Network            *string
	InitTimeout        *int // seconds
	Flashboot          *bool
	FlashbootWindow    *int // seconds
	MaxAttempts        *int
	GPUMemoryMB        *int
	// Init: false runs the worker's entrypoint as its container's PID 1,
	// without the runtime's init.
	Init *bool
	// GPUPark is when an idle worker's GPU state is moved to host memory
	// and its GPU given up (ParkNever, ParkOnReclaim, ParkIdle).
	GPUPark *string
	// GPUParkDelay is how long a worker is idle before ParkIdle parks it.
	GPUParkDelay *int // seconds
	// Template and TemplateVersion record the template an endpoint is
	// deployed from (daemon/templates' Resolve sets them). The public
	// create and update requests never set them: they describe where the
	// endpoint came from, not what it runs.
	Template        *string
	TemplateVersion *int
}

// RunPod's endpoint defaults (docs/compat.md).
const (
	DefaultWorkersMax         = 3
	DefaultIdleTimeoutSec     = 5
	DefaultExecutionTimeoutMs = 600_000
	DefaultScalerValue        = 4
	DefaultGPUCount           = 1
	ScalerQueueDelay          = "QUEUE_DELAY"
	ScalerRequestCount        = "REQUEST_COUNT"
	DefaultPidsLimit          = 4096
	// DefaultInitTimeoutSec is how long a new worker may load (pull
	// weights, compile kernels) before its first job-take or ping.
	DefaultInitTimeoutSec = 420
	// DefaultFlashbootWindowSec is how long a frozen worker is kept for
	// revival before it is stopped.
	DefaultFlashbootWindowSec = 300
	NetworkHost               = "host"
	NetworkNone               = "none"
)

// gpuPark values: when a GPU worker's GPU state is moved to host memory
// (parked) and its GPU given up, instead of keeping the GPU or being killed.
const (
	// ParkNever: never parked (the default); a worker that must give up
	// its GPU is killed.
	ParkNever = "never"
	// ParkOnReclaim: parked instead of killed when another endpoint needs
	// its GPU.
	ParkOnReclaim = "onReclaim"
	// ParkIdle: also parked once it has been frozen or idle past its idle
	// timeout for gpuParkDelay seconds, whether or not the GPU is wanted.
	ParkIdle = "idle"
	// DefaultGPUParkDelaySec is gpuParkDelay's default.
	DefaultGPUParkDelaySec = 60
)

// Default is the endpoint a create starts from: RunPod's defaults, before
// the request's fields are applied.
func Default() Endpoint {
	return Endpoint{
		WorkersMax:         DefaultWorkersMax,
		IdleTimeoutSec:     DefaultIdleTimeoutSec,
		ExecutionTimeoutMs: DefaultExecutionTimeoutMs,
		ScalerType:         ScalerQueueDelay,
		ScalerValue:        DefaultScalerValue,
		GPUCount:           DefaultGPUCount,
		PidsLimit:          DefaultPidsLimit,
		Network:            NetworkHost,
		InitTimeoutSec:     DefaultInitTimeoutSec,
		FlashbootWindowSec: DefaultFlashbootWindowSec,
		GPUPark:            ParkNever,
		GPUParkDelaySec:    DefaultGPUParkDelaySec,
	}
}

// Apply sets the fields sp gives on e and leaves the others alone. Slices
// and maps are copied, so e shares no memory with sp.
func (sp EndpointSpec) Apply(e *Endpoint) {
	set(&e.Name, sp.Name)
	set(&e.Image, sp.Image)
	if sp.Command != nil {
		e.Command = append([]string(nil), (*sp.Command)...)
	}
	if sp.Env != nil {
		e.Env = make(map[string]string, len(*sp.Env))
		maps.Copy(e.Env, *sp.Env)
	}
	set(&e.WorkersMin, sp.WorkersMin)
	set(&e.WorkersMax, sp.WorkersMax)
	set(&e.IdleTimeoutSec, sp.IdleTimeout)
	set(&e.ExecutionTimeoutMs, sp.ExecutionTimeoutMs)
	set(&e.ScalerType, sp.ScalerType)
	set(&e.ScalerValue, sp.ScalerValue)
	set(&e.GPUCount, sp.GPUCount)
	if sp.GPUTypes != nil {
		e.GPUTypes = append([]string(nil), (*sp.GPUTypes)...)
	}
	set(&e.MemoryMB, sp.MemoryMB)
	set(&e.CPUs, sp.CPUs)
	set(&e.PidsLimit, sp.PidsLimit)
	set(&e.Network, sp.Network)
	set(&e.InitTimeoutSec, sp.InitTimeout)
	set(&e.Flashboot, sp.Flashboot)
	set(&e.FlashbootWindowSec, sp.FlashbootWindow)
	set(&e.MaxAttempts, sp.MaxAttempts)
	set(&e.GPUMemoryMB, sp.GPUMemoryMB)
	if sp.Init != nil {
		e.NoInit = !*sp.Init
	}
	set(&e.GPUPark, sp.GPUPark)
	set(&e.GPUParkDelaySec, sp.GPUParkDelay)
	set(&e.Template, sp.Template)
	set(&e.TemplateVersion, sp.TemplateVersion)
}

// set copies *v into *dst when v is given.
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}
