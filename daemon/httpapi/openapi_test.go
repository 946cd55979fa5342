package httpapi

import (
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/proto/openapi"
)

// docRoute is one REST operation as the OpenAPI document names it: a
// lower-case method and a path template.
type docRoute struct{ method, path string }

func (r docRoute) String() string { return strings.ToUpper(r.method) + " " + r.path }

// handServedRoutes are the routes ServeHTTP serves itself rather than
// through the /v1 gateway, as the OpenAPI document names them; public
// marks those that need no key, worker those that take a worker's token.
// This is the one list of them the document is checked against.
var handServedRoutes = []struct {
	docRoute
	public, worker bool
}{
	{docRoute: docRoute{"get", "/healthz"}, public: true},
	{docRoute: docRoute{"get", "/readyz"}, public: true},
	{docRoute: docRoute{"get", "/openapi.json"}, public: true},
	{docRoute: docRoute{"get", "/metrics"}},

	{docRoute: docRoute{"get", "/"}, public: true},
	{docRoute: docRoute{"get", "/console/session"}, public: true},
	{docRoute: docRoute{"post", "/console/session"}, public: true},
	{docRoute: docRoute{"delete", "/console/session"}, public: true},
	{docRoute: docRoute{"get", "/console/{file}"}, public: true},

	{docRoute: docRoute{"post", "/v2/{endpoint}/run"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/runsync"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/status/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/status/{id}"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/status-sync/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/status-sync/{id}"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/stream/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/stream/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/cancel/{id}"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/cancel/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/retry/{id}"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/purge-queue"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/health"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/health"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/openai/v1/chat/completions"}},
	{docRoute: docRoute{"post", "/v2/{endpoint}/openai/v1/completions"}},
	{docRoute: docRoute{"get", "/v2/{endpoint}/openai/v1/models"}},

	{docRoute: docRoute{"get", "/v2/{endpoint}/job-take/{workerId}"}, worker: true},
	{docRoute: docRoute{"get", "/v2/{endpoint}/job-take-batch/{workerId}"}, worker: true},
	{docRoute: docRoute{"get", "/v2/{endpoint}/job-stop/{workerId}"}, worker: true},
	{docRoute: docRoute{"post", "/v2/{endpoint}/job-done/{workerId}/{jobId}"}, worker: true},
	{docRoute: docRoute{"post", "/v2/{endpoint}/job-stream/{workerId}/{jobId}"}, worker: true},
	{docRoute: docRoute{"get", "/v2/{endpoint}/ping/{workerId}"}, worker: true},

	{docRoute: docRoute{"get", "/v1/keys"}},
	{docRoute: docRoute{"post", "/v1/keys"}},
	{docRoute: docRoute{"delete", "/v1/keys/{id}"}},
	{docRoute: docRoute{"post", "/v1/keys:rotate-admin"}},
	{docRoute: docRoute{"get", "/v1/gpus"}},
	{docRoute: docRoute{"get", "/v1/workers"}},
	{docRoute: docRoute{"get", "/v1/workers/{id}/logs"}},
	{docRoute: docRoute{"get", "/v1/endpoints/{id}/logs"}},
	{docRoute: docRoute{"post", "/v1/workers/{id}:stop"}},
	{docRoute: docRoute{"get", "/v1/endpoints/{id}/history"}},
	{docRoute: docRoute{"get", "/v1/endpoints/{endpointId}/jobs"}},
	{docRoute: docRoute{"post", "/v1/images:upload"}},
	// Templates and Quick Deploy (templates.go).
	{docRoute: docRoute{"get", "/v1/templates"}},
	{docRoute: docRoute{"post", "/v1/templates"}},
	{docRoute: docRoute{"get", "/v1/templates/{name}"}},
	{docRoute: docRoute{"patch", "/v1/templates/{name}"}},
	{docRoute: docRoute{"delete", "/v1/templates/{name}"}},
	{docRoute: docRoute{"post", "/v1/templates/{name}:deploy"}},
	// RunPod's REST model (runpodrest.go).
	{docRoute: docRoute{"get", "/runpod/v1/templates"}},
	{docRoute: docRoute{"post", "/runpod/v1/templates"}},
	{docRoute: docRoute{"get", "/runpod/v1/templates/{templateId}"}},
	{docRoute: docRoute{"patch", "/runpod/v1/templates/{templateId}"}},
	{docRoute: docRoute{"post", "/runpod/v1/templates/{templateId}/update"}},
	{docRoute: docRoute{"delete", "/runpod/v1/templates/{templateId}"}},
	{docRoute: docRoute{"get", "/runpod/v1/endpoints"}},
	{docRoute: docRoute{"post", "/runpod/v1/endpoints"}},
	{docRoute: docRoute{"get", "/runpod/v1/endpoints/{endpointId}"}},
	{docRoute: docRoute{"patch", "/runpod/v1/endpoints/{endpointId}"}},
	{docRoute: docRoute{"post", "/runpod/v1/endpoints/{endpointId}/update"}},
	{docRoute: docRoute{"delete", "/runpod/v1/endpoints/{endpointId}"}},
}

// anyVar matches a path variable, for comparing templates whose variables
// are named differently ({job} in the route table, {id} in the document).
var anyVar = regexp.MustCompile(`\{[^}]*\}`)

// TestHandServedRoutesMatchRouteTable: handServedRoutes is the route
// table's hand-served part (the routes without a gRPC method) in the
// document's naming: the same methods, paths and access, so a route added
// to the table without a document entry fails here. The OpenAI route takes
// any path below /openai/; the document names its three usual ones.
func TestHandServedRoutesMatchRouteTable(t *testing.T) {
	norm := func(path string) string { return anyVar.ReplaceAllString(path, "{}") }
	type key struct{ method, path string }
	listed := map[key]string{} // -> access
	for _, r := range handServedRoutes {
		access := "key"
		switch {
		case r.public:
			access = "public"
		case r.worker:
			access = "worker"
		}
		listed[key{r.method, norm(r.path)}] = access
	}
	seen := map[key]bool{}
	for _, rt := range Routes() {
		if rt.RPC != "" {
			continue
		}
		if strings.Contains(rt.Pattern, "/openai/") {
			n := 0
			for k, access := range listed {
				if strings.HasPrefix(k.path, "/v2/{}/openai/") {
					n++
					seen[k] = true
					if access != rt.Access {
						t.Errorf("%s %s: listed as %s, the route table says %s", k.method, k.path, access, rt.Access)
					}
				}
			}
			if n == 0 {
				t.Errorf("route %s has no entry in handServedRoutes", rt.Pattern)
			}
			continue
		}
		methods := rt.Methods
		if methods == nil {
			// Worker routes answer any method; the document names the
			// one the worker SDK sends.
			found := false
			for k := range listed {
				if k.path == norm(rt.Pattern) {
					found, seen[k] = true, true
					if listed[k] != rt.Access {
						t.Errorf("%s %s: listed as %s, the route table says %s", k.method, rt.Pattern, listed[k], rt.Access)
					}
				}
			}
			if !found {
				t.Errorf("route %s has no entry in handServedRoutes", rt.Pattern)
			}
			continue
		}
		for _, m := range methods {
			m = strings.ToLower(m)
			if m == "head" {
				continue
			}
			k := key{m, norm(rt.Pattern)}
			access, ok := listed[k]
			if !ok {
				t.Errorf("route %s %s has no entry in handServedRoutes", m, rt.Pattern)
				continue
			}
			seen[k] = true
			if access != rt.Access {
				t.Errorf("%s %s: listed as %s, the route table says %s", m, rt.Pattern, access, rt.Access)
			}
		}
	}
	for k := range listed {
		if !seen[k] {
			t.Errorf("handServedRoutes lists %s %s, which the route table does not serve", k.method, k.path)
		}
	}
}

// TestHandServedRoutesCoverWorkerOps: every worker operation ServeHTTP
// routes (workerOps) is in handServedRoutes, so a new one cannot miss the
// document.
func TestHandServedRoutesCoverWorkerOps(t *testing.T) {
	for op := range workerOps {
		found := false
		for _, r := range handServedRoutes {
			if r.worker && strings.HasPrefix(r.path, "/v2/{endpoint}/"+op+"/") {
				found = true
			}
		}
		if !found {
			t.Errorf("worker operation %s is not in handServedRoutes", op)
		}
	}
}

// templateVar is a variable in a google.api.http path template:
// {endpoint_id} or {ref=**}.
var templateVar = regexp.MustCompile(`\{([a-z0-9_]+)(=[^}]*)?\}`)

// gatewayRoutes are the /v1 routes of the gateway, read from the
// google.api.http options of the ember.v1 services, with each path
// variable named as protoc-gen-openapiv2 names it (json_names_for_fields:
// {endpoint_id} is {endpointId}).
func gatewayRoutes(t *testing.T) []docRoute {
	t.Helper()
	var out []docRoute
	for _, fd := range []protoreflect.FileDescriptor{
		emberv1.File_ember_v1_endpoint_proto, emberv1.File_ember_v1_job_proto,
		emberv1.File_ember_v1_health_proto, emberv1.File_ember_v1_image_proto,
	} {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					method, tmpl := httpRule(r)
					if tmpl == "" {
						t.Fatalf("%s: a google.api.http rule without a path", md.FullName())
					}
					path := templateVar.ReplaceAllStringFunc(tmpl, func(v string) string {
						name := templateVar.FindStringSubmatch(v)[1]
						return "{" + lowerCamel(name) + "}"
					})
					out = append(out, docRoute{method, path})
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no google.api.http rules in the ember.v1 protos")
	}
	return out
}

func httpRule(r *annotations.HttpRule) (method, path string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "get", p.Get
	case *annotations.HttpRule_Post:
		return "post", p.Post
	case *annotations.HttpRule_Put:
		return "put", p.Put
	case *annotations.HttpRule_Delete:
		return "delete", p.Delete
	case *annotations.HttpRule_Patch:
		return "patch", p.Patch
	case *annotations.HttpRule_Custom:
		return strings.ToLower(p.Custom.GetKind()), p.Custom.GetPath()
	}
	return "", ""
}

func lowerCamel(snake string) string {
	parts := strings.Split(snake, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// swaggerDoc is the part of the OpenAPI v2 document the tests read.
type swaggerDoc struct {
	Swagger             string                                `json:"swagger"`
	SecurityDefinitions map[string]map[string]any             `json:"securityDefinitions"`
	Security            []map[string][]string                 `json:"security"`
	Responses           map[string]json.RawMessage            `json:"responses"`
	Definitions         map[string]json.RawMessage            `json:"definitions"`
	Paths               map[string]map[string]json.RawMessage `json:"paths"`
}

type swaggerOp struct {
	Security   *[]map[string][]string `json:"security"`
	Responses  map[string]json.RawMessage
	Parameters []swaggerParam `json:"parameters"`
}

type swaggerParam struct {
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

// pathVar is a variable in an OpenAPI path template.
var pathVar = regexp.MustCompile(`\{([^}]+)\}`)

func loadDoc(t *testing.T) swaggerDoc {
	t.Helper()
	var doc swaggerDoc
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatalf("the OpenAPI document is not valid JSON: %v", err)
	}
	if doc.Swagger != "2.0" {
		t.Fatalf("swagger = %q, want 2.0", doc.Swagger)
	}
	return doc
}

func docOp(t *testing.T, doc swaggerDoc, r docRoute) (swaggerOp, bool) {
	t.Helper()
	raw, ok := doc.Paths[r.path][r.method]
	if !ok {
		return swaggerOp{}, false
	}
	var op swaggerOp
	if err := json.Unmarshal(raw, &op); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	return op, true
}

// TestOpenAPICoversEveryRoute: the document has every /v1 gateway route
// (from the protos) and every hand-served route, and nothing else; each
// operation has responses; the probes need no key, the worker API takes
// the worker token, and every other route the API key, with its 401, 403
// and 429 answers.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc := loadDoc(t)
	want := map[docRoute]bool{}
	for _, r := range gatewayRoutes(t) {
		want[r] = true
	}
	for _, r := range handServedRoutes {
		if want[r.docRoute] {
			t.Errorf("%s is both a gateway route and in handServedRoutes", r.docRoute)
		}
		want[r.docRoute] = true
	}
	for r := range want {
		op, ok := docOp(t, doc, r)
		if !ok {
			t.Errorf("the OpenAPI document lacks %s", r)
			continue
		}
		if len(op.Responses) == 0 {
			t.Errorf("%s has no responses", r)
		}
		// RunPod's REST model answers a delete with 204, as
		// rest.runpod.io/v1 does; every other route with 200.
		success := "200"
		if r.method == "delete" && strings.HasPrefix(r.path, "/runpod/") {
			success = "204"
		}
		if _, ok := op.Responses[success]; !ok {
			t.Errorf("%s has no %s response", r, success)
		}
		// Swagger 2.0: each path variable is a required path parameter.
		for _, m := range pathVar.FindAllStringSubmatch(r.path, -1) {
			if !slices.ContainsFunc(op.Parameters, func(p swaggerParam) bool {
				return p.Name == m[1] && p.In == "path" && p.Required
			}) {
				t.Errorf("%s has no required path parameter %s", r, m[1])
			}
		}
	}
	var extra []string
	for path, item := range doc.Paths {
		for method := range item {
			if !want[docRoute{method, path}] {
				extra = append(extra, docRoute{method, path}.String())
			}
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("the OpenAPI document has routes emberd does not serve (or handServedRoutes lacks): %v", extra)
	}

	for _, r := range handServedRoutes {
		op, ok := docOp(t, doc, r.docRoute)
		if !ok {
			continue
		}
		switch {
		case r.public:
			if op.Security == nil || len(*op.Security) != 0 {
				t.Errorf("%s needs no key: want security: [], got %v", r.docRoute, op.Security)
			}
		case r.worker:
			if op.Security == nil || len(*op.Security) != 1 || (*op.Security)[0]["workerToken"] == nil {
				t.Errorf("%s takes the worker token: want security [{workerToken: []}], got %v", r.docRoute, op.Security)
			}
			if _, ok := op.Responses["401"]; !ok {
				t.Errorf("%s has no 401 response", r.docRoute)
			}
		default:
			if op.Security != nil {
				t.Errorf("%s needs an API key: want the global security, got %v", r.docRoute, *op.Security)
			}
		}
	}
	for r := range want {
		op, ok := docOp(t, doc, r)
		if !ok || op.Security != nil {
			continue
		}
		for _, code := range []string{"401", "403", "429"} {
			if _, ok := op.Responses[code]; !ok {
				t.Errorf("%s needs a key but has no %s response", r, code)
			}
		}
	}
}

// TestOpenAPISecurity: the document declares the API key and the worker
// token as header schemes, the key applies globally, and every $ref
// resolves.
func TestOpenAPISecurity(t *testing.T) {
	doc := loadDoc(t)
	for _, name := range []string{"apiKey", "workerToken"} {
		s := doc.SecurityDefinitions[name]
		if s["type"] != "apiKey" || s["in"] != "header" || s["name"] != "Authorization" {
			t.Errorf("securityDefinitions.%s = %v, want an apiKey in the Authorization header", name, s)
		}
		if d, _ := s["description"].(string); !strings.Contains(d, "Bearer") {
			t.Errorf("securityDefinitions.%s does not say how to send it: %q", name, d)
		}
	}
	if d, _ := doc.SecurityDefinitions["apiKey"]["description"].(string); !strings.Contains(d, "bare key") {
		t.Errorf("securityDefinitions.apiKey does not mention the bare key form: %q", d)
	}
	if len(doc.Security) != 1 || doc.Security[0]["apiKey"] == nil {
		t.Errorf("global security = %v, want [{apiKey: []}]", doc.Security)
	}
	for _, name := range []string{"Unauthorized", "Forbidden", "TooManyRequests"} {
		if _, ok := doc.Responses[name]; !ok {
			t.Errorf("responses.%s missing", name)
		}
	}
	refs := regexp.MustCompile(`"\$ref":\s*"#/(definitions|responses)/([^"]+)"`).FindAllStringSubmatch(string(openapi.JSON), -1)
	if len(refs) == 0 {
		t.Fatal("no $ref in the document")
	}
	for _, m := range refs {
		var ok bool
		if m[1] == "definitions" {
			_, ok = doc.Definitions[m[2]]
		} else {
			_, ok = doc.Responses[m[2]]
		}
		if !ok {
			t.Errorf("$ref #/%s/%s does not resolve", m[1], m[2])
		}
	}
}

// TestOpenAPIKeyShapes: the key routes follow the key API's contract.
func TestOpenAPIKeyShapes(t *testing.T) {
	doc := loadDoc(t)
	props := func(def string) []string {
		var d struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(doc.Definitions[def], &d); err != nil {
			t.Fatalf("definition %s: %v", def, err)
		}
		var out []string
		for k := range d.Properties {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	for def, want := range map[string][]string{
		"emberKeyCreateRequest":    {"endpoints", "expiresIn", "name", "scope"},
		"emberKeyCreated":          {"createdAt", "endpoints", "expiresAt", "id", "key", "name", "scope"},
		"emberKey":                 {"createdAt", "endpoints", "expiresAt", "id", "lastUsedAt", "name", "scope"},
		"emberRotateAdminResponse": {"file", "key"},
		"emberAuthError":           {"error", "expiresAt", "keyId", "reason"},
		"emberScopeError":          {"error", "keyId", "neededScope", "reason"},
		"emberRateLimitError":      {"error", "reason", "retryAfterSeconds"},
	} {
		if got := props(def); !slices.Equal(got, want) {
			t.Errorf("definition %s has %v, want %v", def, got, want)
		}
	}
}

// TestOpenAPIGatewayAccess: a /v1 gateway route needs no key in the
// document exactly when the route table (from daemon/authz's method table) makes
// it public.
func TestOpenAPIGatewayAccess(t *testing.T) {
	doc := loadDoc(t)
	norm := func(path string) string { return anyVar.ReplaceAllString(path, "{}") }
	byNorm := map[string]string{} // normalised path -> document path
	for path := range doc.Paths {
		byNorm[norm(path)] = path
	}
	n := 0
	for _, rt := range Routes() {
		if rt.RPC == "" {
			continue
		}
		for _, m := range rt.Methods {
			m = strings.ToLower(m)
			if m == "head" {
				continue
			}
			path, ok := byNorm[norm(rt.Pattern)]
			if !ok {
				t.Errorf("gateway route %s %s is not in the document", m, rt.Pattern)
				continue
			}
			op, ok := docOp(t, doc, docRoute{m, path})
			if !ok {
				t.Errorf("gateway route %s %s is not in the document", m, path)
				continue
			}
			n++
			public := op.Security != nil && len(*op.Security) == 0
			if public != (rt.Access == "public") {
				t.Errorf("%s %s: the document says public=%v, the route table says %s", m, path, public, rt.Access)
			}
		}
	}
	if n == 0 {
		t.Fatal("no gateway routes in the route table")
	}
}
