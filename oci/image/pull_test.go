package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeRegistry is a registry v2 on loopback serving one repository,
// "acme/echo", from in-memory blobs. auth is "", "basic" or "bearer".
type fakeRegistry struct {
	t    *testing.T
	srv  *httptest.Server
	host string

	auth       string
	user, pass string
	token      string

	mu        sync.Mutex
	blobs     map[string][]byte // digest -> content (manifests too)
	types     map[string]string // manifest digest -> media type
	tags      map[string]string // tag -> manifest or index digest
	tamper    map[string][]byte // digest -> content served instead
	tokenReqs []string          // token requests' queries
	hits      map[string]int    // request path -> requests (after auth)
	failNext  map[string]int    // request path -> 503s still to answer
}

const pullRepo = "acme/echo"

func newFakeRegistry(t *testing.T, tls bool) *fakeRegistry {
	r := &fakeRegistry{t: t, blobs: map[string][]byte{}, types: map[string]string{}, tags: map[string]string{}, tamper: map[string][]byte{}, token: "tok-123", hits: map[string]int{}, failNext: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/{rest...}", r.serve)
	mux.HandleFunc("GET /token", r.serveToken)
	r.srv = httptest.NewUnstartedServer(mux)
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused TLS handshake
	if tls {
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(strings.TrimPrefix(r.srv.URL, "http://"), "https://")
	return r
}

// add stores an image's blobs and its manifest.
func (r *fakeRegistry) add(b *built) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[digestOf(b.config)] = b.config
	for _, l := range b.layers {
		r.blobs[digestOf(l)] = l
	}
	d := digestOf(b.manifest)
	r.blobs[d] = b.manifest
	r.types[d] = mediaTypeOCIManifest
	return d
}

func (r *fakeRegistry) addIndex(t *testing.T, mt string, descs ...descriptor) string {
	b := mustJSON(t, ociIndex{SchemaVersion: 2, MediaType: mt, Manifests: descs})
	r.mu.Lock()
	defer r.mu.Unlock()
	d := digestOf(b)
	r.blobs[d], r.types[d] = b, mt
	return d
}

func regError(w http.ResponseWriter, code int, errCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, errCode, msg)
}

