package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/internal/testimage"
)

var testClock = time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC)

// imageFixtures writes a named OCI archive, an unnamed one and an OCI
// layout directory into a temp dir.
func imageFixtures(t *testing.T) (dir string, b *testimage.Built) {
	t.Helper()
	dir = t.TempDir()
	img := testimage.Image{Name: "ghcr.io/acme/echo:1", Files: map[string]string{"worker": "\x7fELF tiny"}, Entrypoint: []string{"/worker"}}
	b, data, err := testimage.Archive(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "echo.tar"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	img.Name = ""
	_, unnamed, err := testimage.Archive(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unnamed.tar"), unnamed, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteLayout(filepath.Join(dir, "echo-layout")); err != nil {
		t.Fatal(err)
	}
	return dir, b
}

// TestImageGolden checks the image commands' output against
// testdata/image_*.golden.
func TestImageGolden(t *testing.T) {
	tests := []struct {
		name  string
		empty bool
		inUse map[string]string
		args  []string
	}{
		{name: "image_list", args: []string{"image", "list"}},
		{name: "image_list_json", args: []string{"images", "ls", "--json"}},
		{name: "image_list_empty", empty: true, args: []string{"image", "list"}},
		{name: "image_list_empty_json", empty: true, args: []string{"image", "list", "--json"}},
		{name: "image_inspect", args: []string{"image", "inspect", "ghcr.io/acme/echo:1"}},
		{name: "image_inspect_unnamed", args: []string{"image", "inspect", "77aa0c1d2e3f"}},
		{name: "image_inspect_json", args: []string{"image", "inspect", "a0f53bf881a1", "--json"}},
		{name: "image_inspect_unknown", args: []string{"image", "inspect", "ghcr.io/acme/nope:1"}},
		{name: "image_remove_name", args: []string{"image", "rm", "echo:latest"}},
		{name: "image_remove_id", args: []string{"image", "remove", "sha256:77aa0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f"}},
		{name: "image_remove_json", args: []string{"image", "rm", "sha256:77aa0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f", "--json"}},
		{name: "image_remove_in_use", inUse: map[string]string{"ghcr.io/acme/echo:1": "echo, echo-too"}, args: []string{"image", "rm", "ghcr.io/acme/echo:1"}},
		{name: "image_import_file", args: []string{"image", "import", "DIR/echo.tar"}},
		{name: "image_import_dir_json", args: []string{"image", "import", "DIR/echo-layout", "--name", "acme/echo:layout", "--json"}},
		{name: "image_import_unnamed", args: []string{"image", "import", "DIR/unnamed.tar"}},
		{name: "image_import_missing", args: []string{"image", "import", "DIR/missing.tar"}},
		{name: "image_import_no_arg", args: []string{"image", "import"}},
		{name: "image_pull", args: []string{"image", "pull", "registry.lan:5000/acme/echo:1"}},
		{name: "image_pull_json", args: []string{"image", "pull", "10.0.0.5:5000/acme/echo:2", "--plain-http", "--json"}},
		{name: "image_pull_plain_http_refused", args: []string{"image", "pull", "10.0.0.5:5000/acme/echo:2"}},
		{name: "image_pull_not_found", args: []string{"image", "pull", "registry.lan:5000/acme/missing:1"}},
		{name: "image_pull_no_host", args: []string{"image", "pull", "acme/echo:1"}},
		{name: "image_pull_username_without_stdin", args: []string{"image", "pull", "registry.lan:5000/acme/echo:1", "--username", "ci"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, _ := imageFixtures(t)
			fd := newFakeDaemon(t, seedEndpoints...)
			if tt.empty {
				fd.images = nil
			}
			for ref, eps := range tt.inUse {
				fd.inUse[ref] = eps
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "DIR", dir)
			}
			r := runEmber(t, fd.addr, invocation{args: args})
			golden(t, tt.name, r, fd.addr, "ADDR", dir, "DIR")
		})
	}
}

