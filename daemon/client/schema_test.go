package client

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// The wire schema of an endpoint is proto/ember/v1's Endpoint message, as
// protojson writes it on the /v1 routes. These tests hold Endpoint and
// EndpointSpec to it, so that a field added to the proto and not here (or
// given another name or kind here) fails.

// daemonSetFields are the message's fields a definition does not set.
var daemonSetFields = []string{"id", "generation", "template", "templateVersion", "createdAt", "updatedAt"}

// TestEndpointSchema: every JSON field of Endpoint and EndpointSpec is a
// field of the message, of the same JSON kind; Endpoint has every field of
// the message, EndpointSpec every field but daemonSetFields.
func TestEndpointSchema(t *testing.T) {
	fields := (&emberv1.Endpoint{}).ProtoReflect().Descriptor().Fields()
	for _, tc := range []struct {
		typ  reflect.Type
		skip []string // message fields the type leaves out
	}{
		{reflect.TypeFor[Endpoint](), nil},
		{reflect.TypeFor[EndpointSpec](), daemonSetFields},
	} {
		has := map[string]bool{}
		for _, f := range reflect.VisibleFields(tc.typ) {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			has[name] = true
			fd := fields.ByJSONName(name)
			if fd == nil {
				t.Errorf("%s.%s: %q is not a field of emberv1.Endpoint", tc.typ.Name(), f.Name, name)
				continue
			}
			if got, want := goKind(f.Type), protoKind(fd); got != want {
				t.Errorf("%s.%s: JSON %s, but the proto field %s is JSON %s", tc.typ.Name(), f.Name, got, fd.Name(), want)
			}
		}
		for i := range fields.Len() {
			name := fields.Get(i).JSONName()
			if !has[name] && !slices.Contains(tc.skip, name) {
				t.Errorf("%s has no field for the proto field %s (JSON %q)", tc.typ.Name(), fields.Get(i).Name(), name)
			}
		}
	}
}

// TestEndpointDecodesProto: an endpoint with every proto field set, as
// protojson writes it, decodes into an Endpoint with every field set, and
// (without the daemon's fields) into an EndpointSpec with every field set:
// no field is lost between the tags and the decoding.
func TestEndpointDecodesProto(t *testing.T) {
	msg := &emberv1.Endpoint{}
	populate(msg.ProtoReflect())
	b, err := protojson.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var ep Endpoint
	if err := json.Unmarshal(b, &ep); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	for _, name := range daemonSetFields {
		delete(obj, name)
	}
	def, _ := json.Marshal(obj)
	sp, err := ParseEndpointSpec(def)
	if err != nil {
		t.Fatalf("ParseEndpointSpec(%s): %v", def, err)
	}
	for _, v := range []reflect.Value{reflect.ValueOf(ep), reflect.ValueOf(*sp)} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("%s.%s is zero after decoding %s", v.Type().Name(), v.Type().Field(i).Name, b)
			}
		}
	}
}

// goKind is the JSON kind a field of type t reads.
func goKind(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "integer" // a number, or a string holding one (flexInt)
	case reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array of " + goKind(t.Elem())
	case reflect.Map:
		return "object of " + goKind(t.Elem())
	}
	return t.String()
}

// protoKind is the JSON kind protojson writes for fd.
func protoKind(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "object of " + protoKind(fd.MapValue())
	case fd.IsList():
		return "array of " + protoScalarKind(fd)
	}
	return protoScalarKind(fd)
}

func protoScalarKind(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "string"
	case protoreflect.BoolKind:
		return "bool"
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return "integer" // int64 and uint64 as strings
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		return "number"
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			return "string" // RFC 3339
		}
	}
	return fd.Kind().String()
}

// populate sets every field of m to a value that is not its zero.
func populate(m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			m.Mutable(fd).Map().Set(protoreflect.ValueOfString("K").MapKey(), scalar(fd.MapValue()))
		case fd.IsList():
			m.Mutable(fd).List().Append(scalar(fd))
		case fd.Kind() == protoreflect.MessageKind:
			populate(m.Mutable(fd).Message())
		default:
			m.Set(fd, scalar(fd))
		}
	}
}

// scalar is a value of fd's kind that is not zero.
func scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s")
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(7)
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(7)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5)
	}
	panic("populate: no value for a field of kind " + fd.Kind().String())
}
