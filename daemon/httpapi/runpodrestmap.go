package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

// This file maps RunPod's REST model (rest.runpod.io/v1: its Template,
// TemplateCreateInput, TemplateUpdateInput, Endpoint, EndpointCreateInput
// and EndpointUpdateInput schemas) onto Ember's templates and endpoints,
// both ways. It is pure: runpodrest.go does the I/O. docs/compat.md ("RunPod
// REST model") has the field-by-field table this code implements.

// RunPod's template categories and compute types.
const (
	rpCategoryNVIDIA = "NVIDIA"
	rpCategoryAMD    = "AMD"
	rpCategoryCPU    = "CPU"
	rpComputeGPU     = "GPU"
	rpComputeCPU     = "CPU"
)

// rpTemplate is a template as rest.runpod.io/v1 shows it. Its id is the
// Ember template's name: Ember names templates, RunPod numbers them.
type rpTemplate struct {
	ID                string            `json:"id"`
	Name              string            `json:"name"`
	ImageName         string            `json:"imageName"`
	DockerStartCmd    []string          `json:"dockerStartCmd"`
	DockerEntrypoint  []string          `json:"dockerEntrypoint"`
	Env               map[string]string `json:"env"`
	Category          string            `json:"category"`
	ContainerDiskInGb int               `json:"containerDiskInGb"`
	VolumeInGb        int               `json:"volumeInGb"`
	VolumeMountPath   string            `json:"volumeMountPath"`
	Ports             []string          `json:"ports"`
	IsPublic          bool              `json:"isPublic"`
	IsRunpod          bool              `json:"isRunpod"`
	IsServerless      bool              `json:"isServerless"`
	Readme            string            `json:"readme"`
	Earned            float64           `json:"earned"`
	RuntimeInMin      int               `json:"runtimeInMin"`
}

// rpTemplateInput is the body of POST /templates (TemplateCreateInput) and
// PATCH /templates/{id} (TemplateUpdateInput). Nil: not given.
type rpTemplateInput struct {
	Name                    *string            `json:"name"`
	ImageName               *string            `json:"imageName"`
	DockerStartCmd          *[]string          `json:"dockerStartCmd"`
	DockerEntrypoint        *[]string          `json:"dockerEntrypoint"`
	Env                     *map[string]string `json:"env"`
	Category                *string            `json:"category"`
	Readme                  *string            `json:"readme"`
	IsServerless            *bool              `json:"isServerless"`
	ContainerDiskInGb       *int               `json:"containerDiskInGb"`
	ContainerRegistryAuthID *string            `json:"containerRegistryAuthId"`
	VolumeInGb              *int               `json:"volumeInGb"`
	VolumeMountPath         *string            `json:"volumeMountPath"`
	Ports                   *[]string          `json:"ports"`
	IsPublic                *bool              `json:"isPublic"`
}

// rpEndpoint is an endpoint as rest.runpod.io/v1 shows it. Flashboot is
// not in RunPod's Endpoint schema (only in its inputs); it is shown so that
// what a client set can be read back.
type rpEndpoint struct {
	ID                  string            `json:"id"`
	Name                string            `json:"name"`
	TemplateID          string            `json:"templateId"`
	Template            *rpTemplate       `json:"template,omitempty"`
	Version             int64             `json:"version"`
	ComputeType         string            `json:"computeType"`
	GPUCount            int               `json:"gpuCount"`
	GPUTypeIDs          []string          `json:"gpuTypeIds"`
	WorkersMin          int               `json:"workersMin"`
	WorkersMax          int               `json:"workersMax"`
	IdleTimeout         int               `json:"idleTimeout"`
	ScalerType          string            `json:"scalerType"`
	ScalerValue         int               `json:"scalerValue"`
	ExecutionTimeoutMs  int64             `json:"executionTimeoutMs"`
	Flashboot           bool              `json:"flashboot"`
	Env                 map[string]string `json:"env"`
	CreatedAt           string            `json:"createdAt"`
	DataCenterIDs       []string          `json:"dataCenterIds"`
	NetworkVolumeIDs    []string          `json:"networkVolumeIds"`
	AllowedCudaVersions []string          `json:"allowedCudaVersions"`
	InstanceIDs         []string          `json:"instanceIds"`
	Workers             *[]rpWorker       `json:"workers,omitempty"`
}

