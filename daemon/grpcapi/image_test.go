package grpcapi

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/emberhq/ember/daemon/imagesvc"
	"github.com/emberhq/ember/daemon/internal/testimage"
	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/store"
)

var created = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// echoImage is a tiny named image: a few-byte "binary" and a config.
var echoImage = testimage.Image{
	Name:       "ghcr.io/acme/echo:1",
	Files:      map[string]string{"worker": "#!/bin/true\n", "etc/greeting": "hello\n"},
	Gzip:       true,
	Created:    created,
	Entrypoint: []string{"/worker"},
	Cmd:        []string{"--serve"},
	Env:        []string{"PATH=/bin", "MODE=echo"},
	WorkingDir: "/srv",
	User:       "65534:65534",
}

func openStore(t *testing.T) *image.Store {
	t.Helper()
	st, err := image.Open(filepath.Join(t.TempDir(), "images"), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// writeArchive writes img as an OCI archive file and returns its path.
func writeArchive(t *testing.T, img testimage.Image) (*testimage.Built, string) {
	t.Helper()
	b, data, err := testimage.Archive(img)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return b, path
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v (%v), want %v", what, status.Code(err), err, code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Errorf("%s: message %q does not mention %q", what, status.Convert(err).Message(), c)
		}
	}
}

type fakeEndpoints []store.Endpoint

func (f fakeEndpoints) Endpoints() []store.Endpoint { return f }

func TestImageServiceImportGetList(t *testing.T) {
	st := openStore(t)
	sv := &ImageServer{Store: st}
	ctx := context.Background()
	b, path := writeArchive(t, echoImage)

	_, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: "image.tar"})
	wantCode(t, "relative path", err, codes.InvalidArgument, "must be absolute")
	_, err = sv.ImportImage(ctx, &emberv1.ImportImageRequest{})
	wantCode(t, "no path", err, codes.InvalidArgument, "path: is required")
	_, err = sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: filepath.Join(t.TempDir(), "missing.tar")})
	wantCode(t, "missing file", err, codes.InvalidArgument, "no such file")

	img, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	want := &emberv1.Image{
		Id:     b.ConfigDigest,
		Names:  []string{"ghcr.io/acme/echo:1"},
		Digest: b.ManifestDigest,
		Layers: []string{b.DiffID},
		Config: &emberv1.ImageConfig{
			Entrypoint: []string{"/worker"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/bin", "MODE=echo"},
			WorkingDir: "/srv", User: "65534:65534",
		},
	}
	checkImage(t, img, want)
	if img.Size <= 0 {
		t.Errorf("size = %d, want > 0", img.Size)
	}
	if !img.GetCreated().AsTime().Equal(created) {
		t.Errorf("created = %v, want %v", img.GetCreated().AsTime(), created)
	}
	if d := time.Since(img.GetImported().AsTime()); d < 0 || d > time.Minute {
		t.Errorf("imported = %v, not just now", img.GetImported().AsTime())
	}

	for _, ref := range []string{"ghcr.io/acme/echo:1", b.ConfigDigest, b.ManifestDigest, b.ConfigDigest[7:19]} {
		got, err := sv.GetImage(ctx, &emberv1.GetImageRequest{Ref: ref})
		if err != nil {
			t.Fatalf("GetImage(%s): %v", ref, err)
		}
		checkImage(t, got, want)
	}
	_, err = sv.GetImage(ctx, &emberv1.GetImageRequest{Ref: "ghcr.io/acme/echo:2"})
	wantCode(t, "unknown ref", err, codes.NotFound, "image not found")
	_, err = sv.GetImage(ctx, &emberv1.GetImageRequest{})
	wantCode(t, "empty ref", err, codes.InvalidArgument)

	// The same archive under another name: one image, two names.
	if _, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path, Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	list, err := sv.ListImages(ctx, &emberv1.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Images) != 1 || !slices.Equal(list.Images[0].Names, []string{"echo:latest", "ghcr.io/acme/echo:1"}) {
		t.Errorf("list = %v", list.Images)
	}
}

