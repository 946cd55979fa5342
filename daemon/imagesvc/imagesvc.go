// Package imagesvc holds the rules about images that every transport of
// emberd shares: which endpoints use an image (EndpointsUsingImage), that
// an image in use is not removed (Remove, with its retry when the image
// changes underneath), which store failures are the daemon's own
// (IsServerFault), and the API view of an image (Proto), so that the REST
// upload answers in the gateway's JSON.
//
// The gRPC ImageService (daemon/grpcapi) and the REST upload
// (daemon/httpapi) call it and map its errors to their codes. It imports
// the image store (oci/image), the scheduler's endpoint records and the API
// types (proto/ember/v1); it must not import the transports.
package imagesvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/store"
)

// NoImageStoreMessage is the message of every image call when emberd has no
// image store.
const NoImageStoreMessage = "image store not enabled: emberd runs with --runtime process"

// Endpointer lists endpoints (the scheduler does).
type Endpointer interface {
	Endpoints() []store.Endpoint
}

// EndpointsUsingImage returns an InUse func (see Remove) that reports the
// endpoints whose image is ref: those whose image reference normalizes to
// the name ref, and, when ref is a manifest digest, those whose image
// reference resolves in st to that image (by name, digest or ID). Endpoints
// are named by name, or by ID when they have none.
func EndpointsUsingImage(eps Endpointer, st *image.Store) func(ref string) []string {
	return func(ref string) []string {
		var users []string
		for _, e := range eps.Endpoints() {
			if e.Image == "" {
				continue
			}
			uses := false
			if canon, err := image.NormalizeRef(e.Image); err == nil && canon == ref {
				uses = true
			} else if strings.HasPrefix(ref, "sha256:") && st != nil {
				if img, err := st.Inspect(e.Image); err == nil && img.Digest == ref {
					uses = true
				}
			}
			if uses {
				label := e.Name
				if label == "" {
					label = e.ID
				}
				users = append(users, label)
			}
		}
		return users
	}
}

// InUseError is Remove's refusal of an image that endpoints use.
type InUseError struct {
	// Ref is the reference asked to be removed.
	Ref string
	// Endpoints name the endpoints that use it.
	Endpoints []string
	// As says under which reference they use it, when not Ref itself:
	// " (by digest or ID)" or " (as NAME)"; empty otherwise.
	As string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("image %s is in use by endpoint(s) %s%s: delete them or change their image first",
		e.Ref, strings.Join(e.Endpoints, ", "), e.As)
}

// ErrChanged is Remove's error (wrapped, naming the image) when the image
// kept changing while it was checked (a concurrent import renamed it):
// the caller may try again.
var ErrChanged = errors.New("changed while being deleted (a concurrent import?); try again")

// removeAttempts bounds how often Remove retries a Store.Remove that asked
// about a reference it had not checked (a concurrent import renamed the
// image in between).
const removeAttempts = 3

// Remove removes the image ref from st unless an endpoint uses it under
// any of its names or as itself: inUse(r) names the endpoints using r, an
// image's canonical name ("ubuntu:latest", see image.NormalizeRef) or, for
// the image itself, its manifest digest ("sha256:<hex>"; not its ID, which
// images that differ only in their manifests share). A nil inUse finds
// nothing in use. inUse's answers are gathered beforehand: Store.Remove
// asks while it holds the store's lock, where inUse could not use the
// store (Inspect) without deadlocking.
//
// Errors: *InUseError, ErrChanged (wrapped), or the store's own.
func Remove(st *image.Store, ref string, inUse func(ref string) []string) error {
	if inUse == nil {
		return st.Remove(ref, nil)
	}
	for range removeAttempts {
		img, err := st.Inspect(ref)
		if err != nil {
			return err
		}
		refs := slices.Clone(img.Names)
		if canon, err := image.NormalizeRef(ref); err == nil {
			refs = append(refs, canon)
		}
		users := make(map[string][]string, len(refs))
		for _, r := range refs {
			if _, done := users[r]; !done {
				users[r] = inUse(r)
			}
		}
		// The store asks about the image itself by ID; inUse is asked by
		// manifest digest, which tells apart images sharing their config.
		users[img.ID] = inUse(img.Digest)
		var busy string
		unchecked := false
		err = st.Remove(ref, func(r string) bool {
			u, ok := users[r]
			switch {
			case !ok:
				unchecked = true
				return true
			case len(u) > 0:
				busy = r
				return true
			}
			return false
		})
		switch {
		case unchecked:
			continue
		case busy != "":
			as := ""
			if canon, _ := image.NormalizeRef(ref); busy == img.ID {
				as = " (by digest or ID)"
			} else if busy != ref && busy != canon {
				as = " (as " + busy + ")"
			}
			return &InUseError{Ref: ref, Endpoints: users[busy], As: as}
		}
		return err
	}
	return fmt.Errorf("image %s %w", ref, ErrChanged)
}

// IsServerFault reports whether an image store error is the daemon's
// machine failing (disk full, I/O error, read-only or exhausted resources)
// rather than the request or its archive being wrong.
func IsServerFault(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, syscall.ENOMEM,
		syscall.EMFILE, syscall.ENFILE, syscall.EPERM, syscall.EXDEV, syscall.ESTALE:
		return true
	}
	return false
}

// Proto converts an image to its API form. The build time comes from
// the image's config blob, which the store keeps verified under
// Dir()/blobs/sha256; it is left unset if the config does not say.
func Proto(st *image.Store, img image.Image) *emberv1.Image {
	p := &emberv1.Image{
		Id:     img.ID,
		Names:  append([]string{}, img.Names...),
		Digest: img.Digest,
		Size:   img.Size,
		Layers: make([]string, 0, len(img.Layers)),
		Config: &emberv1.ImageConfig{
			Entrypoint: append([]string{}, img.Config.Entrypoint...),
			Cmd:        append([]string{}, img.Config.Cmd...),
			Env:        append([]string{}, img.Config.Env...),
			WorkingDir: img.Config.WorkingDir,
			User:       img.Config.User,
		},
	}
	for _, l := range img.Layers {
		p.Layers = append(p.Layers, l.DiffID)
	}
	if !img.Imported.IsZero() {
		p.Imported = timestamppb.New(img.Imported)
	}
	if st != nil {
		if t, ok := configCreated(st.Dir(), img.ID); ok {
			p.Created = timestamppb.New(t)
		}
	}
	return p
}

// maxConfigBytes bounds how much of a config blob configCreated reads;
// the store caps JSON documents well below this on import.
const maxConfigBytes = 16 << 20

// configCreated reads the "created" time of the image config with digest
// id from the store's blobs.
func configCreated(dir, id string) (time.Time, bool) {
	hex, ok := strings.CutPrefix(id, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return time.Time{}, false
	}
	f, err := os.Open(filepath.Join(dir, "blobs", "sha256", hex))
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	var cfg struct {
		Created *time.Time `json:"created"`
	}
	if err := json.NewDecoder(io.LimitReader(f, maxConfigBytes)).Decode(&cfg); err != nil || cfg.Created == nil || cfg.Created.IsZero() {
		return time.Time{}, false
	}
	return *cfg.Created, true
}
