// Package templates keeps endpoint templates: named, versioned presets of
// what an endpoint runs (image, start command, documented environment) and
// how it scales, from which an operator deploys an endpoint by giving only
// what has no default. Ember ships built-in templates for the common RunPod
// worker kinds; operators add their own.
package templates

// Template is a named, versioned endpoint preset. Its JSON form is the API's
// (GET /v1/templates) and the preload folder's.
type Template struct {
	// Name is the template's key: lower-case letters, digits and '-'.
	Name string `json:"name"`
	// Version starts at 1 and grows by one on every update.
	Version int `json:"version"`
	// Builtin templates ship with Ember; they cannot be changed or deleted.
	Builtin     bool   `json:"builtin,omitempty"`
	Description string `json:"description,omitempty"`
	// Category groups the catalog in the console ("handler", "llm", ...).
	Category string   `json:"category,omitempty"`
	Image    string   `json:"image"`
	Command  []string `json:"command,omitempty"`
	// Env is the documented environment, in display order.
	Env                []EnvVar `json:"env,omitempty"`
	GPUCount           int      `json:"gpuCount"`
	GPUTypes           []string `json:"gpuTypes,omitempty"`
	MemoryMB           int      `json:"memoryMb,omitempty"`
	CPUs               float64  `json:"cpus,omitempty"`
	WorkersMin         int      `json:"workersMin"`
	WorkersMax         int      `json:"workersMax"`
	IdleTimeoutSec     int      `json:"idleTimeout"`
	ExecutionTimeoutMs int64    `json:"executionTimeoutMs,omitempty"`
	ScalerType         string   `json:"scalerType,omitempty"`
	ScalerValue        int      `json:"scalerValue,omitempty"`
	Flashboot          bool     `json:"flashboot,omitempty"`
	CreatedAt          int64    `json:"createdAt,omitempty"`
	UpdatedAt          int64    `json:"updatedAt,omitempty"`
}

// EnvVar is one documented environment variable of a template.
type EnvVar struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Default is used when a deploy gives no value. A variable that is
	// Required has no default: a deploy must give it.
	Default  string `json:"default,omitempty"`
	Required bool   `json:"required,omitempty"`
	// Secret values (tokens) are shown masked by the console.
	Secret bool `json:"secret,omitempty"`
}
