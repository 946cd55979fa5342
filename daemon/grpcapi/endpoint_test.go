package grpcapi

import (
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/spec"
)

// readOnlyFields are the fields of emberv1.Endpoint that emberd sets.
var readOnlyFields = []string{"id", "generation", "template", "template_version", "created_at", "updated_at"}

// TestEndpointFieldsCoverProto: every field of the Endpoint message is
// either settable through endpointFields or read-only, and endpointFields
// names no field the message lacks: a field added to the proto must be
// mapped here.
func TestEndpointFieldsCoverProto(t *testing.T) {
	fields := (&emberv1.Endpoint{}).ProtoReflect().Descriptor().Fields()
	var paths []string
	for _, f := range endpointFields {
		if fields.ByName(protoreflect.Name(f.path)) == nil {
			t.Errorf("endpointFields has %q, which emberv1.Endpoint lacks", f.path)
		}
		if slices.Contains(paths, f.path) {
			t.Errorf("endpointFields has %q twice", f.path)
		}
		paths = append(paths, f.path)
	}
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		if !slices.Contains(paths, name) && !slices.Contains(readOnlyFields, name) {
			t.Errorf("emberv1.Endpoint field %s is neither in endpointFields nor read-only", name)
		}
	}
}

// TestEndpointRoundTrip: an endpoint with every field set comes back from
// its proto form (EndpointProto, then specFrom and Apply) unchanged, so
// both directions map every field.
func TestEndpointRoundTrip(t *testing.T) {
	want := spec.Endpoint{
		ID: "ep1", Name: "n", Image: "img", Command: []string{"/w"}, Env: map[string]string{"K": "v"},
		WorkersMin: 1, WorkersMax: 2, IdleTimeoutSec: 3, ExecutionTimeoutMs: 6000, ScalerType: spec.ScalerRequestCount,
		ScalerValue: 4, GPUCount: 5, GPUTypes: []string{"H100"}, MemoryMB: 64, CPUs: 1.5, PidsLimit: 7,
		Network: spec.NetworkNone, InitTimeoutSec: 60, Flashboot: true, FlashbootWindowSec: 8, MaxAttempts: 9,
		GPUMemoryMB: 1024, NoInit: true, CreatedAt: 1000, UpdatedAt: 2000, Generation: 3, GPUPark: spec.ParkIdle, GPUParkDelaySec: 30,
		Template: "basic", TemplateVersion: 2,
	}
	v := reflect.ValueOf(want)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("the test endpoint leaves %s zero", v.Type().Field(i).Name)
		}
	}
	var got spec.Endpoint
	specFrom(EndpointProto(want), nil).Apply(&got)
	got.ID, got.CreatedAt, got.UpdatedAt, got.Generation = want.ID, want.CreatedAt, want.UpdatedAt, want.Generation
	got.Template, got.TemplateVersion = want.Template, want.TemplateVersion
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

// TestSpecFromMask: without a mask, empty strings and lists are not given
// and present optional fields are; with one, only the named fields are
// given, empty ones too.
func TestSpecFromMask(t *testing.T) {
	zero := int32(0)
	e := &emberv1.Endpoint{Name: "", Image: "img", WorkersMin: &zero}
	cases := []struct {
		name                string
		mask                []string
		nameSet, imageSet   bool
		workersMin, gpusSet bool
	}{
		{"no mask", nil, false, true, true, false},
		{"mask name", []string{"name"}, true, false, false, false},
		{"mask image and workers", []string{"image", "workers_min", "gpu_types"}, false, true, true, true},
		{"mask unknown", []string{"id", "nope"}, false, false, false, false},
	}
	for _, tc := range cases {
		sp := specFrom(e, tc.mask)
		got := []bool{sp.Name != nil, sp.Image != nil, sp.WorkersMin != nil, sp.GPUTypes != nil}
		want := []bool{tc.nameSet, tc.imageSet, tc.workersMin, tc.gpusSet}
		if !slices.Equal(got, want) {
			t.Errorf("%s: given name, image, workersMin, gpuTypes = %v, want %v", tc.name, got, want)
		}
	}
	if sp := specFrom(nil, nil); !reflect.DeepEqual(sp, spec.EndpointSpec{}) {
		t.Errorf("specFrom(nil) = %+v, want nothing given", sp)
	}
}
