package grpcapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/emberhq/ember/scheduler"
)

// storageReason is the ErrorInfo reason of a refusal for a full disk.
const storageReason = "INSUFFICIENT_STORAGE"

// storageStatus is a full-disk refusal as a gRPC status: ResourceExhausted,
// with the free and needed bytes in an ErrorInfo detail (metadata
// "freeBytes" and "neededBytes", decimal).
func storageStatus(err error, se *scheduler.InsufficientStorageError) error {
	st := status.New(codes.ResourceExhausted, err.Error())
	withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{
		Reason: storageReason,
		Domain: "ember",
		Metadata: map[string]string{
			"freeBytes":   strconv.FormatUint(se.Free, 10),
			"neededBytes": strconv.FormatUint(se.Needed, 10),
		},
	})
	if derr != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// GatewayErrorHandler is the /v1 gateway's error handler: the gateway's
// own, except that a full-disk refusal is HTTP 507 Insufficient Storage
// instead of the 429 that ResourceExhausted otherwise maps to. The body
// keeps the gateway's shape ({"code","message","details"}), whose
// ErrorInfo detail names the free and needed bytes.
func GatewayErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if isStorageStatus(err) {
		w = &statusRewriter{ResponseWriter: w, code: http.StatusInsufficientStorage}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

func isStorageStatus(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == storageReason {
			return true
		}
	}
	return false
}

// statusRewriter replaces the status code the gateway writes.
type statusRewriter struct {
	http.ResponseWriter
	code int
}

func (s *statusRewriter) WriteHeader(int) { s.ResponseWriter.WriteHeader(s.code) }

func (s *statusRewriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// asStorage finds a full-disk refusal in err.
func asStorage(err error) (*scheduler.InsufficientStorageError, bool) {
	var se *scheduler.InsufficientStorageError
	return se, errors.As(err, &se)
}
