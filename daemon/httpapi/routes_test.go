package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/keys"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// TestRouteTableScopes walks the route table: every route says who may
// call it, and a route added without a scope, or naming a gRPC method
// without one, is refused.
func TestRouteTableScopes(t *testing.T) {
	if len(routes) != len(routeTable) {
		t.Fatalf("%d routes checked of %d", len(routes), len(routeTable))
	}
	for _, rt := range routes {
		switch rt.access {
		case accessPublic, accessWorker:
		case accessKey:
			if len(rt.need.Scopes) == 0 {
				t.Errorf("%s needs a key but no scope", rt.name)
			}
		default:
			t.Errorf("%s has no access", rt.name)
		}
		if rt.serve == nil {
			t.Errorf("%s has no handler", rt.name)
		}
	}
	for _, bad := range []route{
		{methods: get, pattern: "/v1/new", serve: serveProbe},
		{methods: get, pattern: "/v1/new", access: accessKey, serve: serveProbe},
		{methods: get, pattern: "/v1/new", rpc: "/ember.v1.NewService/New"},
		{methods: get, pattern: "/v1/new", access: accessKey, need: needRead},
		{methods: get, pattern: "/v1/new/{id}", access: accessKey, need: needInvoke, serve: serveProbe},
	} {
		if _, err := checkRoutes(append(slices.Clone(routeTable), bad)); err == nil {
			t.Errorf("route %+v accepted", bad)
		}
	}
}

// TestGatewayRoutesMatchProto: every google.api.http rule of proto/ember/v1
// is a route of the table naming its method (so its scope is the gRPC
// method's), and every gateway route is such a rule.
func TestGatewayRoutesMatchProto(t *testing.T) {
	type rule struct{ method, pattern, rpc string }
	var want []rule
	for _, file := range []protoreflect.FileDescriptor{emberv1.File_ember_v1_endpoint_proto, emberv1.File_ember_v1_job_proto, emberv1.File_ember_v1_health_proto, emberv1.File_ember_v1_image_proto} {
		svcs := file.Services()
		for i := range svcs.Len() {
			svc := svcs.Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				full := "/" + string(svc.FullName()) + "/" + string(m.Name())
				if _, ok := authz.MethodNeed(full); !ok {
					t.Errorf("gRPC method %s has no scope", full)
				}
				hr, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if hr == nil {
					continue
				}
				var method, pat string
				switch p := hr.Pattern.(type) {
				case *annotations.HttpRule_Get:
					method, pat = http.MethodGet, p.Get
				case *annotations.HttpRule_Post:
					method, pat = http.MethodPost, p.Post
				case *annotations.HttpRule_Patch:
					method, pat = http.MethodPatch, p.Patch
				case *annotations.HttpRule_Delete:
					method, pat = http.MethodDelete, p.Delete
				case *annotations.HttpRule_Put:
					method, pat = http.MethodPut, p.Put
				}
				// {ref=**} is the table's {ref...}.
				pat = strings.ReplaceAll(pat, "=**}", "...}")
				want = append(want, rule{method, pat, full})
			}
		}
	}
	if len(want) == 0 {
		t.Fatal("no google.api.http rules found")
	}
	var got []rule
	for _, rt := range routes {
		if rt.rpc != "" {
			got = append(got, rule{rt.methods[0], rt.pattern, rt.rpc})
			need, _ := authz.MethodNeed(rt.rpc)
			if !slices.Equal(rt.need.Scopes, need.Scopes) || rt.need.Public != need.Public {
				t.Errorf("%s: scopes %v, its method %s has %v", rt.name, rt.need.Scopes, rt.rpc, need.Scopes)
			}
		}
	}
	cmp := func(a, b rule) int { return strings.Compare(a.rpc+a.method+a.pattern, b.rpc+b.method+b.pattern) }
	slices.SortFunc(want, cmp)
	slices.SortFunc(got, cmp)
	if !slices.Equal(got, want) {
		t.Errorf("gateway routes differ from the proto's rules:\n got  %v\n want %v", got, want)
	}
}

