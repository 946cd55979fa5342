package client

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/emberhq/ember/daemon/internal/testimage"
)

const imageJSON = `{"id":"sha256:aa","names":["ghcr.io/acme/echo:1"],"digest":"sha256:bb","size":"3072","layers":["sha256:cc"],"created":null,"imported":"2025-06-03T09:00:00Z","config":{"entrypoint":["/worker"],"cmd":[],"env":["A=1"],"workingDir":"/","user":""}}`

// upload is what the fake daemon saw of an upload.
type upload struct {
	contentLength int64
	contentType   string
	name          string
	body          []byte
}

// uploadDaemon is a stand-in for POST /v1/images:upload that keeps each
// request's body, name and headers.
func uploadDaemon(t *testing.T) (*Client, func() []upload) {
	t.Helper()
	var mu sync.Mutex
	var ups []upload
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/images:upload", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			reply(400, `{"error":"short body"}`)(w, r)
			return
		}
		mu.Lock()
		ups = append(ups, upload{r.ContentLength, r.Header.Get("Content-Type"), r.URL.Query().Get("name"), body})
		mu.Unlock()
		reply(200, imageJSON)(w, r)
	})
	// Not serve(): its recorder would consume the body first.
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "k")
	if err != nil {
		t.Fatal(err)
	}
	return c, func() []upload {
		mu.Lock()
		defer mu.Unlock()
		return append([]upload(nil), ups...)
	}
}

func TestUploadImageFile(t *testing.T) {
	_, data, err := testimage.Archive(testimage.Image{Name: "ghcr.io/acme/echo:1", Files: map[string]string{"worker": "tiny"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "echo.tar")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, uploads := uploadDaemon(t)
	rc, size, err := ImageArchive(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if size != int64(len(data)) {
		t.Errorf("size = %d, want the file's %d", size, len(data))
	}
	var last, total int64
	calls := 0
	img, err := c.UploadImage(context.Background(), rc, size, "acme/echo:up", func(sent, tot int64) {
		if sent < last {
			t.Errorf("progress went back: %d after %d", sent, last)
		}
		last, total = sent, tot
		calls++
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != "sha256:aa" || img.Size != 3072 || !reflect.DeepEqual(img.Names, []string{"ghcr.io/acme/echo:1"}) || img.Config.Entrypoint[0] != "/worker" || img.Created != "" {
		t.Errorf("image = %+v", img)
	}
	if string(img.Raw) != imageJSON {
		t.Errorf("Raw = %s", img.Raw)
	}
	if calls == 0 || last != size || total != size {
		t.Errorf("progress: %d calls, last (%d, %d), want ending at (%d, %d)", calls, last, total, size, size)
	}
	ups := uploads()
	if len(ups) != 1 {
		t.Fatalf("%d uploads", len(ups))
	}
	u := ups[0]
	if !bytes.Equal(u.body, data) || u.name != "acme/echo:up" || u.contentLength != size || u.contentType != "application/octet-stream" {
		t.Errorf("upload: name %q, Content-Length %d, Content-Type %q, %d body bytes equal to the file: %v",
			u.name, u.contentLength, u.contentType, len(u.body), bytes.Equal(u.body, data))
	}
}

func TestUploadImageLayoutDir(t *testing.T) {
	b, err := testimage.Image{Name: "ghcr.io/acme/echo:1", Files: map[string]string{"worker": "tiny"}, Gzip: true}.Build()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := b.WriteLayout(dir); err != nil {
		t.Fatal(err)
	}
	// A blob far into the name-length range still gives the exact size.
	long := filepath.Join(dir, "blobs", strings.Repeat("d", 120))
	os.MkdirAll(long, 0o755)
	os.WriteFile(filepath.Join(long, strings.Repeat("f", 130)), []byte("x"), 0o644)

	c, uploads := uploadDaemon(t)
	rc, size, err := ImageArchive(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := c.UploadImage(context.Background(), rc, size, "", nil); err != nil {
		t.Fatal(err)
	}
	u := uploads()[0]
	if u.contentLength != size || int64(len(u.body)) != size || u.name != "" {
		t.Errorf("Content-Length %d, body %d bytes, size %d, name %q", u.contentLength, len(u.body), size, u.name)
	}
	got := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(u.body))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[hdr.Name] = string(body)
	}
	for name, want := range map[string]string{
		"oci-layout":                           `{"imageLayoutVersion":"1.0.0"}`,
		"index.json":                           string(b.Index),
		"blobs/sha256/" + b.LayerDigest[7:]:    string(b.Layer),
		"blobs/sha256/" + b.ConfigDigest[7:]:   string(b.Config),
		"blobs/sha256/" + b.ManifestDigest[7:]: string(b.Manifest),
	} {
		if got[name] != want {
			t.Errorf("entry %s: %d bytes, want %d", name, len(got[name]), len(want))
		}
	}
}

func TestImageArchiveRefusals(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ImageArchive(dir); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte("{}"), 0o644)
	os.Symlink("/dev/null", filepath.Join(dir, "dev"))
	if _, _, err := ImageArchive(dir); err == nil || !strings.Contains(err.Error(), "not a regular file or directory") {
		t.Errorf("device in layout: %v", err)
	}
	if _, _, err := ImageArchive(filepath.Join(dir, "missing.tar")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestImageCalls(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/images", reply(200, `{"images":[`+imageJSON+`]}`))
	mux.Handle("GET /v1/images/{ref...}", reply(200, imageJSON))
	mux.Handle("DELETE /v1/images/{ref...}", reply(200, `{"layersRemoved":2,"bytesFreed":"4096"}`))
	mux.Handle("POST /v1/images:import", reply(200, imageJSON))
	c, rec := serve(t, "k", mux)
	ctx := context.Background()

	imgs, err := c.ListImages(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Size != 3072 {
		t.Fatalf("ListImages = %+v, %v", imgs, err)
	}
	if _, err := c.GetImage(ctx, "ghcr.io/acme/echo:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetImage(ctx, "odd name/x y:1"); err != nil {
		t.Fatal(err)
	}
	d, err := c.DeleteImage(ctx, "echo@sha256:bb")
	if err != nil || d.LayersRemoved != 2 || d.BytesFreed != 4096 {
		t.Fatalf("DeleteImage = %+v, %v", d, err)
	}
	if _, err := c.ImportImage(ctx, "/srv/echo.tar", "echo:1"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rec.requests() {
		got = append(got, r.Method+" "+r.Path+" "+r.Body)
	}
	want := []string{
		"GET /v1/images ",
		"GET /v1/images/ghcr.io/acme/echo:1 ",
		"GET /v1/images/odd%20name/x%20y:1 ",
		"DELETE /v1/images/echo@sha256:bb ",
		`POST /v1/images:import {"name":"echo:1","path":"/srv/echo.tar"}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
