package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
)

// fakeClock is a settable clock for the sessions.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type sessionServer struct {
	srv   *httptest.Server
	ks    *keys.Store
	clock *fakeClock
	logs  *bytes.Buffer
	h     *Server
}

func newSessionServer(t *testing.T) *sessionServer {
	t.Helper()
	ks, err := keys.Open(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ks.SetAdmin(bootstrapKey, "/nonexistent/api.key")
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	logs := &bytes.Buffer{}
	h := New(Config{KeyStore: ks, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, nil)), Now: clock.now,
		Console: fstest.MapFS{"index.html": {Data: []byte("<!doctype html>console")}, "app.js": {Data: []byte("export {}")}, "img/x.svg": {Data: []byte("<svg/>")}}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &sessionServer{srv: srv, ks: ks, clock: clock, logs: logs, h: h}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// send makes a request with the session cookie (if not empty) and the
// CSRF header (if not empty).
func (s *sessionServer) send(t *testing.T, method, path, cookie, csrf, body string) (int, map[string]any, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest(method, s.srv.URL+path, strings.NewReader(body))
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
	}
	if csrf != "" {
		req.Header.Set(CSRFHeader, csrf)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp
}

// login logs in with key and returns the cookie value and the CSRF token.
func (s *sessionServer) login(t *testing.T, key string) (string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": key})
	code, m, resp := s.send(t, "POST", "/console/session", "", "", string(body))
	if code != 200 {
		t.Fatalf("login: %d %v", code, m)
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			ck = c
		}
	}
	if ck == nil {
		t.Fatalf("login set no %s cookie", SessionCookie)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", ck)
	}
	csrf, _ := m["csrfToken"].(string)
	if len(csrf) < 40 || csrf == ck.Value {
		t.Fatalf("csrfToken %q (cookie %q)", csrf, ck.Value)
	}
	return ck.Value, csrf
}

func TestConsoleLogin(t *testing.T) {
	s := newSessionServer(t)
	for _, tc := range []struct {
		body   string
		code   int
		reason string
	}{
		{`{"key":"ember_wrong"}`, 401, auth.ReasonWrongKey},
		{`{}`, 400, ""},
		{`{"key":""}`, 400, ""},
		{`{"key":"a","extra":1}`, 400, ""},
		{`not json`, 400, ""},
	} {
		code, m, resp := s.send(t, "POST", "/console/session", "", "", tc.body)
		if code != tc.code || (tc.reason != "" && m["reason"] != tc.reason) || len(resp.Cookies()) != 0 {
			t.Errorf("login %s: %d %v cookies %v; want %d %s and no cookie", tc.body, code, m, resp.Cookies(), tc.code, tc.reason)
		}
	}
	if code, m, _ := s.send(t, "POST", "/console/session", "", "", `{"key":"`+strings.Repeat("k", 5000)+`"}`); code != 413 {
		t.Errorf("5000-byte login: %d %v, want 413", code, m)
	}

	cookie, csrf := s.login(t, bootstrapKey)
	code, m, _ := s.send(t, "GET", "/console/session", cookie, "", "")
	if code != 200 || m["csrfToken"] != csrf || m["scope"] != "admin" || m["expiresAt"] == "" {
		t.Fatalf("GET /console/session: %d %v", code, m)
	}
	// The cookie stands for the key on the API; changes need the token.
	if code, m, _ := s.send(t, "GET", "/v1/keys", cookie, "", ""); code != 200 {
		t.Fatalf("GET /v1/keys with the session: %d %v", code, m)
	}
	if code, m, _ := s.send(t, "POST", "/v1/keys", cookie, "", `{"name":"r","scope":"read"}`); code != 403 || m["reason"] != auth.ReasonCSRF {
		t.Fatalf("POST without the CSRF token: %d %v, want 403 csrf", code, m)
	}
	if code, m, _ := s.send(t, "POST", "/v1/keys", cookie, "wrong"+csrf[5:], `{"name":"r","scope":"read"}`); code != 403 || m["reason"] != auth.ReasonCSRF {
		t.Fatalf("POST with a wrong CSRF token: %d %v, want 403 csrf", code, m)
	}
	code, m, _ = s.send(t, "POST", "/v1/keys", cookie, csrf, `{"name":"r","scope":"read"}`)
	if code != 200 {
		t.Fatalf("POST with the CSRF token: %d %v", code, m)
	}
	readKey, readID := m["key"].(string), m["id"].(string)

	// A read key's session reads but cannot change anything.
	rc, rcsrf := s.login(t, readKey)
	if code, m, _ := s.send(t, "GET", "/console/session", rc, "", ""); code != 200 || m["scope"] != "read" || m["keyId"] != readID {
		t.Fatalf("read session: %d %v", code, m)
	}
	if code, m, _ := s.send(t, "POST", "/v1/keys", rc, rcsrf, `{"name":"x","scope":"admin"}`); code != 403 || m["reason"] != auth.ReasonScope || m["neededScope"] != "admin" {
		t.Fatalf("read session creating a key: %d %v, want 403 scope", code, m)
	}

	// Revoking the key ends its sessions at once.
	if _, err := s.ks.Revoke(readID); err != nil {
		t.Fatal(err)
	}
	if code, m, _ := s.send(t, "GET", "/v1/gpus", rc, "", ""); code != 401 || m["reason"] != auth.ReasonSession {
		t.Fatalf("session of a revoked key: %d %v, want 401 session", code, m)
	}
	if code, m, _ := s.send(t, "GET", "/console/session", rc, "", ""); code != 401 || m["reason"] != auth.ReasonSession {
		t.Fatalf("GET /console/session of a revoked key: %d %v, want 401 session", code, m)
	}

	// Logout needs the token, then the cookie is dead.
	if code, _, _ := s.send(t, "DELETE", "/console/session", cookie, "", ""); code != 403 {
		t.Fatalf("logout without the token: %d, want 403", code)
	}
	code, _, resp := s.send(t, "DELETE", "/console/session", cookie, csrf, "")
	if code != 204 || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("logout: %d cookies %v; want 204 and the cookie cleared", code, resp.Cookies())
	}
	if code, m, _ := s.send(t, "GET", "/v1/keys", cookie, "", ""); code != 401 || m["reason"] != auth.ReasonSession {
		t.Fatalf("after logout: %d %v, want 401 session", code, m)
	}
	// A key in the request still works without a cookie, and wins over one.
	if code, _ := call(t, s.srv, "GET", "/v1/keys", "Bearer "+bootstrapKey, ""); code != 200 {
		t.Fatalf("bearer key: %d", code)
	}
	if code, _, _ := s.send(t, "GET", "/v1/keys", "", "", ""); code != 401 {
		t.Fatalf("no key, no cookie: %d, want 401", code)
	}

	// No secret reaches the log.
	logs := s.logs.String()
	for _, secret := range []string{bootstrapKey, readKey, cookie, csrf, rc, rcsrf} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the log holds a secret (%.8s...):\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "console login") {
		t.Fatalf("no login in the log:\n%s", logs)
	}
}

