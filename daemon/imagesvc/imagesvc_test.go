package imagesvc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/emberhq/ember/daemon/internal/testimage"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/scheduler/store"
)

type fakeEndpoints []store.Endpoint

func (f fakeEndpoints) Endpoints() []store.Endpoint { return f }

// importImage imports img into st under its name and, when name is set,
// under name too.
func importImage(t *testing.T, st *image.Store, img testimage.Image, name string) *testimage.Built {
	t.Helper()
	b, err := img.Build()
	if err != nil {
		t.Fatal(err)
	}
	// An OCI layout directory, which the store imports like an archive.
	path := t.TempDir()
	if err := b.WriteLayout(path); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Import(context.Background(), path, image.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if name != "" {
		if _, err := st.Import(context.Background(), path, image.ImportOptions{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestRemove: an image in use under any of its names, or as itself, stays
// and the refusal names its users; one in use by nobody goes.
func TestRemove(t *testing.T) {
	st, err := image.Open(filepath.Join(t.TempDir(), "images"), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	echo := importImage(t, st, testimage.Image{Name: "ghcr.io/acme/echo:1", Files: map[string]string{"worker": "echo"}, Entrypoint: []string{"/worker"}}, "echo:spare")
	other := importImage(t, st, testimage.Image{Name: "acme/other:1", Files: map[string]string{"worker": "other"}, Entrypoint: []string{"/worker"}}, "")
	eps := fakeEndpoints{
		{ID: "ep-1", Name: "echo", Image: "ghcr.io/acme/echo:1"},
		{ID: "ep-2", Name: "echo-too", Image: "ghcr.io/acme/echo:1"},
		{ID: "ep-3", Image: "acme/other@" + other.ManifestDigest},
		{ID: "ep-4", Name: "plain", Command: []string{"/bin/true"}},
	}
	inUse := EndpointsUsingImage(eps, st)
	for _, tt := range []struct {
		ref  string
		want string // the refusal; "" when removed
	}{
		{"ghcr.io/acme/echo:1", "image ghcr.io/acme/echo:1 is in use by endpoint(s) echo, echo-too: delete them or change their image first"},
		{echo.ConfigDigest, "image " + echo.ConfigDigest + " is in use by endpoint(s) echo, echo-too (as ghcr.io/acme/echo:1): delete them or change their image first"},
		{other.ConfigDigest[7:19], "image " + other.ConfigDigest[7:19] + " is in use by endpoint(s) ep-3 (by digest or ID): delete them or change their image first"},
		{"echo:spare", ""},
	} {
		err := Remove(st, tt.ref, inUse)
		var iu *InUseError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Remove(%s): %v; want it removed", tt.ref, err)
		case tt.want != "" && (!errors.As(err, &iu) || err.Error() != tt.want):
			t.Errorf("Remove(%s): %v; want %q", tt.ref, err, tt.want)
		}
	}
	if _, err := st.Inspect("echo:spare"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("echo:spare after its removal: %v", err)
	}
	// Nobody uses it now: it goes, and a second removal finds nothing.
	if err := Remove(st, "ghcr.io/acme/echo:1", EndpointsUsingImage(eps[2:], st)); err != nil {
		t.Errorf("Remove of an unused image: %v", err)
	}
	if err := Remove(st, "ghcr.io/acme/echo:1", nil); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Remove of a removed image: %v; want ErrNotFound", err)
	}
}

func TestEndpointsUsingImage(t *testing.T) {
	eps := fakeEndpoints{
		{ID: "ep-1", Name: "a", Image: "ubuntu"},
		{ID: "ep-2", Image: "docker.io/library/ubuntu:latest"},
		{ID: "ep-3", Name: "c", Image: "ubuntu:22.04"},
		{ID: "ep-4", Name: "d"},
	}
	inUse := EndpointsUsingImage(eps, nil)
	for _, tt := range []struct {
		ref  string
		want []string
	}{
		{"ubuntu:latest", []string{"a", "ep-2"}},
		{"ubuntu:22.04", []string{"c"}},
		{"debian:latest", nil},
		{"sha256:" + fmt.Sprintf("%064x", 1), nil}, // no store to resolve by
	} {
		if got := inUse(tt.ref); !slices.Equal(got, tt.want) {
			t.Errorf("in use %s: %v; want %v", tt.ref, got, tt.want)
		}
	}
}

func TestIsServerFault(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("import: %w", syscall.EIO), true},
		{syscall.ENOENT, false},
		{image.ErrHostile, false},
		{errors.New("corrupt archive"), false},
	} {
		if got := IsServerFault(tt.err); got != tt.want {
			t.Errorf("IsServerFault(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}
