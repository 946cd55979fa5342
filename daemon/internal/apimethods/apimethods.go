// Package apimethods lists every method of Ember's gRPC services
// (proto/ember/v1) with its request type, for the tests that walk the
// whole API: the scope table's (daemon/authz) and the interceptors'
// (daemon/grpcapi). It imports only the generated API package.
package apimethods

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// All maps each method's full name ("/ember.v1.JobService/Run") to its
// request type.
func All() (map[string]protoreflect.MessageType, error) {
	out := map[string]protoreflect.MessageType{}
	for _, file := range []protoreflect.FileDescriptor{emberv1.File_ember_v1_endpoint_proto, emberv1.File_ember_v1_job_proto, emberv1.File_ember_v1_health_proto, emberv1.File_ember_v1_image_proto} {
		for i := range file.Services().Len() {
			svc := file.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
				if err != nil {
					return nil, fmt.Errorf("request type of %s: %w", m.FullName(), err)
				}
				out["/"+string(svc.FullName())+"/"+string(m.Name())] = mt
			}
		}
	}
	return out, nil
}