// fillPattern makes a request path from a route pattern: the endpoint
// segment is ep, "{x}:verb" is "x:verb", other variables their name.
func fillPattern(pattern, ep string) string {
	segs := splitPath(pattern)
	for i, s := range segs {
		switch {
		case s == "{endpoint}" || s == "{endpoint_id}":
			segs[i] = ep
		case strings.HasPrefix(s, "{"):
			name, verb, _ := strings.Cut(strings.Trim(s, "{"), "}")
			segs[i] = strings.TrimSuffix(name, "...") + verb
		}
	}
	return "/" + strings.Join(segs, "/")
}

// writeKeyFile writes a key store file holding one key per secret (hashes
// only), as emberd would have written it.
func writeKeyFile(t *testing.T, path string, ks []keys.Key, secrets []string) {
	t.Helper()
	type rec struct {
		keys.Key
		SHA256 string `json:"sha256"`
	}
	var recs []rec
	for i, k := range ks {
		h := sha256.Sum256([]byte(secrets[i]))
		recs = append(recs, rec{k, hex.EncodeToString(h[:])})
	}
	b, err := json.Marshal(map[string]any{"version": 2, "keys": recs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRouteScopesPerKey sends every route of the table with each kind of
// key and checks the answer: allowed (neither 401 nor 403), 401 or 403.
func TestRouteScopesPerKey(t *testing.T) {
	e := newWorkersEnv(t)
	dir := t.TempDir()
	const (
		adminSecret   = "ember_test_admin_0123456789abcdef0123456789"
		invokeSecret  = "ember_test_invoke"
		invokeOther   = "ember_test_invoke_other"
		readSecret    = "ember_test_read"
		expiredSecret = "ember_test_expired"
	)
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	writeKeyFile(t, filepath.Join(dir, keys.FileName), []keys.Key{
		{ID: "k-invoke", Name: "inv", Scope: auth.Invoke, Endpoints: []string{e.ep}, CreatedAt: created},
		{ID: "k-other", Name: "other", Scope: auth.Invoke, Endpoints: []string{"ep-other"}, CreatedAt: created},
		{ID: "k-read", Name: "rd", Scope: auth.Read, CreatedAt: created},
		{ID: "k-expired", Name: "old", Scope: auth.Admin, CreatedAt: created, ExpiresAt: created.Add(time.Hour)},
	}, []string{invokeSecret, invokeOther, readSecret, expiredSecret})
	ks, err := keys.Open(filepath.Join(dir, keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ks.SetAdmin(adminSecret, "")
	srv := httptest.NewServer(New(Config{Scheduler: e.s, KeyStore: ks, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	workerToken := ""
	for _, kv := range e.w.spec.Env {
		if v, ok := strings.CutPrefix(kv, "RUNPOD_AI_API_KEY="); ok {
			workerToken = v
		}
	}
	if workerToken == "" {
		t.Fatal("the worker has no token")
	}

	const (
		allowed = iota
		unauthorized
		forbidden
	)
	type kind struct {
		name, secret string
		// want says what a route with that access and need answers.
		want func(rt route) int
	}
	has := func(rt route, s auth.Scope) bool { return slices.Contains(rt.need.Scopes, s) }
	public := func(rt route, otherwise int) int {
		if rt.access == accessPublic {
			return allowed
		}
		return otherwise
	}
	kinds := []kind{
		{"none", "", func(rt route) int { return public(rt, unauthorized) }},
		{"wrong", "ember_wrong_key", func(rt route) int { return public(rt, unauthorized) }},
		{"expired", expiredSecret, func(rt route) int { return public(rt, unauthorized) }},
		{"worker token", workerToken, func(rt route) int {
			if rt.access == accessWorker {
				return allowed
			}
			return public(rt, unauthorized)
		}},
		{"admin", adminSecret, func(rt route) int {
			return public(rt, map[bool]int{true: unauthorized, false: allowed}[rt.access == accessWorker])
		}},
		{"read", readSecret, func(rt route) int {
			switch {
			case rt.access != accessKey:
				return public(rt, unauthorized)
			case has(rt, auth.Read):
				return allowed
			}
			return forbidden
		}},
		{"invoke", invokeSecret, func(rt route) int {
			switch {
			case rt.access != accessKey:
				return public(rt, unauthorized)
			case has(rt, auth.Invoke):
				return allowed
			}
			return forbidden
		}},
		{"invoke, other endpoint", invokeOther, func(rt route) int {
			switch {
			case rt.access != accessKey:
				return public(rt, unauthorized)
			case has(rt, auth.Invoke) && rt.epSeg < 0:
				return allowed
			}
			return forbidden
		}},
	}
	for _, rt := range routes {
		if rt.pattern == "/console/session" {
			// The login checks the key in its body and the session its
			// cookie, not a key in the header: TestConsoleLogin.
			continue
		}
		method := http.MethodPost
		if len(rt.methods) > 0 {
			method = rt.methods[0]
		}
		path := fillPattern(rt.pattern, e.ep)
		if rt.access == accessWorker {
			path = strings.Replace(path, "/worker", "/"+e.w.spec.ID, 1)
		}
		// Holding routes are asked not to hold: the take and stop
		// long-polls are only tried without a worker token.
		for _, k := range kinds {
			want := k.want(rt)
			if rt.access == accessWorker && want == allowed && !strings.HasSuffix(rt.pattern, "/ping/{worker}") {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path+"?wait=1", strings.NewReader("{}"))
			if k.secret != "" {
				req.Header.Set("Authorization", "Bearer "+k.secret)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				cancel()
				t.Errorf("%s with %s: %v", rt.name, k.name, err)
				continue
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			cancel()
			got := allowed
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				got = unauthorized
			case http.StatusForbidden:
				got = forbidden
			}
			if got != want {
				t.Errorf("%s %s with the %s key: %d %v; want %s", method, path, k.name, resp.StatusCode, body, []string{"allowed", "401", "403"}[want])
				continue
			}
			if got == forbidden && body["keyId"] == nil {
				t.Errorf("%s with the %s key: 403 without keyId: %v", rt.name, k.name, body)
			}
			if got == unauthorized && k.name == "expired" && rt.access == accessKey && (body["reason"] != "expired" || body["expiresAt"] != "2025-01-01T01:00:00Z") {
				t.Errorf("%s with the expired key: %v", rt.name, body)
			}
			for _, s := range []string{adminSecret, invokeSecret, invokeOther, readSecret, expiredSecret, workerToken} {
				if b, _ := json.Marshal(body); strings.Contains(string(b), s) {
					t.Errorf("%s: the answer holds a secret: %s", rt.name, b)
				}
			}
		}
	}
}

func TestRefusalBodies(t *testing.T) {
	e := newWorkersEnv(t)
	dir := t.TempDir()
	writeKeyFile(t, filepath.Join(dir, keys.FileName), []keys.Key{
		{ID: "k-inv", Name: "client", Scope: auth.Invoke, Endpoints: []string{"ep-a", "ep-b"}, CreatedAt: time.Now()},
	}, []string{"ember_inv"})
	ks, err := keys.Open(filepath.Join(dir, keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{Scheduler: e.s, KeyStore: ks, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"POST", "/v1/endpoints", 403, `{"error":"key k-inv (client) has scope invoke; POST /v1/endpoints needs scope admin","keyId":"k-inv","neededScope":"admin","reason":"scope"}`},
		{"GET", "/metrics", 403, `{"error":"key k-inv (client) has scope invoke; GET /metrics needs scope read","keyId":"k-inv","neededScope":"read","reason":"scope"}`},
		{"POST", "/v2/" + e.ep + "/run", 403, `{"error":"key k-inv (client) does not list endpoint ` + e.ep + `; it may invoke only ep-a, ep-b","keyId":"k-inv","neededScope":"invoke","reason":"endpoint"}`},
		{"POST", "/v2/ep-a/openai/v1/chat/completions", 404, ``},
		{"POST", "/v2/" + e.ep + "/openai/v1/chat/completions", 403, `{"error":{"code":403,"message":"key k-inv (client) does not list endpoint ` + e.ep + `; it may invoke only ep-a, ep-b","type":"permission_error"},"keyId":"k-inv","neededScope":"invoke","reason":"endpoint"}`},
	} {
		code, body := call(t, srv, tt.method, tt.path, "Bearer ember_inv", "{}")
		if code != tt.code || (tt.want != "" && body != tt.want) {
			t.Errorf("%s %s: %d %s\nwant %d %s", tt.method, tt.path, code, body, tt.code, tt.want)
		}
	}
	code, body := call(t, srv, "GET", "/v1/gpus", "", "")
	if code != 401 || body != `{"error":"missing API key: send \"authorization: Bearer KEY\"","reason":"missing_key"}` {
		t.Errorf("no key: %d %s", code, body)
	}
}
