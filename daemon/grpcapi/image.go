package grpcapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/imagesvc"
	"github.com/emberhq/ember/oci/image"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// ImageServer implements ImageService on an image store.
type ImageServer struct {
	emberv1.UnimplementedImageServiceServer
	// Store is the image store; nil (emberd runs with --runtime process)
	// answers every call UNIMPLEMENTED with imagesvc.NoImageStoreMessage.
	Store *image.Store
	// InUse returns the names of the endpoints that use ref, for
	// imagesvc.Remove (which says what ref is); none means ref may go.
	// DeleteImage refuses with FAILED_PRECONDITION naming those
	// endpoints. It is called outside the store's lock, so it may use the
	// Store (Inspect). nil: no image is ever in use.
	// imagesvc.EndpointsUsingImage builds one from the scheduler.
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

func (sv *ImageServer) store() (*image.Store, error) {
	if sv.Store == nil {
		return nil, status.Error(codes.Unimplemented, imagesvc.NoImageStoreMessage)
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
// ErrInUse and imagesvc.InUseError FAILED_PRECONDITION (HTTP 409 through
// the gateway), imagesvc.ErrChanged ABORTED, and the refusals of an archive's content
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
	case errors.Is(err, image.ErrInUse), errors.As(err, new(*imagesvc.InUseError)):
		return conflict(status.New(codes.FailedPrecondition, err.Error()))
	case errors.Is(err, imagesvc.ErrChanged):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, image.ErrNameRequired), errors.Is(err, image.ErrHostile),
		errors.Is(err, image.ErrTooLarge), errors.Is(err, image.ErrDigestMismatch):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, image.ErrRegistryUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case imagesvc.IsServerFault(err):
		return status.Error(codes.Internal, err.Error())
	}
	return status.Error(codes.InvalidArgument, err.Error())
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
	return imagesvc.Proto(st, img), nil
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
	return imagesvc.Proto(st, img), nil
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
	return imagesvc.Proto(st, img), nil
}

// ListImages implements ImageService.
func (sv *ImageServer) ListImages(ctx context.Context, _ *emberv1.ListImagesRequest) (*emberv1.ListImagesResponse, error) {
	st, err := sv.store()
	if err != nil {
		return nil, err
	}
	resp := &emberv1.ListImagesResponse{Images: []*emberv1.Image{}}
	for _, img := range st.List() {
		resp.Images = append(resp.Images, imagesvc.Proto(st, img))
	}
	return resp, nil
}

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
	if err := imagesvc.Remove(st, ref, sv.InUse); err != nil {
		return nil, ImageStatus(err)
	}
	stats, err := st.GC()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "image %s removed, but freeing its disk space failed: %v", ref, err)
	}
	return &emberv1.DeleteImageResponse{LayersRemoved: int32(stats.Layers), BytesFreed: stats.Bytes}, nil
}
