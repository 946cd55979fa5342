package httpapi

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
)

const bootstrapKey = "ember_bootstrap"

func newKeysServer(t *testing.T, withStore bool) (*httptest.Server, *keys.Store) {
	t.Helper()
	cfg := Config{
		Keys:   func() []string { return []string{bootstrapKey} },
		Logger: slog.New(slog.DiscardHandler),
	}
	var ks *keys.Store
	if withStore {
		var err error
		if ks, err = keys.Open(filepath.Join(t.TempDir(), keys.FileName)); err != nil {
			t.Fatal(err)
		}
		cfg.KeyStore = ks
	}
	srv := httptest.NewServer(New(cfg))
	t.Cleanup(srv.Close)
	return srv, ks
}

// call sends one request; auth is the Authorization header as sent.
func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestKeysRoutes(t *testing.T) {
	srv, ks := newKeysServer(t, true)
	admin := "Bearer " + bootstrapKey

	code, body := call(t, srv, "GET", "/v1/keys", admin, "")
	if code != 200 || body != `{"keys":[]}` {
		t.Fatalf("empty list: %d %s", code, body)
	}

	code, body = call(t, srv, "POST", "/v1/keys", admin, `{"name":"ci","scope":"admin"}`)
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	var created struct{ ID, Name, Key, CreatedAt string }
	if err := json.Unmarshal([]byte(body), &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.ID, "k-") || created.Name != "ci" || !strings.HasPrefix(created.Key, "ember_") || created.CreatedAt == "" {
		t.Fatalf("create answered %s", body)
	}
	if !ks.Valid(created.Key) {
		t.Fatal("the returned secret is not in the store")
	}

	// The new key works on every admin route family, raw or Bearer.
	for _, auth := range []string{"Bearer " + created.Key, created.Key, "bearer  " + created.Key} {
		if code, body := call(t, srv, "GET", "/v1/keys", auth, ""); code != 200 {
			t.Errorf("list with the new key (%q): %d %s", auth, code, body)
		}
		if code, body := call(t, srv, "GET", "/v1/gpus", auth, ""); code != 200 {
			t.Errorf("gpus with the new key: %d %s", code, body)
		}
	}
	code, body = call(t, srv, "GET", "/v1/keys", admin, "")
	if code != 200 || strings.Contains(body, created.Key) || strings.Contains(body, `"key"`) ||
		!strings.Contains(body, `"id":"`+created.ID+`","name":"ci","scope":"admin","endpoints":[],"createdAt":"`+created.CreatedAt+`","expiresAt":"","lastUsedAt":"20`) {
		t.Errorf("list: %d %s", code, body)
	}

	tests := []struct {
		method, path, body string
		code               int
		err                string
	}{
		{"POST", "/v1/keys", `{}`, 400, "name: required (1 to 63 characters)"},
		{"POST", "/v1/keys", `{"name":"","scope":"read"}`, 400, "name: required (1 to 63 characters)"},
		{"POST", "/v1/keys", `{"name":"` + strings.Repeat("x", 64) + `","scope":"read"}`, 400, "name: 64 characters; at most 63"},
		{"POST", "/v1/keys", `{"name":"a\nb","scope":"read"}`, 400, "name: control or non-printable character"},
		{"POST", "/v1/keys", `{"name":"ci","scope":"read"}`, 409, "API key name already in use"},
		{"POST", "/v1/keys", `{"name":"x"}`, 400, "scope: required: admin, invoke or read"},
		{"POST", "/v1/keys", `{"name":"x","scope":""}`, 400, "scope: required: admin, invoke or read"},
		{"POST", "/v1/keys", `{"name":"x","scope":"all"}`, 400, `scope: "all": want admin, invoke or read`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","endpoints":["e"]}`, 400, "endpoints: only an invoke key lists endpoints"},
		{"POST", "/v1/keys", `{"name":"x","scope":"invoke","endpoints":["nope"]}`, 400, `endpoints: no endpoint has the id or name "nope"`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","expiresIn":"30s"}`, 400, `expiresIn: "30s" is out of range: at least 1m, at most 3650d`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","expiresIn":"3651d"}`, 400, `expiresIn: "3651d" is out of range`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","expiresIn":"soon"}`, 400, `expiresIn: "soon": want a duration such as "30d"`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","expiresIn":"-1h"}`, 400, `expiresIn: "-1h": want a duration`},
		{"POST", "/v1/keys", `{"name":"x","scope":"read","extra":1}`, 400, `unknown field "extra"`},
		{"POST", "/v1/keys", `{"name":1}`, 400, "want {\"name\":\"NAME\""},
		{"POST", "/v1/keys", `not json`, 400, "want {\"name\":\"NAME\""},
		{"POST", "/v1/keys", `{"name":"a"}{"name":"b"}`, 400, "one JSON object"},
		{"POST", "/v1/keys", `{"name":"` + strings.Repeat("x", 5000) + `"}`, 413, "4 KiB (4096 bytes) limit of POST /v1/keys"},
		{"PUT", "/v1/keys", `{}`, 405, "use GET or HEAD or POST"},
		{"GET", "/v1/keys/" + created.ID, "", 405, "use DELETE"},
		{"DELETE", "/v1/keys/k-000000000000", "", 404, "cannot be revoked through the API"},
		{"DELETE", "/v1/keys/a/b", "", 404, "no such route"},
	}
	for _, tt := range tests {
		code, body := call(t, srv, tt.method, tt.path, admin, tt.body)
		var e struct{ Error string }
		json.Unmarshal([]byte(body), &e)
		if code != tt.code || !strings.Contains(e.Error, tt.err) || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s %s %.40s: %d %s; want %d with %q", tt.method, tt.path, tt.body, code, body, tt.code, tt.err)
		}
	}

	// Revoked: the key stops working at once; the bootstrap key never does.
	code, body = call(t, srv, "DELETE", "/v1/keys/"+created.ID, "Bearer "+created.Key, "")
	if code != 200 || !strings.Contains(body, `"id":"`+created.ID+`"`) || strings.Contains(body, created.Key) {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, _ := call(t, srv, "GET", "/v1/keys", "Bearer "+created.Key, ""); code != 401 {
		t.Errorf("revoked key: %d, want 401", code)
	}
	if code, _ := call(t, srv, "GET", "/v1/keys", admin, ""); code != 200 {
		t.Errorf("bootstrap key after revoking: %d", code)
	}
}

func TestKeysAuth(t *testing.T) {
	srv, _ := newKeysServer(t, true)
	for _, auth := range []string{"", "Bearer", "Bearer wrong", "wrong", "Basic " + bootstrapKey} {
		for _, route := range []struct{ method, path string }{
			{"GET", "/v1/keys"}, {"POST", "/v1/keys"}, {"DELETE", "/v1/keys/k-1"}, {"GET", "/v1/gpus"},
		} {
			code, body := call(t, srv, route.method, route.path, auth, `{"name":"x"}`)
			if code != 401 || !strings.Contains(body, `send \"authorization: Bearer KEY\"`) || strings.Contains(body, bootstrapKey) {
				t.Errorf("%s %s with %q: %d %s", route.method, route.path, auth, code, body)
			}
		}
	}
}

func TestKeysNoStore(t *testing.T) {
	srv, _ := newKeysServer(t, false)
	code, body := call(t, srv, "GET", "/v1/keys", "Bearer "+bootstrapKey, "")
	if code != 404 || !strings.Contains(body, "not enabled") {
		t.Errorf("no store: %d %s", code, body)
	}
	if code, _ := call(t, srv, "GET", "/v1/keys", "Bearer x", ""); code != 401 {
		t.Errorf("no store, wrong key: %d", code)
	}
}

// A nil Keys func with a store: only the store's keys are accepted.
func TestAdminOKStoreOnly(t *testing.T) {
	ks, err := keys.Open(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := ks.Create(keys.Spec{Name: "only", Scope: auth.Read})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{KeyStore: ks, Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	if code, body := call(t, srv, "GET", "/v1/gpus", secret, ""); code != 200 || body != `{"gpus":[]}` {
		t.Errorf("store key: %d %s", code, body)
	}
	if code, _ := call(t, srv, "GET", "/v1/gpus", bootstrapKey, ""); code != 401 {
		t.Errorf("other key: %d", code)
	}
}
