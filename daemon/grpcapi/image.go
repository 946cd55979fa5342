package grpcapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/store"
)

// NoImageStoreMessage is the message of every image call when emberd has no
// image store.
const NoImageStoreMessage = "image store not enabled: emberd runs with --runtime process"

// ImageServer implements ImageService on an image store.
type ImageServer struct {
	emberv1.UnimplementedImageServiceServer
	// Store is the image store; nil (emberd runs with --runtime process)
	// answers every call UNIMPLEMENTED with NoImageStoreMessage.
	Store *image.Store
	// InUse returns the names of the endpoints that use ref: an image's
	// canonical name ("ubuntu:latest", see image.NormalizeRef), or, for
	// the image itself, its manifest digest ("sha256:<hex>"; not its ID,
	// which images that differ only in their manifests share). None means
	// ref may go. DeleteImage refuses with FAILED_PRECONDITION naming those
	// endpoints. It is called outside the store's lock, so it may use the
	// Store (Inspect). nil: no image is ever in use. EndpointsUsingImage
	// builds one from the scheduler.
	InUse func(ref string) []string
	// DiskCheck, if set, refuses an import or pull of about size bytes
	// when the data disk is too full (the scheduler's disk guard, for new work):
	// a full disk is RESOURCE_EXHAUSTED, 507 on /v1.
	DiskCheck func(size int64) error
	// Log receives the audit trail of imports, pulls and removals
	// (daemon/audit), and the retries of pulls; nil: slog.Default().
	Log *slog.Logger
	// RegistryCertsDir and RegistryAuthFile are PullOptions.CertsDir and
	// AuthFile for every pull (emberd --registry-certs-dir,
	// --registry-auth-file).
	RegistryCertsDir, RegistryAuthFile string
}

// auditImage records an image action: object is the image's first name
// (else its manifest digest) once it is known, else ref as asked for.
func (sv *ImageServer) auditImage(ctx context.Context, action, ref string, img *emberv1.Image, err error, attrs ...slog.Attr) {
	object := ref
	if img != nil {
		if len(img.GetNames()) > 0 {
			object = img.GetNames()[0]
		} else if img.GetDigest() != "" {
			object = img.GetDigest()
		}
		attrs = append(attrs, slog.String("image_id", img.GetId()), slog.String("digest", img.GetDigest()))
	}
	audit.Record(ctx, sv.Log, action, object, err, attrs...)
}

// checkDisk applies DiskCheck.
func (sv *ImageServer) checkDisk(size int64) error {
	if sv.DiskCheck == nil {
		return nil
	}
	if err := sv.DiskCheck(size); err != nil {
		return toStatus(err)
	}
	return nil
}

// Register adds ImageService to a gRPC server.
func (sv *ImageServer) Register(g *grpc.Server) {
	emberv1.RegisterImageServiceServer(g, sv)
}

// RegisterGateway serves ImageService's REST routes (/v1/images...) on the
// gateway mux, calling the server in-process.
func (sv *ImageServer) RegisterGateway(ctx context.Context, mux *runtime.ServeMux) error {
	return emberv1.RegisterImageServiceHandlerServer(ctx, mux, sv)
}

// Endpointer lists endpoints (the scheduler does).
type Endpointer interface {
	Endpoints() []store.Endpoint
}

// EndpointsUsingImage returns an ImageServer.InUse that reports the
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

func (sv *ImageServer) store() (*image.Store, error) {
	if sv.Store == nil {
		return nil, status.Error(codes.Unimplemented, NoImageStoreMessage)
	}
	return sv.Store, nil
}

// conflictError is st (FAILED_PRECONDITION) over gRPC and HTTP 409
// Conflict through the REST gateway, which would answer 400 for
// FAILED_PRECONDITION: the gateway looks for a *runtime.HTTPStatusError in
// the chain, gRPC takes GRPCStatus as it is.
type conflictError struct {
	st   *status.Status
	http *runtime.HTTPStatusError
}

func conflict(st *status.Status) error {
	return &conflictError{st: st, http: &runtime.HTTPStatusError{HTTPStatus: http.StatusConflict, Err: st.Err()}}
}

func (e *conflictError) Error() string              { return e.st.Err().Error() }
func (e *conflictError) GRPCStatus() *status.Status { return e.st }
func (e *conflictError) Unwrap() error              { return e.http }

// ImageStatus maps image store errors to gRPC codes: ErrNotFound NOT_FOUND,
// ErrInUse FAILED_PRECONDITION (HTTP 409 through the gateway), and the refusals of an archive's content
// (ErrNameRequired, ErrHostile, ErrTooLarge, ErrDigestMismatch)
// INVALID_ARGUMENT, with the store's message. Other failures are
// INVALID_ARGUMENT too (a corrupt or truncated archive, an ambiguous ID
// prefix), except the machine's own trouble (disk full, I/O errors):
// INTERNAL. A registry that failed a pull's request on every attempt
// (ErrRegistryUnavailable) is UNAVAILABLE (HTTP 503).
func ImageStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, image.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, image.ErrInUse):
		return conflict(status.New(codes.FailedPrecondition, err.Error()))
	case errors.Is(err, image.ErrNameRequired), errors.Is(err, image.ErrHostile),
		errors.Is(err, image.ErrTooLarge), errors.Is(err, image.ErrDigestMismatch):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, image.ErrRegistryUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case IsServerFault(err):
		return status.Error(codes.Internal, err.Error())
	}
	return status.Error(codes.InvalidArgument, err.Error())
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

