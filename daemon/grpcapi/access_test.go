package grpcapi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/internal/apimethods"
	"github.com/emberhq/ember/daemon/keys"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// testLookup knows a few keys by their secret.
func testLookup(secret string) (auth.Caller, error) {
	switch secret {
	case "":
		return auth.Caller{}, keys.ErrMissing
	case "admin":
		return keys.AdminCaller(), nil
	case "read":
		return auth.Caller{KeyID: "k-read", Name: "r", Scope: auth.Read}, nil
	case "invoke":
		return auth.Caller{KeyID: "k-inv", Name: "i", Scope: auth.Invoke, Endpoints: []string{"ep-a"}}, nil
	case "expired":
		return auth.Caller{}, &keys.ExpiredError{Caller: auth.Caller{KeyID: "k-old", Name: "o", Scope: auth.Admin, ExpiresAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	}
	return auth.Caller{}, keys.ErrWrong
}

// TestUnaryAuth calls every Ember method through the interceptor with
// each kind of key.
func TestUnaryAuth(t *testing.T) {
	ic := UnaryAuth(testLookup)
	ms, err := apimethods.All()
	if err != nil {
		t.Fatal(err)
	}
	for m, mt := range ms {
		need, _ := authz.MethodNeed(m)
		for _, ep := range []string{"ep-a", "ep-b"} {
			req := mt.New()
			if f := need.EndpointField; f != "" {
				req.Set(req.Descriptor().Fields().ByName(protoreflect.Name(f)), protoreflect.ValueOfString(ep))
			}
			for _, key := range []string{"", "wrong", "expired", "admin", "read", "invoke"} {
				want := codes.OK
				switch {
				case need.Public:
				case key == "" || key == "wrong" || key == "expired":
					want = codes.Unauthenticated
				case key == "admin":
				case key == "read" && !containsScope(need.Scopes, auth.Read):
					want = codes.PermissionDenied
				case key == "invoke" && (!containsScope(need.Scopes, auth.Invoke) || (need.EndpointField != "" && ep != "ep-a")):
					want = codes.PermissionDenied
				}
				ctx := context.Background()
				if key != "" {
					ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+key))
				}
				var caller auth.Caller
				var hasCaller bool
				_, err := ic(ctx, req.Interface(), &grpc.UnaryServerInfo{FullMethod: m}, func(ctx context.Context, _ any) (any, error) {
					caller, hasCaller = auth.FromContext(ctx)
					return nil, nil
				})
				if got := status.Code(err); got != want {
					t.Errorf("%s on %s with key %q: %v; want %v", m, ep, key, err, want)
					continue
				}
				if want == codes.OK && !need.Public && (!hasCaller || caller.Scope == "") {
					t.Errorf("%s with key %q: no caller in the context", m, key)
				}
				if err != nil && strings.Contains(status.Convert(err).Message(), "Bearer "+key) && key != "" {
					t.Errorf("%s: the message echoes the key: %v", m, err)
				}
			}
		}
	}
}

func containsScope(ss []auth.Scope, s auth.Scope) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestRefusalText: gRPC says what REST says.
func TestRefusalText(t *testing.T) {
	ic := UnaryAuth(testLookup)
	for _, tt := range []struct {
		key, method string
		req         proto.Message
		code        codes.Code
		msg         string
	}{
		{"read", emberv1.EndpointService_CreateEndpoint_FullMethodName, &emberv1.CreateEndpointRequest{}, codes.PermissionDenied,
			"key k-read (r) has scope read; ember.v1.EndpointService/CreateEndpoint needs scope admin"},
		{"invoke", emberv1.JobService_Run_FullMethodName, &emberv1.RunJobRequest{EndpointId: "ep-z"}, codes.PermissionDenied,
			"key k-inv (i) does not list endpoint ep-z; it may invoke only ep-a"},
		{"expired", emberv1.JobService_Run_FullMethodName, &emberv1.RunJobRequest{EndpointId: "ep-a"}, codes.Unauthenticated,
			"API key k-old (o) expired at 2025-01-01T00:00:00Z; create a new key (ember key create)"},
		{"", emberv1.JobService_Run_FullMethodName, &emberv1.RunJobRequest{}, codes.Unauthenticated,
			`missing API key: send "authorization: Bearer KEY"`},
		{"nope", emberv1.JobService_Run_FullMethodName, &emberv1.RunJobRequest{}, codes.Unauthenticated,
			`wrong API key: no live key has it (revoked, rotated or mistyped); send "authorization: Bearer KEY"`},
	} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", tt.key))
		_, err := ic(ctx, tt.req, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) { return nil, nil })
		if st := status.Convert(err); st.Code() != tt.code || st.Message() != tt.msg {
			t.Errorf("%s with %q: %v %q; want %v %q", tt.method, tt.key, st.Code(), st.Message(), tt.code, tt.msg)
		}
	}
}

// fakeStream is a server stream whose client sends msgs.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []proto.Message
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) RecvMsg(m any) error {
	if len(s.msgs) == 0 {
		return errors.New("EOF")
	}
	proto.Merge(m.(proto.Message), s.msgs[0])
	s.msgs = s.msgs[1:]
	return nil
}

func TestStreamAuth(t *testing.T) {
	ic := StreamAuth(testLookup)
	run := func(key, method string, msgs ...proto.Message) (auth.Caller, error) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", key))
		var c auth.Caller
		err := ic(nil, &fakeStream{ctx: ctx, msgs: msgs}, &grpc.StreamServerInfo{FullMethod: method}, func(_ any, ss grpc.ServerStream) error {
			c, _ = auth.FromContext(ss.Context())
			for range msgs {
				if err := ss.RecvMsg(&emberv1.GetJobRequest{}); err != nil {
					return err
				}
			}
			return nil
		})
		return c, err
	}
	if _, err := run("", "/grpc.health.v1.Health/Watch"); err != nil {
		t.Errorf("health watch without a key: %v", err)
	}
	if _, err := run("", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a key: %v", err)
	}
	if c, err := run("read", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); err != nil || c.KeyID != "k-read" {
		t.Errorf("reflection with a read key: %+v %v", c, err)
	}
	if _, err := run("invoke", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"); err != nil {
		t.Errorf("reflection with an invoke key: %v", err)
	}
	// A stream on one endpoint: each message's endpoint is checked.
	if _, err := run("invoke", emberv1.JobService_GetJob_FullMethodName, &emberv1.GetJobRequest{EndpointId: "ep-a"}); err != nil {
		t.Errorf("stream on a listed endpoint: %v", err)
	}
	if _, err := run("invoke", emberv1.JobService_GetJob_FullMethodName, &emberv1.GetJobRequest{EndpointId: "ep-a"}, &emberv1.GetJobRequest{EndpointId: "ep-b"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("stream on another endpoint: %v", err)
	}
	if _, err := run("read", emberv1.JobService_GetJob_FullMethodName); status.Code(err) != codes.PermissionDenied {
		t.Errorf("stream with a read key on an invoke method: %v", err)
	}
	if _, err := run("admin", "/ember.v1.NewService/New"); status.Code(err) != codes.Unimplemented {
		t.Errorf("a method without a scope: %v", err)
	}
}