func checkImage(t *testing.T, got, want *emberv1.Image) {
	t.Helper()
	if got.Id != want.Id || got.Digest != want.Digest || !slices.Equal(got.Names, want.Names) || !slices.Equal(got.Layers, want.Layers) {
		t.Errorf("image = id %s digest %s names %v layers %v\nwant   id %s digest %s names %v layers %v",
			got.Id, got.Digest, got.Names, got.Layers, want.Id, want.Digest, want.Names, want.Layers)
	}
	gc, wc := got.GetConfig(), want.GetConfig()
	if !slices.Equal(gc.GetEntrypoint(), wc.GetEntrypoint()) || !slices.Equal(gc.GetCmd(), wc.GetCmd()) ||
		!slices.Equal(gc.GetEnv(), wc.GetEnv()) || gc.GetWorkingDir() != wc.GetWorkingDir() || gc.GetUser() != wc.GetUser() {
		t.Errorf("config = %v, want %v", gc, wc)
	}
}

func TestImageServiceRefusals(t *testing.T) {
	st := openStore(t)
	sv := &ImageServer{Store: st}
	ctx := context.Background()

	unnamed := echoImage
	unnamed.Name = ""
	_, path := writeArchive(t, unnamed)
	_, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path})
	wantCode(t, "unnamed archive, no name", err, codes.InvalidArgument, "image name required", "give a name")
	if img, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path, Name: "acme/unnamed:2"}); err != nil || img.Names[0] != "acme/unnamed:2" {
		t.Fatalf("unnamed archive with a name: %v, %v", img, err)
	}

	hostile := testimage.Image{Name: "evil:1", Files: map[string]string{"../escape": "x"}}
	_, path = writeArchive(t, hostile)
	_, err = sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path})
	wantCode(t, "hostile archive", err, codes.InvalidArgument, "refused layer content")

	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	os.WriteFile(garbage, []byte(strings.Repeat("not a tar ", 200)), 0o644)
	_, err = sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: garbage})
	wantCode(t, "not an archive", err, codes.InvalidArgument)

	_, err = sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: "nope:1"})
	wantCode(t, "delete unknown", err, codes.NotFound, "image not found")

	none := &ImageServer{}
	_, err = none.ListImages(ctx, &emberv1.ListImagesRequest{})
	wantCode(t, "no store", err, codes.Unimplemented, "--runtime process")
}

func TestImageServiceDelete(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	b, path := writeArchive(t, echoImage)
	other := testimage.Image{Name: "acme/other:1", Files: map[string]string{"worker": "other"}, Entrypoint: []string{"/worker"}}
	ob, opath := writeArchive(t, other)

	eps := fakeEndpoints{
		{ID: "ep-1", Name: "echo", Image: "ghcr.io/acme/echo:1"},
		{ID: "ep-2", Name: "echo-too", Image: "ghcr.io/acme/echo:1"},
		{ID: "ep-3", Name: "", Image: "acme/other@" + ob.ManifestDigest},
		{ID: "ep-4", Name: "plain", Command: []string{"/bin/true"}},
	}
	sv := &ImageServer{Store: st}
	sv.InUse = imagesvc.EndpointsUsingImage(eps, st)
	for _, p := range []string{path, opath} {
		if _, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path, Name: "echo:spare"}); err != nil {
		t.Fatal(err)
	}

	// By name and by ID: both endpoints are named.
	for _, ref := range []string{"ghcr.io/acme/echo:1", b.ConfigDigest} {
		_, err := sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: ref})
		wantCode(t, "delete "+ref+" in use", err, codes.FailedPrecondition, "echo, echo-too", "delete them or change their image")
	}
	// An endpoint that names the image by digest holds it by ID (this
	// also proves InUse may call the store).
	_, err := sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: ob.ConfigDigest[7:19]})
	wantCode(t, "delete by ID prefix in use", err, codes.FailedPrecondition, "ep-3 (by digest or ID)")

	// A spare name goes without freeing anything: the image stays.
	resp, err := sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: "echo:spare"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.LayersRemoved != 0 {
		t.Errorf("removing a spare name freed %d layers", resp.LayersRemoved)
	}

	// Once no endpoint uses it, the image goes and its layer with it.
	layerDirs := dirEntries(t, filepath.Join(st.Dir(), "l"))
	sv.InUse = imagesvc.EndpointsUsingImage(eps[2:], st)
	resp, err = sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: "ghcr.io/acme/echo:1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.LayersRemoved != 1 || resp.BytesFreed <= 0 {
		t.Errorf("delete freed %d layers, %d bytes; want 1 layer and some bytes", resp.LayersRemoved, resp.BytesFreed)
	}
	if got := dirEntries(t, filepath.Join(st.Dir(), "l")); len(got) != len(layerDirs)-1 {
		t.Errorf("layer dirs %v -> %v, want one fewer", layerDirs, got)
	}
	if _, err := os.Stat(filepath.Join(st.Dir(), "blobs", "sha256", b.LayerDigest[7:])); !os.IsNotExist(err) {
		t.Errorf("layer blob still there: %v", err)
	}
	_, err = sv.GetImage(ctx, &emberv1.GetImageRequest{Ref: b.ConfigDigest})
	wantCode(t, "get deleted", err, codes.NotFound)
	if _, err := sv.GetImage(ctx, &emberv1.GetImageRequest{Ref: "acme/other:1"}); err != nil {
		t.Errorf("the other image went too: %v", err)
	}
}

