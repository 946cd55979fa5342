package httpapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/emberhq/ember/daemon/client"
	"github.com/emberhq/ember/daemon/internal/testimage"
	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

const uploadKey = "upload-key"

func uploadServer(t *testing.T, st *image.Store, limit int64) *httptest.Server {
	t.Helper()
	h := New(Config{
		Keys:           func() []string { return []string{uploadKey} },
		Images:         st,
		MaxUploadBytes: limit,
		Logger:         slog.New(slog.DiscardHandler),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func openImageStore(t *testing.T) *image.Store {
	t.Helper()
	st, err := image.Open(filepath.Join(t.TempDir(), "images"), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func archive(t *testing.T, img testimage.Image) (*testimage.Built, []byte) {
	t.Helper()
	b, data, err := testimage.Archive(img)
	if err != nil {
		t.Fatal(err)
	}
	return b, data
}

// upload posts body; chunked sends it without a Content-Length.
func upload(t *testing.T, srv *httptest.Server, query, key string, body []byte, chunked bool) (int, []byte) {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // hides the length from net/http
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/images:upload"+query, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func errorOf(t *testing.T, data []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
		t.Fatalf("not an {\"error\"} body: %s", data)
	}
	return e.Error
}

// tmpEmpty checks that no upload is left in the store's tmp/.
func tmpEmpty(t *testing.T, st *image.Store) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(st.Dir(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("tmp/ holds %d entries after the upload, e.g. %s", len(ents), ents[0].Name())
	}
}

func TestImageUpload(t *testing.T) {
	st := openImageStore(t)
	srv := uploadServer(t, st, 0)
	created := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	b, data := archive(t, testimage.Image{
		Name: "ghcr.io/acme/echo:1", Files: map[string]string{"worker": "\x7fELF tiny"}, Gzip: true,
		Created: created, Entrypoint: []string{"/worker"}, Env: []string{"A=1"}, WorkingDir: "/",
	})

	t.Run("archive names", func(t *testing.T) {
		code, resp := upload(t, srv, "", uploadKey, data, false)
		if code != 200 {
			t.Fatalf("%d %s", code, resp)
		}
		var img emberv1.Image
		if err := protojson.Unmarshal(resp, &img); err != nil {
			t.Fatalf("%v: %s", err, resp)
		}
		if img.Id != b.ConfigDigest || img.Digest != b.ManifestDigest || len(img.Names) != 1 || img.Names[0] != "ghcr.io/acme/echo:1" ||
			len(img.Layers) != 1 || img.Layers[0] != b.DiffID || img.Size <= 0 || !img.Created.AsTime().Equal(created) ||
			img.Config.GetEntrypoint()[0] != "/worker" {
			t.Errorf("image = %v", &img)
		}
		// EmitUnpopulated, as the gateway: empty fields are present.
		var m map[string]any
		json.Unmarshal(resp, &m)
		if cfg, _ := m["config"].(map[string]any); cfg == nil || cfg["cmd"] == nil || cfg["user"] != "" {
			t.Errorf("config JSON = %v, want every field present", m["config"])
		}
		tmpEmpty(t, st)
	})

	t.Run("name given, gzipped archive, chunked", func(t *testing.T) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(data)
		zw.Close()
		code, resp := upload(t, srv, "?name=acme/echo:gz", uploadKey, gz.Bytes(), true)
		if code != 200 || !strings.Contains(string(resp), `"acme/echo:gz"`) {
			t.Fatalf("%d %s", code, resp)
		}
		if _, err := st.Inspect("acme/echo:gz"); err != nil {
			t.Error(err)
		}
		tmpEmpty(t, st)
	})

	t.Run("no name anywhere", func(t *testing.T) {
		_, unnamed := archive(t, testimage.Image{Files: map[string]string{"worker": "x"}})
		code, resp := upload(t, srv, "", uploadKey, unnamed, false)
		msg := errorOf(t, resp)
		if code != 400 || !strings.Contains(msg, "image name required") || !strings.Contains(msg, "uploaded archive") || strings.Contains(msg, "/proc/") || strings.Contains(msg, st.Dir()) {
			t.Errorf("%d %q", code, msg)
		}
		tmpEmpty(t, st)
	})

	t.Run("hostile", func(t *testing.T) {
		_, evil := archive(t, testimage.Image{Name: "evil:1", Files: map[string]string{"../../escape": "x"}})
		code, resp := upload(t, srv, "", uploadKey, evil, false)
		if msg := errorOf(t, resp); code != 400 || !strings.Contains(msg, "refused layer content") {
			t.Errorf("%d %q", code, msg)
		}
		if _, err := st.Inspect("evil:1"); err == nil {
			t.Error("hostile image was imported")
		}
		tmpEmpty(t, st)
	})

	t.Run("not an archive", func(t *testing.T) {
		code, resp := upload(t, srv, "", uploadKey, []byte(strings.Repeat("junk", 1000)), false)
		if msg := errorOf(t, resp); code != 400 {
			t.Errorf("%d %q", code, msg)
		}
		code, resp = upload(t, srv, "", uploadKey, nil, false)
		if msg := errorOf(t, resp); code != 400 || !strings.Contains(msg, "empty upload") {
			t.Errorf("empty: %d %q", code, msg)
		}
		tmpEmpty(t, st)
	})

	t.Run("auth", func(t *testing.T) {
		for _, key := range []string{"", "wrong"} {
			if code, resp := upload(t, srv, "", key, data, false); code != 401 {
				t.Errorf("key %q: %d %s", key, code, resp)
			}
		}
	})

	t.Run("method", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/images:upload", nil)
		req.Header.Set("Authorization", uploadKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Errorf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
}

func TestImageUploadLimit(t *testing.T) {
	st := openImageStore(t)
	srv := uploadServer(t, st, 1536)
	_, data := archive(t, testimage.Image{Name: "big:1", Files: map[string]string{"worker": strings.Repeat("x", 4096)}})
	for _, chunked := range []bool{false, true} {
		code, resp := upload(t, srv, "", uploadKey, data, chunked)
		if msg := errorOf(t, resp); code != 413 || !strings.Contains(msg, "upload limit of 1.5 KiB (1536 bytes)") {
			t.Errorf("chunked %v: %d %q", chunked, code, msg)
		}
	}
	tmpEmpty(t, st)
	if len(st.List()) != 0 {
		t.Error("an image over the limit was imported")
	}
}

func TestImageUploadTooLargeForStore(t *testing.T) {
	st, err := image.Open(filepath.Join(t.TempDir(), "images"), image.Options{MaxImageBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := uploadServer(t, st, 0)
	_, data := archive(t, testimage.Image{Name: "bomb:1", Gzip: true, Files: map[string]string{"zeros": strings.Repeat("\x00", 64<<10)}})
	code, resp := upload(t, srv, "", uploadKey, data, false)
	if msg := errorOf(t, resp); code != 413 || !strings.Contains(msg, "limit of 8192 bytes") {
		t.Errorf("%d %q", code, msg)
	}
}

func TestImageUploadNoStore(t *testing.T) {
	srv := uploadServer(t, nil, 0)
	code, resp := upload(t, srv, "?name=x", uploadKey, []byte("tar"), false)
	if msg := errorOf(t, resp); code != 404 || msg != "image store not enabled: emberd runs with --runtime process" {
		t.Errorf("%d %q", code, msg)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 64 << 30: "64 GiB", 5 << 40: "5 TiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestImageUploadSurvivesGC checks that a GC (an image delete) emptying
// tmp/ while an upload streams in does not break the upload.
func TestImageUploadSurvivesGC(t *testing.T) {
	st := openImageStore(t)
	srv := uploadServer(t, st, 0)
	_, data := archive(t, testimage.Image{Name: "slow:1", Files: map[string]string{"worker": strings.Repeat("w", 64<<10)}})
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:len(data)/2])
		// Wait until the upload's file exists, then let GC remove it.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if ents, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(ents) > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := st.GC(); err != nil {
			pw.CloseWithError(err)
			return
		}
		if ents, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(ents) != 0 {
			t.Errorf("GC left %d entries in tmp/", len(ents))
		}
		pw.Write(data[len(data)/2:])
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/images:upload", pr)
	req.Header.Set("Authorization", "Bearer "+uploadKey)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if _, err := st.Inspect("slow:1"); err != nil {
		t.Error(err)
	}
	tmpEmpty(t, st)
}

// TestImageUploadWithClient sends an OCI layout directory the way
// `ember image import DIR` does (packed into an OCI archive on the fly) and
// an archive file, through the real route into a real store.
func TestImageUploadWithClient(t *testing.T) {
	st := openImageStore(t)
	srv := uploadServer(t, st, 0)
	c, err := client.New(srv.URL, uploadKey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := testimage.Image{Name: "ghcr.io/acme/layout:1", Gzip: true, Files: map[string]string{"worker": "tiny", "etc/x": "y"}}.Build()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := b.WriteLayout(dir); err != nil {
		t.Fatal(err)
	}
	rc, size, err := client.ImageArchive(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var sent int64
	img, err := c.UploadImage(context.Background(), rc, size, "acme/layout:renamed", func(n, _ int64) { sent = n })
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != b.ConfigDigest || len(img.Names) != 1 || img.Names[0] != "acme/layout:renamed" || img.Size <= 0 || sent != size {
		t.Errorf("image %+v, %d of %d bytes reported sent", img, sent, size)
	}

	// Errors come back as the client's APIError with the store's message.
	_, unnamed := archive(t, testimage.Image{Files: map[string]string{"worker": "x"}})
	_, err = c.UploadImage(context.Background(), bytes.NewReader(unnamed), int64(len(unnamed)), "", nil)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "image name required") {
		t.Errorf("unnamed upload: %v", err)
	}
	tmpEmpty(t, st)
}

// TestImageUploadStream sends archives of unknown length through the
// client, as `ember image load` does from a pipe: a zstd-compressed OCI
// archive is imported, and a stream past the upload limit is answered 413
// naming the limit, after which the client stops sending.
func TestImageUploadStream(t *testing.T) {
	t.Run("zstd archive from a pipe", func(t *testing.T) {
		st := openImageStore(t)
		c, err := client.New(uploadServer(t, st, 0).URL, uploadKey)
		if err != nil {
			t.Fatal(err)
		}
		b, data := archive(t, testimage.Image{Name: "ghcr.io/acme/piped:1", Gzip: true, Files: map[string]string{"worker": "tiny"}})
		var z bytes.Buffer
		zw, err := zstd.NewWriter(&z)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(data)
		zw.Close()
		pr, pw := io.Pipe()
		go func() { _, err := pw.Write(z.Bytes()); pw.CloseWithError(err) }()
		img, err := c.UploadImage(context.Background(), pr, -1, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if img.ID != b.ConfigDigest || len(img.Names) != 1 || img.Names[0] != "ghcr.io/acme/piped:1" {
			t.Errorf("imported %+v, want id %s", img, b.ConfigDigest)
		}
		tmpEmpty(t, st)
	})

	t.Run("past the limit", func(t *testing.T) {
		st := openImageStore(t)
		const limit = 1 << 20
		c, err := client.New(uploadServer(t, st, limit).URL, uploadKey)
		if err != nil {
			t.Fatal(err)
		}
		// An endless stream, as a pipe from a command that would not stop:
		// the producer ends when the client closes the request body.
		pr, pw := io.Pipe()
		var sent int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 64<<10)
			for sent < 1<<30 { // bound: a client that never stops fails the test
				n, err := pw.Write(buf)
				sent += int64(n)
				if err != nil {
					return
				}
			}
			pw.Close()
		}()
		_, err = c.UploadImage(context.Background(), pr, -1, "", nil)
		pr.CloseWithError(errors.New("upload over"))
		<-done
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 413 || !strings.Contains(ae.Message, "larger than the upload limit of 1 MiB (1048576 bytes)") {
			t.Errorf("upload past the limit: %v", err)
		}
		if sent >= 1<<30 {
			t.Errorf("the client sent %d bytes past a %d-byte limit", sent, limit)
		}
		t.Logf("sent %d bytes before the 413 ended the upload", sent)
		tmpEmpty(t, st)
	})
}