// TestImageUploadRequest checks what "ember image import" sends: a file as
// it is, a layout directory as an OCI archive of its files, the name in
// the query, and the admin key.
func TestImageUploadRequest(t *testing.T) {
	dir, b := imageFixtures(t)
	fd := newFakeDaemon(t)
	r := runEmber(t, fd.addr, invocation{args: []string{"image", "import", filepath.Join(dir, "echo.tar")}})
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = runEmber(t, fd.addr, invocation{args: []string{"image", "import", filepath.Join(dir, "echo-layout"), "--name", "acme/echo:2"}})
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var ups []fakeRequest
	for _, req := range fd.requests() {
		if req.Method == "POST" && req.Path == "/v1/images:upload" {
			ups = append(ups, req)
		}
	}
	if len(ups) != 2 {
		t.Fatalf("%d uploads, want 2: %+v", len(ups), fd.requests())
	}
	archive, _ := os.ReadFile(filepath.Join(dir, "echo.tar"))
	if ups[0].Body != string(archive) || ups[0].Query != "" || ups[0].Auth != "Bearer "+testKey {
		t.Errorf("file upload: query %q, auth %q, %d body bytes (want the file's %d)", ups[0].Query, ups[0].Auth, len(ups[0].Body), len(archive))
	}
	if q, _ := url.ParseQuery(ups[1].Query); q.Get("name") != "acme/echo:2" {
		t.Errorf("layout upload query %q, want name=acme/echo:2", ups[1].Query)
	}
	got := map[string]string{}
	tr := tar.NewReader(strings.NewReader(ups[1].Body))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("layout upload is not a tar: %v", err)
		}
		body, _ := io.ReadAll(tr)
		got[hdr.Name] = string(body)
	}
	want := map[string]string{
		"oci-layout":                           `{"imageLayoutVersion":"1.0.0"}`,
		"index.json":                           string(b.Index),
		"blobs/":                               "",
		"blobs/sha256/":                        "",
		"blobs/sha256/" + b.ConfigDigest[7:]:   string(b.Config),
		"blobs/sha256/" + b.ManifestDigest[7:]: string(b.Manifest),
		"blobs/sha256/" + b.LayerDigest[7:]:    string(b.Layer),
	}
	if len(got) != len(want) {
		t.Errorf("layout archive entries %d, want %d", len(got), len(want))
	}
	for name, body := range want {
		if g, ok := got[name]; !ok || g != body {
			t.Errorf("layout archive entry %s: present %v, %d bytes; want %d", name, ok, len(g), len(body))
		}
	}
}

// pull answers like ImageService.PullImage through the gateway: hosts
// starting 10.0.0.5 speak plain HTTP only, repository "acme/missing" does
// not exist, and a reference without a registry host is refused.
func (fd *fakeDaemon) pull(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ref       string `json:"ref"`
		PlainHTTP bool   `json:"plainHttp"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	host, _, _ := strings.Cut(req.Ref, "/")
	switch {
	case !strings.ContainsAny(host, ".:"):
		imageError(w, 400, 3, fmt.Sprintf("pulling %s: image reference %q names no registry: give the registry's host, e.g. registry.lan:5000/%s (there is no default registry such as Docker Hub on an air-gapped appliance)", req.Ref, req.Ref, req.Ref))
	case strings.HasPrefix(req.Ref, "10.0.0.5") && !req.PlainHTTP:
		imageError(w, 400, 3, fmt.Sprintf("pulling %s: registry %s speaks plain HTTP, not HTTPS: plain HTTP is refused unless allowed with the PlainHTTP option (ember image pull --plain-http)", req.Ref, host))
	case strings.Contains(req.Ref, "/acme/missing"):
		imageError(w, 404, 5, fmt.Sprintf("pulling %s: image not found: registry %s/acme/missing has no manifest acme/missing:1 (404 Not Found: NAME_UNKNOWN (repository name not known to registry)); check the repository and tag", req.Ref, host))
	default:
		img := strings.Replace(uploadedImage, "NAME", req.Ref, 1)
		fd.mu.Lock()
		fd.images = append(fd.images, json.RawMessage(img))
		fd.mu.Unlock()
		send(w, 200, img)
	}
}

// TestImagePullRequest checks what "ember image pull" sends, the password
// read from stdin.
func TestImagePullRequest(t *testing.T) {
	fd := newFakeDaemon(t)
	r := runEmber(t, fd.addr, invocation{args: []string{"image", "pull", "registry.lan/acme/echo:1", "--username", "ci", "--password-stdin", "--plain-http"}, stdin: "s3cret\n"})
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var pulls []fakeRequest
	for _, req := range fd.requests() {
		if req.Method == "POST" && req.Path == "/v1/images:pull" {
			pulls = append(pulls, req)
		}
	}
	if len(pulls) != 1 {
		t.Fatalf("%d pulls, want 1: %+v", len(pulls), fd.requests())
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(pulls[0].Body), &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"ref": "registry.lan/acme/echo:1", "plainHttp": true, "username": "ci", "password": "s3cret"}
	if fmt.Sprint(body) != fmt.Sprint(want) || pulls[0].Auth != "Bearer "+testKey {
		t.Errorf("pull request %v (auth %q), want %v", body, pulls[0].Auth, want)
	}
}