// TestImageDeleteSharedID: images that differ only in their manifests
// (here the layer's compression) share their config, so their ID; an
// endpoint using one must not hold the other.
func TestImageDeleteSharedID(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	plain := echoImage
	plain.Gzip, plain.Name = false, "acme/plain:1"
	pb, ppath := writeArchive(t, plain)
	gb, gpath := writeArchive(t, echoImage)
	if pb.ConfigDigest != gb.ConfigDigest || pb.ManifestDigest == gb.ManifestDigest {
		t.Fatal("fixture: want one config, two manifests")
	}
	sv := &ImageServer{Store: st}
	sv.InUse = imagesvc.EndpointsUsingImage(fakeEndpoints{{ID: "ep-1", Name: "echo", Image: "ghcr.io/acme/echo:1"}}, st)
	for _, p := range []string{ppath, gpath} {
		if _, err := sv.ImportImage(ctx, &emberv1.ImportImageRequest{Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: pb.ConfigDigest})
	wantCode(t, "delete by shared ID", err, codes.InvalidArgument, "ambiguous")
	_, err = sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: gb.ManifestDigest})
	wantCode(t, "delete the used one by digest", err, codes.FailedPrecondition, "echo (as ghcr.io/acme/echo:1)")
	if _, err := sv.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: pb.ManifestDigest}); err != nil {
		t.Errorf("delete the unused one by digest: %v", err)
	}
	if _, err := sv.GetImage(ctx, &emberv1.GetImageRequest{Ref: "ghcr.io/acme/echo:1"}); err != nil {
		t.Errorf("the used image went: %v", err)
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestImageGateway checks the REST routes as emberd mounts them: refs with
// slashes and colons in the path, GET /v1/images reaching ListImages, and
// the HTTP statuses of the error codes.
func TestImageGateway(t *testing.T) {
	st := openStore(t)
	b, path := writeArchive(t, echoImage)
	sv := &ImageServer{Store: st, InUse: func(ref string) []string {
		if ref == "ghcr.io/acme/echo:1" {
			return []string{"echo"}
		}
		return nil
	}}
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
	}))
	if err := sv.RegisterGateway(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	call := func(method, p, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+p, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s %s: %v: %s", method, p, err, data)
		}
		return resp.StatusCode, m
	}

	code, m := call("GET", "/v1/images", "")
	if code != 200 || m["images"] == nil || len(m["images"].([]any)) != 0 {
		t.Fatalf("empty list: %d %v", code, m)
	}
	body, _ := json.Marshal(map[string]string{"path": path, "name": "acme/echo:latest"})
	code, m = call("POST", "/v1/images:import", string(body))
	if code != 200 || m["id"] != b.ConfigDigest || m["size"] == nil || m["config"].(map[string]any)["workingDir"] != "/srv" {
		t.Fatalf("import: %d %v", code, m)
	}
	if _, err := sv.ImportImage(context.Background(), &emberv1.ImportImageRequest{Path: path}); err != nil {
		t.Fatal(err)
	}
	code, m = call("GET", "/v1/images", "")
	if code != 200 || len(m["images"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, m)
	}
	for _, p := range []string{"/v1/images/ghcr.io/acme/echo:1", "/v1/images/ghcr.io%2Facme%2Fecho:1", "/v1/images/acme/echo", "/v1/images/" + b.ConfigDigest} {
		code, m = call("GET", p, "")
		if code != 200 || m["digest"] != b.ManifestDigest {
			t.Errorf("GET %s: %d %v", p, code, m)
		}
	}
	code, m = call("GET", "/v1/images/ghcr.io/acme/echo:9", "")
	if code != 404 || m["code"] != float64(codes.NotFound) {
		t.Errorf("GET unknown: %d %v", code, m)
	}
	code, m = call("DELETE", "/v1/images/ghcr.io/acme/echo:1", "")
	if code != 409 || m["code"] != float64(codes.FailedPrecondition) || !strings.Contains(m["message"].(string), "image ghcr.io/acme/echo:1 is in use by endpoint(s) echo:") {
		t.Errorf("DELETE in use: %d %v", code, m)
	}
	code, m = call("DELETE", "/v1/images/acme/echo:latest", "")
	if code != 200 || m["layersRemoved"] != float64(0) || m["bytesFreed"] != "0" {
		t.Errorf("DELETE spare name: %d %v", code, m)
	}
}

