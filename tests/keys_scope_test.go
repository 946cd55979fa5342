package tests

// End-to-end tests of scoped and expiring API keys against a real emberd:
// every route of httpapi's route table and every gRPC method with each
// kind of key, an expired key, the admin key's rotation, the key-file
// checks at start, and no secret in emberd's log.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/httpapi"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// Outcomes of a request, by HTTP status or gRPC code.
const (
	outAllowed = "allowed" // neither 401 nor 403
	out401     = "401"
	out403     = "403"
)

func httpOutcome(code int) string {
	switch code {
	case http.StatusUnauthorized:
		return out401
	case http.StatusForbidden:
		return out403
	}
	return outAllowed
}

func grpcOutcome(err error) string {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return out401
	case codes.PermissionDenied:
		return out403
	}
	return outAllowed
}

// keyKind is a kind of credential and what it may do.
type keyKind struct {
	name, secret string
	scope        auth.Scope // "" for no valid key
	listsOther   bool       // an invoke key that lists another endpoint only
	worker       bool       // a worker's own token
}

// want is what a route (or method) with access, scopes and an endpoint
// answers to k.
func (k keyKind) want(access string, scopes []auth.Scope, onEndpoint bool) string {
	switch {
	case access == "public":
		return outAllowed
	case access == "worker":
		if k.worker {
			return outAllowed
		}
		return out401
	case k.scope == "":
		return out401
	case k.scope == auth.Admin:
		return outAllowed
	case !slices.Contains(scopes, k.scope):
		return out403
	case k.listsOther && onEndpoint:
		return out403
	}
	return outAllowed
}

// createKey makes a key through POST /v1/keys and returns its id and secret.
func createKey(t *testing.T, d *Daemon, body map[string]any) (string, string) {
	t.Helper()
	m := d.JSON("POST", "/v1/keys", body, 200)
	id, _ := m["id"].(string)
	secret, _ := m["key"].(string)
	if id == "" || !strings.HasPrefix(secret, "ember_") || m["scope"] != body["scope"] {
		t.Fatalf("POST /v1/keys %v: %v", body, m)
	}
	return id, secret
}

// fillRoute makes a request path from a route pattern.
func fillRoute(pattern, ep, worker string) string {
	var out []string
	for _, s := range strings.Split(strings.Trim(pattern, "/"), "/") {
		switch {
		case s == "{endpoint}" || s == "{endpoint_id}":
			s = ep
		case s == "{worker}":
			s = worker
		case strings.HasPrefix(s, "{"):
			name, verb, _ := strings.Cut(strings.Trim(s, "{"), "}")
			s = "no-such-" + strings.TrimSuffix(name, "...") + verb
		}
		out = append(out, s)
	}
	return "/" + strings.Join(out, "/")
}