func (r *fakeRegistry) authorized(req *http.Request) bool {
	switch r.auth {
	case "basic":
		u, p, ok := req.BasicAuth()
		return ok && u == r.user && p == r.pass
	case "bearer":
		return req.Header.Get("Authorization") == "Bearer "+r.token
	}
	return true
}

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	if !r.authorized(req) {
		switch r.auth {
		case "basic":
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		case "bearer":
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake-registry",scope="repository:%s:pull"`, r.srv.URL, pullRepo))
		}
		regError(w, 401, "UNAUTHORIZED", "authentication required")
		return
	}
	r.mu.Lock()
	r.hits[req.URL.Path]++
	fail := r.failNext[req.URL.Path] > 0
	if fail {
		r.failNext[req.URL.Path]--
	}
	r.mu.Unlock()
	if fail {
		w.Header().Set("Retry-After", "0")
		regError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "registry is busy")
		return
	}
	rest := req.PathValue("rest")
	repo, kind, ref := "", "", ""
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i >= 0 {
			repo, kind, ref = rest[:i], k, rest[i+len(k):]
		}
	}
	if repo != pullRepo {
		regError(w, 404, "NAME_UNKNOWN", "repository name not known to registry")
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind == "/manifests/" {
		if d, ok := r.tags[ref]; ok {
			ref = d
		}
		mt, ok := r.types[ref]
		if !ok {
			regError(w, 404, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		if isKnownManifest(mt) && !strings.Contains(req.Header.Get("Accept"), mt) {
			r.t.Errorf("manifest request Accept %q lacks %s", req.Header.Get("Accept"), mt)
		}
		w.Header().Set("Content-Type", mt)
		w.Header().Set("Docker-Content-Digest", ref)
		w.Write(r.blobs[ref])
		return
	}
	b, ok := r.blobs[ref]
	if !ok {
		regError(w, 404, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	if t, ok := r.tamper[ref]; ok {
		b = t
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(b)
}

func (r *fakeRegistry) serveToken(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.tokenReqs = append(r.tokenReqs, req.URL.RawQuery)
	r.mu.Unlock()
	q := req.URL.Query()
	if q.Get("service") != "fake-registry" || q.Get("scope") != "repository:"+pullRepo+":pull" {
		http.Error(w, "bad token request", 400)
		return
	}
	if r.user != "" {
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
			http.Error(w, "unauthorized", 401)
			return
		}
	}
	json.NewEncoder(w).Encode(map[string]string{"token": r.token})
}

func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// pullFixture is a registry with "acme/echo" tagged "1" (a multi-arch OCI
// index: otherArch and this machine's), "plain" (a manifest) and
// "other-only" (an index without this machine's architecture).
type pullFixture struct {
	reg                *fakeRegistry
	img, other         *built
	manifest, indexDig string
	otherManifest      string
}

func newPullFixture(t *testing.T, tls bool) *pullFixture {
	f := &pullFixture{reg: newFakeRegistry(t, tls)}
	f.img = buildImage(t, true, goodLayer(t), smallTop(t))
	f.other = buildImage(t, true, smallTop(t))
	f.other.setConfig(t, func(c *configFile) { c.Architecture = otherArch() })
	f.manifest = f.reg.add(f.img)
	f.otherManifest = f.reg.add(f.other)
	od := f.other.manifestDesc("")
	od.Platform = &platform{OS: "linux", Architecture: otherArch()}
	md := f.img.manifestDesc("")
	md.Platform = &platform{OS: "linux", Architecture: runtime.GOARCH}
	att := descriptor{MediaType: mediaTypeOCIManifest, Digest: f.otherManifest, Size: od.Size, Platform: &platform{OS: "unknown", Architecture: "unknown"}}
	f.indexDig = f.reg.addIndex(t, mediaTypeOCIIndex, od, att, md)
	f.reg.tags["1"] = f.indexDig
	f.reg.tags["plain"] = f.manifest
	f.reg.tags["other-only"] = f.reg.addIndex(t, mediaTypeDockerList, od)
	return f
}

// checkClean checks that a failed pull left nothing behind.
func checkClean(t *testing.T, s *Store) {
	t.Helper()
	for _, d := range []string{"tmp", "blobs/sha256", "l"} {
		if n := countEntries(t, filepath.Join(s.Dir(), d)); n != 0 {
			t.Errorf("%s holds %d entries after a failed pull", d, n)
		}
	}
	if imgs := s.List(); len(imgs) != 0 {
		t.Errorf("index holds %d images after a failed pull", len(imgs))
	}
}

func TestPull(t *testing.T) {
	f := newPullFixture(t, false)
	ctx := context.Background()
	plain := PullOptions{PlainHTTP: true}

	t.Run("by tag, index", func(t *testing.T) {
		s := openStore(t, Options{})
		var last, total int64
		calls := 0
		opts := plain
		opts.Progress = func(done, tot int64) { calls++; last, total = done, tot }
		img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", opts)
		if err != nil {
			t.Fatal(err)
		}
		want := f.reg.host + "/" + pullRepo + ":1"
		if len(img.Names) != 1 || img.Names[0] != want || img.Digest != f.manifest || img.ID != digestOf(f.img.config) {
			t.Errorf("pulled %+v, want name %s digest %s", img, want, f.manifest)
		}
		checkResolved(t, s, want, f.img)
		if calls == 0 || last != total {
			t.Errorf("progress: %d calls, last %d of %d", calls, last, total)
		}
		if n := countEntries(t, filepath.Join(s.Dir(), "tmp")); n != 0 {
			t.Errorf("tmp holds %d entries after a pull", n)
		}
	})

	t.Run("by tag, manifest, default tag", func(t *testing.T) {
		s := openStore(t, Options{})
		f.reg.mu.Lock()
		f.reg.tags["latest"] = f.manifest
		f.reg.mu.Unlock()
		img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo, plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(img.Names) != 1 || img.Names[0] != f.reg.host+"/"+pullRepo+":latest" || img.Digest != f.manifest {
			t.Errorf("pulled %v %s", img.Names, img.Digest)
		}
	})

	t.Run("zstd layers", func(t *testing.T) {
		s := openStore(t, Options{})
		zimg := buildImageWith(t, zstdCompressed, goodLayer(t), smallTop(t))
		d := f.reg.add(zimg)
		f.reg.mu.Lock()
		f.reg.tags["zstd"] = d
		f.reg.mu.Unlock()
		img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":zstd", plain)
		if err != nil {
			t.Fatal(err)
		}
		checkResolved(t, s, f.reg.host+"/"+pullRepo+":zstd", zimg)
		checkStoredManifest(t, s, img, zimg)
	})

	t.Run("by digest", func(t *testing.T) {
		s := openStore(t, Options{})
		for _, d := range []string{f.manifest, f.indexDig} {
			img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+"@"+d, plain)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Names) != 0 || img.Digest != f.manifest {
				t.Errorf("pulled by %s: names %v digest %s, want unnamed %s", d, img.Names, img.Digest, f.manifest)
			}
			if _, err := s.Inspect(f.reg.host + "/" + pullRepo + "@" + f.manifest); err != nil {
				t.Error(err)
			}
		}
		img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":plain@"+f.manifest, plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(img.Names) != 1 || img.Names[0] != f.reg.host+"/"+pullRepo+":plain" {
			t.Errorf("tag and digest: names %v", img.Names)
		}
		// A digest the registry's content does not have.
		wrong := digestOf([]byte("nope"))
		f.reg.mu.Lock()
		f.reg.types[wrong] = mediaTypeOCIManifest
		f.reg.blobs[wrong] = f.img.manifest
		f.reg.mu.Unlock()
		_, err = s.Pull(ctx, f.reg.host+"/"+pullRepo+"@"+wrong, plain)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("manifest with the wrong digest: %v", err)
		}
	})

	failures := []struct {
		name, ref string
		opts      PullOptions
		is        error
		want      string
	}{
		{"unknown tag", pullRepo + ":nope", plain, ErrNotFound, "has no manifest acme/echo:nope (404 Not Found: MANIFEST_UNKNOWN"},
		{"unknown repo", "acme/nope:1", plain, ErrNotFound, "NAME_UNKNOWN"},
		{"no image for this machine", pullRepo + ":other-only", plain, nil, "has no image for linux/" + runtime.GOARCH + " (platforms: linux/" + otherArch() + ")"},
		{"plain HTTP not allowed", pullRepo + ":1", PullOptions{}, nil, "speaks plain HTTP, not HTTPS: plain HTTP is refused unless allowed with the PlainHTTP option (ember image pull --plain-http)"},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, Options{})
			_, err := s.Pull(ctx, f.reg.host+"/"+tt.ref, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
			checkClean(t, s)
		})
	}

	t.Run("no registry host", func(t *testing.T) {
		s := openStore(t, Options{})
		for _, ref := range []string{"acme/echo:1", "ubuntu", "docker.io/library/ubuntu:22.04"} {
			_, err := s.Pull(ctx, ref, plain)
			if err == nil || !strings.Contains(err.Error(), "names no registry") {
				t.Errorf("%s: %v", ref, err)
			}
		}
	})

	t.Run("tampered blob", func(t *testing.T) {
		s := openStore(t, Options{})
		layer := digestOf(f.img.layers[1])
		bad := append([]byte(nil), f.img.layers[1]...)
		bad[len(bad)/2] ^= 0xff
		f.reg.mu.Lock()
		f.reg.tamper[layer] = bad
		f.reg.mu.Unlock()
		defer func() {
			f.reg.mu.Lock()
			delete(f.reg.tamper, layer)
			f.reg.mu.Unlock()
		}()
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", plain)
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "layer "+layer) {
			t.Errorf("tampered layer: %v", err)
		}
		checkClean(t, s)
	})

	t.Run("unsupported manifest media type", func(t *testing.T) {
		s := openStore(t, Options{})
		b := []byte(`{"schemaVersion":1,"name":"acme/echo","tag":"old","fsLayers":[]}`)
		d := digestOf(b)
		f.reg.mu.Lock()
		f.reg.blobs[d], f.reg.types[d], f.reg.tags["old"] = b, "application/vnd.docker.distribution.manifest.v1+prettyjws", d
		f.reg.mu.Unlock()
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":old", plain)
		if err == nil || !strings.Contains(err.Error(), `media type "application/vnd.docker.distribution.manifest.v1+prettyjws", which is not supported`) {
			t.Errorf("schema 1: %v", err)
		}
		checkClean(t, s)
	})
}