func TestSessionExpiry(t *testing.T) {
	s := newSessionServer(t)
	cookie, _ := s.login(t, bootstrapKey)
	s.clock.add(time.Duration(s.h.sessions.idle) - time.Second)
	if code, _, _ := s.send(t, "GET", "/v1/keys", cookie, "", ""); code != 200 {
		t.Fatalf("used before the idle limit: %d", code)
	}
	s.clock.add(s.h.sessions.idle)
	if code, m, _ := s.send(t, "GET", "/v1/keys", cookie, "", ""); code != 401 || m["reason"] != auth.ReasonSession {
		t.Fatalf("idle past the limit: %d %v, want 401 session", code, m)
	}
	if s.h.sessions.len() != 0 {
		t.Fatalf("%d sessions held after expiry", s.h.sessions.len())
	}

	// A busy session still ends at its TTL.
	cookie, _ = s.login(t, bootstrapKey)
	step := s.h.sessions.idle / 2
	for elapsed := time.Duration(0); elapsed+step < s.h.sessions.ttl; elapsed += step {
		if code, _, _ := s.send(t, "GET", "/console/session", cookie, "", ""); code != 200 {
			t.Fatalf("busy session ended early, at %v: %d", elapsed, code)
		}
		s.clock.add(step)
	}
	s.clock.add(step)
	if code, m, _ := s.send(t, "GET", "/console/session", cookie, "", ""); code != 401 || m["reason"] != auth.ReasonSession {
		t.Fatalf("busy session past its TTL: %d %v, want 401 session", code, m)
	}
}

// TestSessionsBounded: past the cap, the least recently used session ends.
func TestSessionsBounded(t *testing.T) {
	ss := newSessions(nil)
	ss.max = 3
	ids := make([]string, 3)
	for i := range ids {
		id, _, err := ss.open("k")
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	if ss.get(ids[0]) == nil { // ids[0] is now the most recent, ids[1] the least
		t.Fatal("first session gone")
	}
	newest, _, _ := ss.open("k")
	if ss.len() != 3 {
		t.Fatalf("%d sessions, want the cap of 3", ss.len())
	}
	if ss.get(ids[1]) != nil {
		t.Fatal("the least recently used session survived")
	}
	for _, id := range []string{ids[0], ids[2], newest} {
		if ss.get(id) == nil {
			t.Fatal("a recently used session was ended")
		}
	}
}

func TestConsoleFiles(t *testing.T) {
	s := newSessionServer(t)
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/", "console", 200},
		{"/console/app.js", "export {}", 200},
		{"/console/img/x.svg", "<svg/>", 200},
		{"/console/img", "", 404},
		{"/console/missing.js", "", 404},
		{"/console/../api.key", "", 404},
		{"/console/%2e%2e/x", "", 404},
	} {
		resp, err := s.srv.Client().Get(s.srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.want != "" && !strings.Contains(string(b), tc.want)) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.code, tc.want)
		}
		if tc.code == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", tc.path, resp.Header.Get("Content-Security-Policy"))
		}
	}
	if code, _ := call(t, s.srv, "POST", "/", "", ""); code != 405 {
		t.Errorf("POST /: %d, want 405", code)
	}
	// Without assets, no console.
	srv := httptest.NewServer(New(Config{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	if code, _ := call(t, srv, "GET", "/", "", ""); code != 404 {
		t.Errorf("GET / without a console: %d, want 404", code)
	}
}

// BenchmarkSessionAuth: the cost of a console session on a request, GET
// /v1/keys with the key in Authorization against the same request with
// the session cookie and CSRF token (a hash, a map lookup, the token
// compared, and the key looked up again), same run.
func BenchmarkSessionAuth(b *testing.B) {
	ks, err := keys.Open(filepath.Join(b.TempDir(), keys.FileName))
	if err != nil {
		b.Fatal(err)
	}
	ks.SetAdmin(bootstrapKey, "/nonexistent/api.key")
	h := New(Config{KeyStore: ks, Logger: slog.New(slog.DiscardHandler)})
	id, s, err := h.sessions.open(bootstrapKey)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		set  func(r *http.Request)
	}{
		{"auth=key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+bootstrapKey) }},
		{"auth=session", func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: SessionCookie, Value: id})
			r.Header.Set(CSRFHeader, s.csrf)
		}},
	} {
		req := httptest.NewRequest("GET", "/v1/keys", nil)
		bc.set(req)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