// ImportImage implements ImageService.
func (sv *ImageServer) ImportImage(ctx context.Context, req *emberv1.ImportImageRequest) (out *emberv1.Image, err error) {
	defer func() {
		sv.auditImage(ctx, audit.ImageImport, cmp.Or(req.GetName(), req.GetPath()), out, err, slog.String("source", "path"), slog.String("path", req.GetPath()))
	}()
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	path := req.GetPath()
	if path == "" {
		return nil, status.Error(codes.InvalidArgument, "path: is required (a docker-save tarball, OCI archive or OCI layout directory on the daemon's machine)")
	}
	if !filepath.IsAbs(path) {
		return nil, status.Errorf(codes.InvalidArgument, "path: %q must be absolute: it names a file on the daemon's machine", path)
	}
	var size int64
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		size = fi.Size() // unpacked, an image takes at least its archive's size
	}
	if err := sv.checkDisk(size); err != nil {
		return nil, err
	}
	img, err := st.Import(ctx, path, image.ImportOptions{Name: req.GetName()})
	if err != nil {
		return nil, ImageStatus(err)
	}
	return ImageProto(st, img), nil
}

// PullImage implements ImageService: Store.Pull, errors mapped by
// ImageStatus (an unknown repository or tag is NOT_FOUND).
func (sv *ImageServer) PullImage(ctx context.Context, req *emberv1.PullImageRequest) (out *emberv1.Image, err error) {
	// The registry password is never logged.
	defer func() { sv.auditImage(ctx, audit.ImagePull, req.GetRef(), out, err, slog.String("ref", req.GetRef())) }()
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	if req.GetRef() == "" {
		return nil, status.Error(codes.InvalidArgument, "ref: is required (host[:port]/repository[:tag|@digest])")
	}
	if err := sv.checkDisk(0); err != nil {
		return nil, err
	}
	img, err := st.Pull(ctx, req.GetRef(), image.PullOptions{
		PlainHTTP: req.GetPlainHttp(),
		Username:  req.GetUsername(),
		Password:  req.GetPassword(),
		CertsDir:  sv.RegistryCertsDir,
		AuthFile:  sv.RegistryAuthFile,
		Log:       sv.Log,
	})
	if err != nil {
		return nil, ImageStatus(err)
	}
	return ImageProto(st, img), nil
}

// GetImage implements ImageService.
func (sv *ImageServer) GetImage(ctx context.Context, req *emberv1.GetImageRequest) (*emberv1.Image, error) {
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	if req.GetRef() == "" {
		return nil, status.Error(codes.InvalidArgument, "ref: is required")
	}
	img, err := st.Inspect(req.GetRef())
	if err != nil {
		return nil, ImageStatus(err)
	}
	return ImageProto(st, img), nil
}

// ListImages implements ImageService.
func (sv *ImageServer) ListImages(ctx context.Context, _ *emberv1.ListImagesRequest) (*emberv1.ListImagesResponse, error) {
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	resp := &emberv1.ListImagesResponse{Images: []*emberv1.Image{}}
	for _, img := range st.List() {
		resp.Images = append(resp.Images, ImageProto(st, img))
	}
	return resp, nil
}

// removeAttempts bounds how often DeleteImage retries a Remove that asked
// about a reference it had not checked (a concurrent import renamed the
// image in between).
const removeAttempts = 3

// DeleteImage implements ImageService: Remove, then GC. GC waits for an
// import in progress to finish.
func (sv *ImageServer) DeleteImage(ctx context.Context, req *emberv1.DeleteImageRequest) (out *emberv1.DeleteImageResponse, err error) {
	defer func() {
		sv.auditImage(ctx, audit.ImageRemove, req.GetRef(), nil, err, slog.Int("layers_removed", int(out.GetLayersRemoved())), slog.Int64("bytes_freed", out.GetBytesFreed()))
	}()
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	ref := req.GetRef()
	if ref == "" {
		return nil, status.Error(codes.InvalidArgument, "ref: is required")
	}
	if err := sv.remove(st, ref); err != nil {
		return nil, err
	}
	stats, err := st.GC()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "image %s removed, but freeing its disk space failed: %v", ref, err)
	}
	return &emberv1.DeleteImageResponse{LayersRemoved: int32(stats.Layers), BytesFreed: stats.Bytes}, nil
}

// remove runs Store.Remove with InUse's answers gathered beforehand: Remove
// asks while it holds the store's lock, where InUse could not use the store
// without deadlocking.
func (sv *ImageServer) remove(st *image.Store, ref string) error {
	if sv.InUse == nil {
		return ImageStatus(st.Remove(ref, nil))
	}
	for range removeAttempts {
		img, err := st.Inspect(ref)
		if err != nil {
			return ImageStatus(err)
		}
		refs := slices.Clone(img.Names)
		if canon, err := image.NormalizeRef(ref); err == nil {
			refs = append(refs, canon)
		}
		users := make(map[string][]string, len(refs))
		for _, r := range refs {
			if _, done := users[r]; !done {
				users[r] = sv.InUse(r)
			}
		}
		// The store asks about the image itself by ID; InUse is asked by
		// manifest digest, which tells apart images sharing their config.
		users[img.ID] = sv.InUse(img.Digest)
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
			return conflict(status.Newf(codes.FailedPrecondition,
				"image %s is in use by endpoint(s) %s%s: delete them or change their image first",
				ref, strings.Join(users[busy], ", "), as))
		}
		return ImageStatus(err)
	}
	return status.Errorf(codes.Aborted, "image %s changed while being deleted (a concurrent import?); try again", ref)
}

// ImageProto converts an image to its API form. The build time comes from
// the image's config blob, which the store keeps verified under
// Dir()/blobs/sha256; it is left unset if the config does not say.
func ImageProto(st *image.Store, img image.Image) *emberv1.Image {
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