func TestPullAuth(t *testing.T) {
	ctx := context.Background()
	t.Run("bearer, anonymous", func(t *testing.T) {
		f := newPullFixture(t, false)
		f.reg.auth = "bearer"
		s := openStore(t, Options{})
		if _, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true}); err != nil {
			t.Fatal(err)
		}
		if len(f.reg.tokenReqs) == 0 {
			t.Error("no token was asked for")
		}
	})
	t.Run("bearer, credentials", func(t *testing.T) {
		f := newPullFixture(t, false)
		f.reg.auth, f.reg.user, f.reg.pass = "bearer", "alice", "s3cret"
		s := openStore(t, Options{})
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true})
		if err == nil || !strings.Contains(err.Error(), "refused an anonymous token") {
			t.Errorf("without credentials: %v", err)
		}
		_, err = s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, Username: "alice", Password: "wrong"})
		if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
			t.Errorf("wrong password: %v", err)
		}
		checkClean(t, s)
		if _, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, Username: "alice", Password: "s3cret"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("basic", func(t *testing.T) {
		f := newPullFixture(t, false)
		f.reg.auth, f.reg.user, f.reg.pass = "basic", "bob", "pw"
		s := openStore(t, Options{})
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true})
		if err == nil || !strings.Contains(err.Error(), "requires a username and password") {
			t.Errorf("without credentials: %v", err)
		}
		_, err = s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, Username: "bob", Password: "nope"})
		if err == nil || !strings.Contains(err.Error(), "(401 Unauthorized: UNAUTHORIZED (authentication required)): check the username and password") {
			t.Errorf("wrong password: %v", err)
		}
		checkClean(t, s)
		if _, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, Username: "bob", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("https", func(t *testing.T) {
		f := newPullFixture(t, true)
		f.reg.auth = "bearer"
		s := openStore(t, Options{})
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("untrusted certificate: %v", err)
		}
		img, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":plain", PullOptions{client: f.reg.srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if img.Digest != f.manifest {
			t.Errorf("digest %s, want %s", img.Digest, f.manifest)
		}
	})
}

func TestParseChallenge(t *testing.T) {
	scheme, p := parseChallenge(`Bearer realm="https://auth.lan/token",service="registry.lan",scope="repository:a/b:pull,push", error=insufficient_scope`)
	want := map[string]string{"realm": "https://auth.lan/token", "service": "registry.lan", "scope": "repository:a/b:pull,push", "error": "insufficient_scope"}
	if scheme != "Bearer" || fmt.Sprint(p) != fmt.Sprint(want) {
		t.Errorf("got %s %v", scheme, p)
	}
}

// TestPullDirSurvivesGC checks GC leaves a downloading pull's directory.
func TestPullDirSurvivesGC(t *testing.T) {
	s := openStore(t, Options{})
	dir, err := s.pullDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("GC removed a pull in progress: %v", err)
	}
	s.dropPullDir(dir)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pull dir left: %v", err)
	}
}
