package httpapi

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/imagesvc"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/scheduler/diskguard"
)

// uploadLabel replaces the temporary file's path in the store's messages,
// which would mean nothing to the client.
const uploadLabel = "uploaded archive"

// serveImageUpload is POST /v1/images:upload?name=NAME: the body is an
// image archive (a `docker save` tarball or an OCI archive, possibly
// compressed with gzip or zstd; with a Content-Length or chunked) that is
// streamed to a file in the store's tmp/, imported, and
// removed. The answer is the imported image, in the same JSON as the
// gateway's Image; errors are {"error": "..."} with 400 (the archive is
// refused or unreadable), 404 (no image store), 409 (in use), 413 (over the
// upload limit, or unpacking to more than the store allows).
func (h *Server) serveImageUpload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST with the image archive as the request body")
		return
	}
	st := h.cfg.Images
	if st == nil {
		writeError(w, http.StatusNotFound, imagesvc.NoImageStoreMessage)
		return
	}
	if h.cfg.Scheduler != nil {
		// An unpacked image takes at least its archive's size.
		if err := h.cfg.Scheduler.DiskGuard().Check(diskguard.NewWork, max(r.ContentLength, 0)); err != nil {
			writeSchedErr(w, err)
			return
		}
	}
	limit := h.cfg.MaxUploadBytes
	if limit <= 0 {
		limit = image.DefaultMaxImageBytes
	}
	tooBig := fmt.Sprintf("image archive is larger than the upload limit of %s (%d bytes)", formatBytes(limit), limit)
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, tooBig)
		return
	}
	name := r.URL.Query().Get("name")
	start := time.Now()

	// The file lives in the store's tmp/ so that it is on the store's
	// filesystem and a crash leaves nothing behind (Open empties tmp/).
	f, err := os.CreateTemp(filepath.Join(st.Dir(), "tmp"), "upload-*")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "storing the upload: "+err.Error())
		return
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	n, err := io.Copy(&diskWriter{f}, io.LimitReader(r.Body, limit+1))
	var de *diskError
	switch {
	case errors.As(err, &de):
		writeError(w, http.StatusInternalServerError, "storing the upload: "+de.err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the upload: "+err.Error())
		return
	case n > limit:
		writeError(w, http.StatusRequestEntityTooLarge, tooBig)
		return
	case n == 0:
		writeError(w, http.StatusBadRequest, "empty upload: send the image archive (docker save or OCI archive) as the request body")
		return
	}

	// A GC (image delete) empties tmp/ and may unlink the file while it is
	// still being written or imported; the import reads it through this
	// descriptor, which keeps the content reachable whatever happens to
	// its name.
	src := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	img, err := st.Import(r.Context(), src, image.ImportOptions{Name: name})
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), src, uploadLabel)
		msg = strings.ReplaceAll(msg, f.Name(), uploadLabel)
		h.log.Warn("image upload refused", "name", name, "bytes", n, "err", msg)
		audit.Record(r.Context(), h.log, audit.ImageImport, cmp.Or(name, uploadLabel), errors.New(msg), slog.String("source", "upload"))
		writeError(w, uploadStatus(err), msg)
		return
	}
	audit.Record(r.Context(), h.log, audit.ImageImport, imageObject(name, img), nil, slog.String("source", "upload"),
		slog.String("image_id", img.ID), slog.String("digest", img.Digest))
	h.log.Info("image imported", "names", img.Names, "id", img.ID, "upload_bytes", n, "size", img.Size, "duration", time.Since(start).Round(time.Millisecond))
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(imagesvc.Proto(st, img))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// uploadStatus maps an import's failure to an HTTP status.
func uploadStatus(err error) int {
	switch {
	case errors.Is(err, image.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, image.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, image.ErrInUse):
		return http.StatusConflict
	case imagesvc.IsServerFault(err):
		return http.StatusInternalServerError
	}
	// ErrNameRequired, ErrHostile, ErrDigestMismatch, and archives that
	// are corrupt, truncated or not image archives at all.
	return http.StatusBadRequest
}

// diskWriter tells the upload's write errors (the daemon's disk) from its
// read errors (the client's body).
type diskWriter struct{ f *os.File }

type diskError struct{ err error }

func (e *diskError) Error() string { return e.err.Error() }
func (e *diskError) Unwrap() error { return e.err }

func (d *diskWriter) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	if err != nil {
		err = &diskError{err}
	}
	return n, err
}

// formatBytes prints a size in binary units ("64 GiB", "1.5 MiB").
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTPE"[exp]) + "iB"
}

// imageObject names an image in the audit trail: the name the upload gave
// it, else its first name, else its manifest digest.
func imageObject(name string, img image.Image) string {
	if name != "" {
		return name
	}
	if len(img.Names) > 0 {
		return img.Names[0]
	}
	return img.Digest
}