// rpWorker is a worker as RunPod's Endpoint.workers lists it (its Pod
// schema, in part): what Ember knows of a worker that the Pod schema has a
// field for.
type rpWorker struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	EndpointID       string `json:"endpointId"`
	DesiredStatus    string `json:"desiredStatus"`
	LastStatusChange string `json:"lastStatusChange"`
	LastStartedAt    string `json:"lastStartedAt"`
	Image            string `json:"image"`
	TemplateID       string `json:"templateId"`
	SLSVersion       int64  `json:"slsVersion"`
	GPUCount         int    `json:"gpuCount"`
}

// rpEndpointInput is the body of POST /endpoints (EndpointCreateInput) and
// PATCH /endpoints/{id} (EndpointUpdateInput). Nil: not given.
type rpEndpointInput struct {
	TemplateID         *string   `json:"templateId"`
	Name               *string   `json:"name"`
	ComputeType        *string   `json:"computeType"`
	GPUCount           *int      `json:"gpuCount"`
	GPUTypeIDs         *[]string `json:"gpuTypeIds"`
	VCPUCount          *int      `json:"vcpuCount"`
	WorkersMin         *int      `json:"workersMin"`
	WorkersMax         *int      `json:"workersMax"`
	IdleTimeout        *int      `json:"idleTimeout"`
	ScalerType         *string   `json:"scalerType"`
	ScalerValue        *int      `json:"scalerValue"`
	ExecutionTimeoutMs *int64    `json:"executionTimeoutMs"`
	Flashboot          *bool     `json:"flashboot"`
	// Accepted, meaningless on one machine (docs/compat.md).
	DataCenterIDs       *[]string `json:"dataCenterIds"`
	NetworkVolumeID     *string   `json:"networkVolumeId"`
	NetworkVolumeIDs    *[]string `json:"networkVolumeIds"`
	AllowedCudaVersions *[]string `json:"allowedCudaVersions"`
	MinCudaVersion      *string   `json:"minCudaVersion"`
	CPUFlavorIDs        *[]string `json:"cpuFlavorIds"`
	InstanceIDs         *[]string `json:"instanceIds"`
}

// rpError is a 4xx from /runpod/v1: RunPod's v1 error object
// ({"message"}), with the field at fault when there is one.
type rpError struct {
	Code    int
	Message string
	Field   string
}

func (e *rpError) Error() string { return e.Message }

