package templates

import (
	"maps"
	"slices"

	"github.com/emberhq/ember/scheduler/spec"
)

// Deploy is what a deploy of a template gives: the new endpoint's name,
// values for the template's variables (and any others: they are the
// operator's), and the settings that override the template's. Nil pointers
// and a nil GPUTypes keep the template's.
type Deploy struct {
	Name           string
	Env            map[string]string
	GPUCount       *int
	GPUTypes       []string
	WorkersMin     *int
	WorkersMax     *int
	IdleTimeoutSec *int
}

// Resolve is the endpoint a deploy of t creates, as a create request: the
// template's settings with d's overrides, its variables' defaults under
// d's values, and the template's name and version recorded. A required
// variable that d leaves out or empty is a *FieldError "env.NAME" whose
// message is its description. Variables the template does not declare are
// passed as given: the template documents its variables, it does not
// forbid others. The result is checked by the scheduler when the endpoint
// is created, not here.
//
// Zero workersMax, idleTimeout, executionTimeoutMs, scalerType and
// scalerValue in a template mean the endpoint defaults (none of them can
// be zero on an endpoint).
func (t Template) Resolve(d Deploy) (spec.EndpointSpec, error) {
	env := map[string]string{}
	for _, v := range t.Env {
		if v.Default != "" {
			env[v.Name] = v.Default
		}
	}
	maps.Copy(env, d.Env)
	for _, v := range t.Env {
		if v.Required && env[v.Name] == "" {
			msg := "required"
			if v.Description != "" {
				msg += ": " + v.Description
			}
			return spec.EndpointSpec{}, &FieldError{Field: "env." + v.Name, Msg: msg}
		}
	}
	name, image, tmpl, version := d.Name, t.Image, t.Name, t.Version
	if version == 0 {
		version = 1 // a template not yet stored (a trial in Validate)
	}
	gpuCount, workersMin, flashboot := t.GPUCount, t.WorkersMin, t.Flashboot
	sp := spec.EndpointSpec{
		Name: &name, Image: &image, Env: &env,
		GPUCount: &gpuCount, WorkersMin: &workersMin, Flashboot: &flashboot,
		Template: &tmpl, TemplateVersion: &version,
	}
	if name == "" {
		return spec.EndpointSpec{}, &FieldError{Field: "name", Msg: "is required: the new endpoint's name"}
	}
	if len(t.Command) > 0 {
		c := slices.Clone(t.Command)
		sp.Command = &c
	}
	if len(t.GPUTypes) > 0 {
		g := slices.Clone(t.GPUTypes)
		sp.GPUTypes = &g
	}
	sp.WorkersMax = nonZero(t.WorkersMax)
	sp.IdleTimeout = nonZero(t.IdleTimeoutSec)
	sp.ExecutionTimeoutMs = nonZero(t.ExecutionTimeoutMs)
	sp.ScalerType = nonZero(t.ScalerType)
	sp.ScalerValue = nonZero(t.ScalerValue)
	sp.MemoryMB = nonZero(t.MemoryMB)
	sp.CPUs = nonZero(t.CPUs)

	if d.GPUCount != nil {
		sp.GPUCount = ptr(*d.GPUCount)
	}
	if d.GPUTypes != nil {
		g := slices.Clone(d.GPUTypes)
		sp.GPUTypes = &g
	}
	if d.WorkersMin != nil {
		sp.WorkersMin = ptr(*d.WorkersMin)
	}
	if d.WorkersMax != nil {
		sp.WorkersMax = ptr(*d.WorkersMax)
	}
	if d.IdleTimeoutSec != nil {
		sp.IdleTimeout = ptr(*d.IdleTimeoutSec)
	}
	return sp, nil
}

// nonZero is a pointer to v, or nil for v's zero value.
func nonZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func ptr[T any](v T) *T { return &v }