// TestImageGRPC goes through a real gRPC server: codes and messages reach
// the client as they are (the in-use error also carries an HTTP status for
// the gateway, which must not show).
func TestImageGRPC(t *testing.T) {
	st := openStore(t)
	_, path := writeArchive(t, echoImage)
	sv := &ImageServer{Store: st, InUse: imagesvc.EndpointsUsingImage(fakeEndpoints{{ID: "ep-1", Name: "echo", Image: "ghcr.io/acme/echo:1"}}, st)}
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	sv.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := emberv1.NewImageServiceClient(cc)
	ctx := context.Background()
	if _, err := c.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: "ghcr.io/acme/echo:1"})
	want := "image ghcr.io/acme/echo:1 is in use by endpoint(s) echo: delete them or change their image first"
	if status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != want {
		t.Errorf("DeleteImage in use: %v; want FailedPrecondition %q", err, want)
	}
	_, err = c.GetImage(ctx, &emberv1.GetImageRequest{Ref: "nope:1"})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != `image "nope:1": image not found` {
		t.Errorf("GetImage unknown: %v", err)
	}
}

// TestImagePull pulls from a registry on loopback through the REST route
// and checks the refusals' codes.
func TestImagePull(t *testing.T) {
	st := openStore(t)
	b, err := echoImage.Build()
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(b.Registry("acme/echo", "1"))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	sv := &ImageServer{Store: st}
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
	}))
	if err := sv.RegisterGateway(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	body, _ := json.Marshal(map[string]any{"ref": host + "/acme/echo:1", "plainHttp": true})
	resp, err := http.Post(srv.URL+"/v1/images:pull", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]any
	json.Unmarshal(data, &m)
	if resp.StatusCode != 200 || m["digest"] != b.ManifestDigest || m["id"] != b.ConfigDigest || m["names"].([]any)[0] != host+"/acme/echo:1" || m["created"] == nil {
		t.Fatalf("pull: %d %s", resp.StatusCode, data)
	}

	ctx := context.Background()
	_, err = sv.PullImage(ctx, &emberv1.PullImageRequest{})
	wantCode(t, "no ref", err, codes.InvalidArgument, "ref: is required")
	_, err = sv.PullImage(ctx, &emberv1.PullImageRequest{Ref: "acme/echo:1"})
	wantCode(t, "no host", err, codes.InvalidArgument, "names no registry")
	_, err = sv.PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo:2", PlainHttp: true})
	wantCode(t, "unknown tag", err, codes.NotFound, "MANIFEST_UNKNOWN")
	_, err = sv.PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo:1"})
	wantCode(t, "plain HTTP", err, codes.InvalidArgument, "--plain-http")
	img, err := sv.PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo@" + b.ManifestDigest, PlainHttp: true})
	if err != nil || img.GetDigest() != b.ManifestDigest {
		t.Fatalf("by digest: %v %v", img, err)
	}
	_, err = (&ImageServer{}).PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo:1"})
	wantCode(t, "no store", err, codes.Unimplemented)

	// The daemon's auth file reaches the pull.
	missing := filepath.Join(t.TempDir(), "registry-auth.json")
	_, err = (&ImageServer{Store: st, RegistryAuthFile: missing}).PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo:1", PlainHttp: true})
	wantCode(t, "auth file", err, codes.InvalidArgument, missing)
	// A registry that fails every attempt is UNAVAILABLE.
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	_, err = sv.PullImage(ctx, &emberv1.PullImageRequest{Ref: strings.TrimPrefix(busy.URL, "http://") + "/acme/echo:1", PlainHttp: true})
	wantCode(t, "registry down", err, codes.Unavailable, "failed after 4 attempts")
}