// rpBad is a 400 naming field.
func rpBad(field, format string, a ...any) *rpError {
	msg := fmt.Sprintf(format, a...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &rpError{Code: 400, Message: msg, Field: field}
}

// rpFieldNames are Ember's field names (spec.FieldError, templates'
// FieldError) as RunPod's REST model calls them.
var rpFieldNames = map[string]string{
	"image":       "imageName",
	"command":     "dockerStartCmd",
	"gpuTypes":    "gpuTypeIds",
	"cpus":        "vcpuCount",
	"description": "readme",
}

// rpFieldError turns a field error from the scheduler or the template
// store into a 400 that names the field as RunPod does.
func rpFieldError(fe *spec.FieldError) *rpError {
	field := fe.Field
	if n, ok := rpFieldNames[field]; ok {
		field = n
	}
	if strings.HasPrefix(field, "env[") {
		// A template's variables are a list in Ember ("env[2].name"),
		// an object in RunPod's model: the message names the variable.
		field = "env"
	}
	return rpBad(field, "%s", fe.Msg)
}

// decodeRP reads a JSON object into v (a pointer to an input struct):
// unknown fields are refused, so that nothing a client sends is dropped
// without a word, and a field of the wrong type is named.
func decodeRP(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return rpBad("", "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err := dec.Token(); err != io.EOF {
			return rpBad("", "the request body has data after its JSON object")
		}
		return nil
	}
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return rpBad(te.Field, "must be %s, not a JSON %s", rpTypeName(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return rpBad("", "invalid JSON at byte %d: %v", se.Offset, se)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return rpBad(f, "is not a field of RunPod's REST model that Ember takes (docs/compat.md, RunPod REST model)")
	}
	return rpBad("", "the request body is not valid JSON: %v", err)
}

// rpTypeName says a Go type as JSON types are named.
func rpTypeName(t string) string {
	switch {
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int"):
		return "an integer"
	case t == "[]string":
		return "an array of strings"
	case t == "map[string]string":
		return "an object of strings"
	}
	return "a " + t
}

// rpTemplateOf shows an Ember template as RunPod's Template. The fields
// RunPod has and Ember does not (disk sizes, volume, ports, registry auth,
// publicity, earnings) show Ember's value: none.
func rpTemplateOf(t templates.Template) rpTemplate {
	env := make(map[string]string, len(t.Env))
	for _, v := range t.Env {
		env[v.Name] = v.Default
	}
	cmd := slices.Clone(t.Command)
	if cmd == nil {
		cmd = []string{}
	}
	cat := rpCategoryNVIDIA
	if t.GPUCount == 0 {
		cat = rpCategoryCPU
	}
	return rpTemplate{
		ID: t.Name, Name: t.Name, ImageName: t.Image,
		DockerStartCmd: cmd, DockerEntrypoint: []string{}, Env: env,
		Category: cat, Ports: []string{}, IsRunpod: t.Builtin, IsServerless: true,
		Readme: t.Description,
	}
}

// templateFromRP applies a RunPod template create (create true) or update
// to base: the zero Template for a create, the stored one for an update.
// A create starts from RunPod's endpoint defaults, which are what an
// endpoint created from a RunPod template gets where its create request is
// silent.
func templateFromRP(in rpTemplateInput, base templates.Template, create bool) (templates.Template, error) {
	t := base
	t.Command = slices.Clone(base.Command)
	t.Env = slices.Clone(base.Env)
	t.GPUTypes = slices.Clone(base.GPUTypes)
	if create {
		d := spec.Default()
		t.GPUCount = d.GPUCount
		t.WorkersMin, t.WorkersMax, t.IdleTimeoutSec = d.WorkersMin, d.WorkersMax, d.IdleTimeoutSec
		t.ExecutionTimeoutMs, t.ScalerType, t.ScalerValue = d.ExecutionTimeoutMs, d.ScalerType, d.ScalerValue
		switch {
		case in.Name == nil || *in.Name == "":
			return t, rpBad("name", "is required")
		case in.ImageName == nil || *in.ImageName == "":
			return t, rpBad("imageName", "is required")
		}
	}
	if in.Name != nil {
		if !create && *in.Name != base.Name {
			return t, rpBad("name", "is %q but the template is %q: an Ember template's name is its id and cannot change (create a new template and delete this one)", *in.Name, base.Name)
		}
		t.Name = *in.Name
	}
	if in.ImageName != nil {
		t.Image = *in.ImageName
	}
	if in.DockerStartCmd != nil || in.DockerEntrypoint != nil {
		// Ember's command replaces the image's ENTRYPOINT and CMD both:
		// the entrypoint given, then the start command.
		var cmd []string
		if in.DockerEntrypoint != nil {
			cmd = append(cmd, *in.DockerEntrypoint...)
		}
		if in.DockerStartCmd != nil {
			cmd = append(cmd, *in.DockerStartCmd...)
		}
		t.Command = cmd
	}
	if in.Env != nil {
		for _, k := range slices.Sorted(maps.Keys(*in.Env)) {
			if strings.Contains((*in.Env)[k], "RUNPOD_SECRET_") && strings.Contains((*in.Env)[k], "{{") {
				// RunPod replaces {{ RUNPOD_SECRET_name }} with a secret of
				// the account's; passed as written, a worker would get the
				// placeholder instead of the value.
				return t, rpBad("env."+k, "is a RunPod secret reference; Ember has no secret store: give the value itself (a template variable can be marked secret through /v1/templates)")
			}
		}
		t.Env = envFromRP(*in.Env, base.Env)
	}
	if in.Readme != nil {
		t.Description = *in.Readme
	}
	if in.Category != nil {
		switch *in.Category {
		case rpCategoryCPU:
			t.GPUCount = 0
			t.GPUTypes = nil
		case rpCategoryNVIDIA:
			if t.GPUCount == 0 {
				t.GPUCount = spec.DefaultGPUCount
			}
		case rpCategoryAMD:
			return t, rpBad("category", "AMD: Ember runs workers on NVIDIA GPUs (or none); use NVIDIA or CPU")
		default:
			return t, rpBad("category", "must be NVIDIA, AMD or CPU")
		}
	}
	if in.IsServerless != nil && !*in.IsServerless {
		return t, rpBad("isServerless", "false makes a Pod template; Ember has no Pods, only serverless endpoints (leave it out or set true)")
	}
	return t, nil
}

// envFromRP is RunPod's env object as a template's variables, in name
// order: each value is the variable's default. A variable the template
// already documents keeps its description and secret flag, and stays
// required if it is given no value.
func envFromRP(env map[string]string, old []templates.EnvVar) []templates.EnvVar {
	byName := make(map[string]templates.EnvVar, len(old))
	for _, v := range old {
		byName[v.Name] = v
	}
	out := make([]templates.EnvVar, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := byName[k]
		v.Name, v.Default = k, env[k]
		v.Required = v.Required && env[k] == ""
		out = append(out, v)
	}
	return out
}

// rpEndpointOf shows an Ember endpoint as RunPod's Endpoint. An endpoint
// created through Ember's own /v1 has no template: templateId "".
func rpEndpointOf(e spec.Endpoint) rpEndpoint {
	compute := rpComputeGPU
	if e.GPUCount == 0 {
		compute = rpComputeCPU
	}
	env := maps.Clone(e.Env)
	if env == nil {
		env = map[string]string{}
	}
	types := slices.Clone(e.GPUTypes)
	if types == nil {
		types = []string{}
	}
	return rpEndpoint{
		ID: e.ID, Name: e.Name, TemplateID: e.Template,
		Version:     max(e.Generation-1, 0),
		ComputeType: compute, GPUCount: e.GPUCount, GPUTypeIDs: types,
		WorkersMin: e.WorkersMin, WorkersMax: e.WorkersMax, IdleTimeout: e.IdleTimeoutSec,
		ScalerType: e.ScalerType, ScalerValue: e.ScalerValue,
		ExecutionTimeoutMs: e.ExecutionTimeoutMs, Flashboot: e.Flashboot,
		Env:           env,
		CreatedAt:     rpTime(e.CreatedAt),
		DataCenterIDs: []string{}, NetworkVolumeIDs: []string{},
		AllowedCudaVersions: []string{}, InstanceIDs: []string{},
	}
}

// rpWorkerOf shows a worker of e as RunPod's Pod.
func rpWorkerOf(w scheduler.WorkerInfo, e spec.Endpoint) rpWorker {
	status := string(w.State)
	if w.Reason != "" {
		status += ": " + w.Reason
	}
	started := ""
	if !w.StartedAt.IsZero() {
		started = w.StartedAt.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return rpWorker{
		ID: w.ID, Name: w.ID, EndpointID: w.EndpointID, DesiredStatus: "RUNNING",
		LastStatusChange: status, LastStartedAt: started,
		Image: e.Image, TemplateID: e.Template, SLSVersion: max(w.Generation-1, 0),
		GPUCount: len(w.GPUs),
	}
}

// rpTime is a unix-ms time as RunPod writes one: "2024-07-12T19:14:40.144Z".
func rpTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// endpointSpecFromRP is the scheduler's create (cur nil) or update (cur
// the endpoint now) request for a RunPod endpoint input. tmpl is the
// template that in.templateId names, resolved by the caller; nil when the
// input names none. A create resolves the template (its image, command,
// environment and defaults) and records it; an update that names a
// template re-resolves what a worker runs from the template's current
// version and keeps the endpoint's scaling. newName makes a name for a
// create that gives none (RunPod's name is optional; Ember's is required).
func endpointSpecFromRP(in rpEndpointInput, cur *spec.Endpoint, tmpl *templates.Template, newName func(tmpl string) string) (spec.EndpointSpec, error) {
	var sp spec.EndpointSpec
	if in.Name != nil && *in.Name == "" {
		return sp, rpBad("name", "must not be empty")
	}
	if tmpl != nil {
		name := ""
		switch {
		case in.Name != nil:
			name = *in.Name
		case cur != nil:
			name = cur.Name
		default:
			name = newName(tmpl.Name)
		}
		d := templates.Deploy{Name: name}
		if cur != nil {
			// What a worker runs comes from the template; the endpoint
			// keeps its own environment values for the template's
			// variables and its scaling.
			d.Env = maps.Clone(cur.Env)
		}
		r, err := tmpl.Resolve(d)
		if err != nil {
			var fe *spec.FieldError
			if errors.As(err, &fe) {
				return sp, rpBad("templateId", "template %s: %s", tmpl.Name, fe.Error())
			}
			return sp, err
		}
		if cur != nil {
			r = spec.EndpointSpec{Name: r.Name, Image: r.Image, Command: r.Command, Env: r.Env,
				Template: r.Template, TemplateVersion: r.TemplateVersion}
			if r.Command == nil {
				r.Command = &[]string{}
			}
		}
		sp = r
	} else if in.Name != nil {
		sp.Name = in.Name
	}
	if cur == nil && tmpl == nil {
		return sp, rpBad("templateId", "is required")
	}

	// The compute type decides which of the GPU and CPU fields apply, as
	// RunPod's does: a CPU endpoint ignores gpuCount and gpuTypeIds, a GPU
	// endpoint ignores vcpuCount.
	gpus := 0
	switch {
	case sp.GPUCount != nil:
		gpus = *sp.GPUCount
	case cur != nil:
		gpus = cur.GPUCount
	}
	compute := ""
	if in.ComputeType != nil {
		compute = *in.ComputeType
		if compute != rpComputeGPU && compute != rpComputeCPU {
			return sp, rpBad("computeType", "must be GPU or CPU")
		}
	}
	if in.GPUCount != nil && *in.GPUCount < 1 && compute != rpComputeCPU {
		return sp, rpBad("gpuCount", "must be at least 1 (for workers without a GPU, set computeType CPU)")
	}
	switch {
	case compute == rpComputeCPU:
		gpus = 0
		sp.GPUTypes = &[]string{}
	case compute == rpComputeGPU || in.GPUCount != nil || in.GPUTypeIDs != nil:
		if in.GPUCount != nil {
			gpus = *in.GPUCount
		}
		if gpus == 0 {
			gpus = spec.DefaultGPUCount
		}
		if in.GPUTypeIDs != nil {
			g := slices.Clone(*in.GPUTypeIDs)
			sp.GPUTypes = &g
		}
	}
	sp.GPUCount = &gpus
	if in.VCPUCount != nil && gpus == 0 {
		if *in.VCPUCount < 1 {
			return sp, rpBad("vcpuCount", "must be at least 1")
		}
		c := float64(*in.VCPUCount)
		sp.CPUs = &c
	}
	if in.WorkersMin != nil {
		sp.WorkersMin = in.WorkersMin
	}
	if in.WorkersMax != nil {
		sp.WorkersMax = in.WorkersMax
	}
	if in.IdleTimeout != nil {
		sp.IdleTimeout = in.IdleTimeout
	}
	if in.ScalerType != nil {
		sp.ScalerType = in.ScalerType
	}
	if in.ScalerValue != nil {
		sp.ScalerValue = in.ScalerValue
	}
	if in.ExecutionTimeoutMs != nil {
		sp.ExecutionTimeoutMs = in.ExecutionTimeoutMs
	}
	if in.Flashboot != nil {
		sp.Flashboot = in.Flashboot
	}
	return sp, nil
}