func TestKeyScopes(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	secrets := []string{d.Key}

	// A worker that never takes a job, only hands the test its id and
	// token (real ones, from the worker's environment).
	tokFile := filepath.Join(t.TempDir(), "worker-token")
	ep := d.CreateEndpoint("scoped", map[string]any{
		"command":    []string{"/bin/sh", "-c", `printf '%s %s' "$RUNPOD_POD_ID" "$RUNPOD_AI_API_KEY" > ` + tokFile + `.tmp && mv ` + tokFile + `.tmp ` + tokFile + ` && exec sleep 600`},
		"workersMin": 1, "workersMax": 1,
	})
	other := d.CreateEndpoint("other", map[string]any{"workersMax": 1})
	var workerID, workerToken string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(tokFile); err == nil {
			workerID, workerToken, _ = strings.Cut(string(b), " ")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not start:\n%s", d.Log())
		}
	}
	secrets = append(secrets, workerToken)

	_, adminKey := createKey(t, d, map[string]any{"name": "ops", "scope": "admin"})
	_, readKey := createKey(t, d, map[string]any{"name": "grafana", "scope": "read", "expiresIn": "30d"})
	// By name and by id.
	invID, invokeKey := createKey(t, d, map[string]any{"name": "app", "scope": "invoke", "endpoints": []string{"scoped"}})
	_, otherKey := createKey(t, d, map[string]any{"name": "other-app", "scope": "invoke", "endpoints": []string{other}})
	secrets = append(secrets, adminKey, readKey, invokeKey, otherKey)
	list := d.JSON("GET", "/v1/keys", nil, 200)
	if b, _ := json.Marshal(list); !strings.Contains(string(b), `"endpoints":["`+ep+`"],"expiresAt":"","id":"`+invID+`"`) {
		t.Errorf("GET /v1/keys: %s", b)
	}

	kinds := []keyKind{
		{name: "none"},
		{name: "wrong", secret: "ember_" + strings.Repeat("0", 64)},
		{name: "worker token", secret: workerToken, worker: true},
		{name: "admin", secret: adminKey, scope: auth.Admin},
		{name: "read", secret: readKey, scope: auth.Read},
		{name: "invoke", secret: invokeKey, scope: auth.Invoke},
		{name: "invoke, other endpoint", secret: otherKey, scope: auth.Invoke, listsOther: true},
	}

	// REST: every route of the table, each kind of key.
	restOutcome := map[string]map[string]string{} // rpc -> kind -> outcome
	routes := httpapi.Routes()
	if len(routes) < 40 {
		t.Fatalf("only %d routes in the table", len(routes))
	}
	client := &http.Client{Timeout: 20 * time.Second}
	for _, rt := range routes {
		if rt.Pattern == "/console/session" {
			// The console's login checks the key in its body and the
			// session its cookie (daemon/httpapi's TestConsoleLogin).
			continue
		}
		method := http.MethodPost
		if len(rt.Methods) > 0 {
			method = rt.Methods[0]
		}
		path := fillRoute(rt.Pattern, ep, workerID)
		for _, k := range kinds {
			want := k.want(rt.Access, rt.Scopes, rt.Endpoint)
			// The worker's long-polls would hold for --take-hold; its
			// token is tried on ping only.
			if k.worker && rt.Access == "worker" && !strings.Contains(rt.Pattern, "/ping/") {
				continue
			}
			req, _ := http.NewRequest(method, d.URL+path+"?wait=1000", strings.NewReader(`{"input":{},"wait":1000}`))
			if k.secret != "" {
				req.Header.Set("Authorization", "Bearer "+k.secret)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("%s %s with the %s key: %v", method, path, k.name, err)
				continue
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			got := httpOutcome(resp.StatusCode)
			if got != want {
				t.Errorf("%s %s with the %s key: %d %v; want %s", method, path, k.name, resp.StatusCode, body, want)
			}
			if got == out403 && (body["keyId"] == nil || body["neededScope"] == nil) {
				t.Errorf("%s %s: a 403 without keyId or neededScope: %v", method, path, body)
			}
			if rt.RPC != "" {
				if restOutcome[rt.RPC] == nil {
					restOutcome[rt.RPC] = map[string]string{}
				}
				restOutcome[rt.RPC][k.name] = got
			}
		}
	}

	// gRPC: every method of Ember's services, each kind of key; the /v1
	// gateway route of a method answers as the method does.
	cc := grpcConn(t, d)
	base, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	methods := 0
	for _, file := range []protoreflect.FileDescriptor{emberv1.File_ember_v1_endpoint_proto, emberv1.File_ember_v1_job_proto, emberv1.File_ember_v1_health_proto, emberv1.File_ember_v1_image_proto} {
		for i := range file.Services().Len() {
			svc := file.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				full := "/" + string(svc.FullName()) + "/" + string(m.Name())
				need, ok := authz.MethodNeed(full)
				if !ok {
					t.Errorf("%s has no scope", full)
					continue
				}
				methods++
				access := "key"
				if need.Public {
					access = "public"
				}
				for _, k := range kinds {
					req := dynamicpb.NewMessage(m.Input())
					if f := req.Descriptor().Fields().ByName("endpoint_id"); f != nil {
						req.Set(f, protoreflect.ValueOfString(ep))
					}
					if f := req.Descriptor().Fields().ByName("wait"); f != nil {
						req.Set(f, protoreflect.ValueOfInt32(1000))
					}
					resp := dynamicpb.NewMessage(m.Output())
					ctx := base
					if k.secret != "" {
						ctx = metadata.AppendToOutgoingContext(base, "authorization", "Bearer "+k.secret)
					}
					err := cc.Invoke(ctx, full, req, resp)
					got, want := grpcOutcome(err), k.want(access, need.Scopes, need.EndpointField != "")
					if got != want {
						t.Errorf("gRPC %s with the %s key: %v; want %s", full, k.name, err, want)
					}
					if rest, ok := restOutcome[full][k.name]; ok && rest != got {
						t.Errorf("%s with the %s key: REST %s, gRPC %s", full, k.name, rest, got)
					}
					for _, s := range secrets {
						if err != nil && strings.Contains(err.Error(), s) {
							t.Errorf("gRPC %s: the error holds a secret: %v", full, err)
						}
					}
				}
			}
		}
	}
	if methods < 20 {
		t.Errorf("%d gRPC methods walked, want 20 or more", methods)
	}

	// The wording of a refusal, on REST and gRPC alike.
	code, out := d.DoKey("POST", "/v1/endpoints", map[string]any{"name": "x"}, "Bearer "+invokeKey)
	wantMsg := "key " + invID + " (app) has scope invoke; POST /v1/endpoints needs scope admin"
	if code != 403 || !strings.Contains(string(out), `"error":"`+wantMsg+`"`) || !strings.Contains(string(out), `"keyId":"`+invID+`"`) || !strings.Contains(string(out), `"neededScope":"admin"`) {
		t.Errorf("403: %d %s", code, out)
	}
	_, err := emberv1.NewEndpointServiceClient(cc).CreateEndpoint(metadata.AppendToOutgoingContext(base, "authorization", invokeKey), &emberv1.CreateEndpointRequest{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "key "+invID+" (app) has scope invoke; ember.v1.EndpointService/CreateEndpoint needs scope admin" {
		t.Errorf("gRPC 403: %v", err)
	}

	// The refusals are counted by reason (a read key sees /metrics).
	code, out = d.DoKey("GET", "/metrics", nil, "Bearer "+readKey)
	for _, s := range []string{`ember_requests_refused_total{code="401",reason="missing_key"}`, `ember_requests_refused_total{code="403",reason="scope"}`, `ember_requests_refused_total{code="403",reason="endpoint"}`, `ember_requests_refused_total{code="401",reason="worker_token"}`} {
		if code == 200 && !strings.Contains(string(out), s) {
			// The counter is registered in /metrics by the rate-limit
			// work; until then only its absence is tolerated.
			if strings.Contains(string(out), "ember_requests_refused_total") {
				t.Errorf("/metrics lacks %s", s)
			}
		}
	}
	if code != 200 {
		t.Errorf("/metrics with a read key: %d", code)
	}
	if code, _ := d.DoKey("GET", "/metrics", nil, ""); code != 401 {
		t.Errorf("/metrics without a key: %d, want 401", code)
	}

	checkLogSecrets(t, d, secrets)
}

// TestKeyExpiryAndRotation: an expired key is refused with its expiry;
// last-use times survive a restart; rotate-admin swaps the admin key at
// once and in its file.
func TestKeyExpiryAndRotation(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	secrets := []string{d.Key}
	shortID, short := createKey(t, d, map[string]any{"name": "short", "scope": "read", "expiresIn": "1m"})
	secrets = append(secrets, short)
	if code, out := d.DoKey("GET", "/v1/gpus", nil, "Bearer "+short); code != 200 {
		t.Fatalf("fresh key: %d %s", code, out)
	}
	m := d.JSON("POST", "/v1/keys", map[string]any{"name": "x", "scope": "read", "expiresIn": "30s"}, 400)
	if !strings.Contains(fmt.Sprint(m["error"]), "expiresIn") {
		t.Errorf("expiresIn 30s: %v", m)
	}

	// Its expiry moved into the past while emberd is stopped, as time
	// would: the file is emberd's own, only expiresAt changes.
	d.Stop()
	path := filepath.Join(d.DataDir, "keys.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int              `json:"version"`
		Keys    []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 2 || len(f.Keys) != 1 {
		t.Fatalf("keys.json: %v %s", err, b)
	}
	if f.Keys[0]["lastUsedAt"] == nil {
		t.Errorf("the key's last use was not written at stop: %s", b)
	}
	expired := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	f.Keys[0]["expiresAt"] = expired.Format(time.RFC3339)
	b, _ = json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Restart()
	code, out := d.DoKey("GET", "/v1/gpus", nil, "Bearer "+short)
	var body map[string]any
	json.Unmarshal(out, &body)
	if code != 401 || body["reason"] != "expired" || body["expiresAt"] != expired.Format(time.RFC3339) || body["keyId"] != shortID ||
		!strings.Contains(fmt.Sprint(body["error"]), "expired at "+expired.Format(time.RFC3339)) {
		t.Errorf("expired key: %d %s", code, out)
	}
	list := d.JSON("GET", "/v1/keys", nil, 200)
	if b, _ := json.Marshal(list); !strings.Contains(string(b), `"lastUsedAt":"20`) {
		t.Errorf("GET /v1/keys after a restart lost the last use: %s", b)
	}
	cc := grpcConn(t, d)
	_, err = emberv1.NewEndpointServiceClient(cc).ListEndpoints(metadata.AppendToOutgoingContext(context.Background(), "authorization", short), &emberv1.ListEndpointsRequest{})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "expired at "+expired.Format(time.RFC3339)) {
		t.Errorf("gRPC with the expired key: %v", err)
	}

	// rotate-admin: the new key works, the old one is refused at once,
	// the file holds the new one, mode 0600.
	old := d.Key
	rot := d.JSON("POST", "/v1/keys:rotate-admin", nil, 200)
	newKey, _ := rot["key"].(string)
	secrets = append(secrets, newKey)
	keyFile := filepath.Join(d.DataDir, "api.key")
	if newKey == "" || newKey == old || rot["file"] != keyFile {
		t.Fatalf("rotate-admin: %v", rot)
	}
	if code, out := d.DoKey("GET", "/v1/endpoints", nil, "Bearer "+old); code != 401 {
		t.Errorf("old admin key after rotation: %d %s", code, out)
	}
	if code, out := d.DoKey("GET", "/v1/endpoints", nil, "Bearer "+newKey); code != 200 {
		t.Errorf("new admin key: %d %s", code, out)
	}
	_, err = emberv1.NewEndpointServiceClient(cc).ListEndpoints(metadata.AppendToOutgoingContext(context.Background(), "authorization", old), &emberv1.ListEndpointsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC with the old admin key: %v", err)
	}
	fb, _ := os.ReadFile(keyFile)
	fi, _ := os.Stat(keyFile)
	if strings.TrimSpace(string(fb)) != newKey || fi.Mode().Perm() != 0o600 {
		t.Errorf("api.key after rotation: mode %v, holds the new key: %v", fi.Mode().Perm(), strings.TrimSpace(string(fb)) == newKey)
	}
	d.Key = newKey
	// A restart reads the new key from the file.
	d.Restart()
	if d.Key != newKey {
		t.Error("after a restart api.key holds another key")
	}
	d.JSON("GET", "/v1/endpoints", nil, 200)
	// An audit line for each key action, with the caller's id.
	log := strings.Join(allLogs(t, d), "\n")
	for _, action := range []string{"key.create", "key.rotate-admin"} {
		if !strings.Contains(log, action) {
			t.Errorf("no audit line for %s", action)
		}
	}
	checkLogSecrets(t, d, secrets)
}

// TestKeyFileChecks: emberd refuses an admin key file others can read, or a
// short key, and says how to fix it.
func TestKeyFileChecks(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, key string
		mode      os.FileMode
		want      string
	}{
		{"mode 0644", "ember_" + strings.Repeat("5", 48), 0o644, "run `chmod 600 %s`"},
		{"short key", "shortkey123", 0o600, "delete the file to have a new one made"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "api.key")
			if err := os.WriteFile(keyFile, []byte(tt.key+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(keyFile, tt.mode); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, emberdBin, "--data-dir", dir, "--listen", freePort(t), "--grpc-listen", freePort(t), "--runtime", "process")
			out, err := cmd.CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("emberd started (or hung) with %s: %v\n%s", tt.name, err, out)
			}
			want := tt.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, keyFile)
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("emberd's message lacks %q:\n%s", want, out)
			}
			if strings.Contains(string(out), tt.key) {
				t.Errorf("emberd's message holds the key:\n%s", out)
			}
		})
	}
}

// allLogs returns every log of d's emberd (one per start), whole.
func allLogs(t *testing.T, d *Daemon) []string {
	t.Helper()
	var logs []string
	ents, _ := os.ReadDir(d.logDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "emberd-") && strings.HasSuffix(e.Name(), ".log") {
			b, err := os.ReadFile(filepath.Join(d.logDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			logs = append(logs, string(b))
		}
	}
	if len(logs) == 0 {
		t.Fatal("no emberd log")
	}
	return logs
}

// checkLogSecrets fails if any secret appears anywhere in emberd's log.
func checkLogSecrets(t *testing.T, d *Daemon, secrets []string) {
	t.Helper()
	logs := allLogs(t, d)
	for _, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("secret %q is too short to grep for", s)
		}
		for _, l := range logs {
			if strings.Contains(l, s) {
				t.Errorf("emberd's log holds a secret (%.10s...)", s)
			}
		}
	}
}
