package authz

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/internal/apimethods"
	"github.com/emberhq/ember/daemon/keys"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

func TestMethodTable(t *testing.T) {
	ms, err := apimethods.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(methodNeeds) {
		t.Errorf("%d methods in the services, %d in the table", len(ms), len(methodNeeds))
	}
	for m, mt := range ms {
		need, ok := MethodNeed(m)
		switch {
		case !ok:
			t.Errorf("%s has no scope", m)
		case !need.Public && len(need.Scopes) == 0:
			t.Errorf("%s: neither public nor scoped", m)
		case need.EndpointField != "" && mt.Descriptor().Fields().ByName(protoreflect.Name(need.EndpointField)) == nil:
			t.Errorf("%s: request %s has no field %s", m, mt.Descriptor().FullName(), need.EndpointField)
		}
	}
	for m, want := range map[string]bool{
		"/grpc.health.v1.Health/Check":                                   true,
		"/grpc.health.v1.Health/Watch":                                   true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      false,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": false,
	} {
		if need, ok := MethodNeed(m); !ok || need.Public != want {
			t.Errorf("%s: %+v %v; want public %v", m, need, ok, want)
		}
	}
	if _, ok := MethodNeed("/ember.v1.NewService/New"); ok {
		t.Error("a method in no table has a need")
	}
}

// Every rate-limited method needs a key: its budget is kept by key.
func TestRateOpsScoped(t *testing.T) {
	for m := range rateOps {
		need, ok := MethodNeed(m)
		if !ok || need.Public {
			t.Errorf("%s is rate-limited but its need is %+v (in the table: %v)", m, need, ok)
		}
	}
	if _, ok := MethodRateOp(emberv1.JobService_GetEndpointHealth_FullMethodName); ok {
		t.Error("GetEndpointHealth is rate-limited; /health is not")
	}
}

func TestPresentedKey(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"ember_abc", "ember_abc"},
		{"Bearer ember_abc", "ember_abc"},
		{"  bearer   ember_abc  ", "ember_abc"},
		{"BEARER x", "x"},
		{"Bearer", "Bearer"},
		{"Basic abc", "Basic abc"},
	} {
		if got := PresentedKey(tt.in); got != tt.want {
			t.Errorf("PresentedKey(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestRefusals: the texts, codes and reasons of Authenticate and
// Authorize, which REST and gRPC both show.
func TestRefusals(t *testing.T) {
	expired := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	lookup := func(secret string) (auth.Caller, error) {
		switch secret {
		case "read":
			return auth.Caller{KeyID: "k-read", Name: "r", Scope: auth.Read}, nil
		case "invoke":
			return auth.Caller{KeyID: "k-inv", Name: "i", Scope: auth.Invoke, Endpoints: []string{"ep-a"}}, nil
		case "expired":
			return auth.Caller{}, &keys.ExpiredError{Caller: auth.Caller{KeyID: "k-old", Name: "o", ExpiresAt: expired}}
		case "missing":
			return auth.Caller{}, keys.ErrMissing
		case "broken":
			return auth.Caller{}, errors.New("disk on fire")
		}
		return auth.Caller{}, keys.ErrWrong
	}
	for _, tt := range []struct {
		key, endpoint string
		need          Need
		code          int
		reason, msg   string
	}{
		{"", "", needAdmin, http.StatusUnauthorized, auth.ReasonMissingKey, `missing API key: send "authorization: Bearer KEY"`},
		{"missing", "", needAdmin, http.StatusUnauthorized, auth.ReasonMissingKey, `missing API key: send "authorization: Bearer KEY"`},
		{"nope", "", needAdmin, http.StatusUnauthorized, auth.ReasonWrongKey, `wrong API key: no live key has it (revoked, rotated or mistyped); send "authorization: Bearer KEY"`},
		{"broken", "", needAdmin, http.StatusUnauthorized, auth.ReasonWrongKey, `wrong API key: no live key has it (revoked, rotated or mistyped); send "authorization: Bearer KEY"`},
		{"expired", "", needAdmin, http.StatusUnauthorized, auth.ReasonExpired, "API key k-old (o) expired at 2025-01-01T00:00:00Z; create a new key (ember key create)"},
		{"read", "", needAdmin, http.StatusForbidden, auth.ReasonScope, "key k-read (r) has scope read; ROUTE needs scope admin"},
		{"read", "", needReadInvoke, 0, "", ""},
		{"invoke", "ep-b", needInvoke, http.StatusForbidden, auth.ReasonEndpoint, "key k-inv (i) does not list endpoint ep-b; it may invoke only ep-a"},
		{"invoke", "ep-a", needInvoke, 0, "", ""},
	} {
		c, ref := Authenticate(lookup, tt.key)
		if ref == nil {
			ref = Authorize(c, tt.need, "ROUTE", tt.endpoint)
		}
		switch {
		case ref == nil && tt.code != 0:
			t.Errorf("key %q on %+v: allowed; want %d %q", tt.key, tt.need, tt.code, tt.msg)
		case ref != nil && (ref.Code != tt.code || ref.Reason != tt.reason || ref.Message != tt.msg):
			t.Errorf("key %q on %+v: %d %s %q; want %d %s %q", tt.key, tt.need, ref.Code, ref.Reason, ref.Message, tt.code, tt.reason, tt.msg)
		}
	}
}
