package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/emberhq/ember/scheduler/limits"
)

// bufferedBody is a request body already read by limitBody; readBody hands
// its bytes out without copying them again.
type bufferedBody struct {
	*bytes.Reader
	b []byte
}

func (*bufferedBody) Close() error { return nil }

// errBodyTooLarge is readLimited's answer for a body over its limit.
var errBodyTooLarge = errors.New("request body too large")

// readLimited reads r's body up to limit bytes. A longer body is read on
// and thrown away up to limits.DrainBound(limit), unless its Content-Length
// already says it is longer than that or the client waits for "100
// Continue" (then it has sent nothing, and sends nothing, if told no at
// once); when its end was not reached, the answer carries "Connection:
// close" and net/http closes the connection after it. Over the limit the
// error is errBodyTooLarge and n is the body's size when known, else -1.
func readLimited(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, n int64, err error) {
	if bb, ok := r.Body.(*bufferedBody); ok {
		if int64(len(bb.b)) > limit {
			return nil, int64(len(bb.b)), errBodyTooLarge
		}
		return bb.b, int64(len(bb.b)), nil
	}
	bound := limits.DrainBound(limit)
	cl := r.ContentLength
	if cl > limit {
		if cl <= bound && !expectsContinue(r) {
			if _, err := io.CopyN(io.Discard, r.Body, cl); err != nil {
				w.Header().Set("Connection", "close")
			}
		} else {
			w.Header().Set("Connection", "close")
		}
		return nil, cl, errBodyTooLarge
	}
	var buf bytes.Buffer
	if cl > 0 {
		buf.Grow(int(cl))
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1)); err != nil {
		return nil, 0, err
	}
	if int64(buf.Len()) <= limit {
		return buf.Bytes(), int64(buf.Len()), nil
	}
	// A chunked body over the limit: drain what the bound allows.
	extra, err := io.CopyN(io.Discard, r.Body, bound-limit)
	if err != io.EOF {
		w.Header().Set("Connection", "close")
		return nil, -1, errBodyTooLarge
	}
	return nil, limit + 1 + extra, errBodyTooLarge
}

// expectsContinue reports a request whose client waits for "100 Continue"
// before it sends the body (curl does above 1 MB).
func expectsContinue(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Expect"), "100-continue")
}

// limitBody reads the body of the request to rt (up to rt.limit) and puts
// it back as a bufferedBody, so that whatever serves the route (the /v1
// gateway too) reads it from memory and never past the limit. Over the
// limit it answers 413 with the route and the limit and returns false; a
// body it cannot read is a 400.
func limitBody(w http.ResponseWriter, r *http.Request, rt route) bool {
	if rt.streamed || r.Body == nil || r.Body == http.NoBody {
		return true
	}
	if _, ok := r.Body.(*bufferedBody); ok {
		return true
	}
	b, n, err := readLimited(w, r, rt.limit)
	switch {
	case errors.Is(err, errBodyTooLarge) && rt.runpodREST:
		writeRPError(w, &rpTooLarge{rpError: rpError{Code: http.StatusRequestEntityTooLarge, Message: tooLargeMessage(rt.name, rt.limit, n)}, limit: rt.limit})
		return false
	case errors.Is(err, errBodyTooLarge):
		writeTooLarge(w, rt.name, rt.limit, n)
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return false
	}
	r.Body = &bufferedBody{Reader: bytes.NewReader(b), b: b}
	return true
}

// writeTooLarge answers 413: {"error": "...", "limitBytes": N}. size is the
// body's size when known, else -1.
func writeTooLarge(w http.ResponseWriter, name string, limit, size int64) {
	writeJSONStatus(w, http.StatusRequestEntityTooLarge, struct {
		Error      string `json:"error"`
		LimitBytes int64  `json:"limitBytes"`
	}{tooLargeMessage(name, limit, size), limit})
}

// tooLargeMessage says which limit a body broke: "request body of 10485761
// bytes is over the 10 MiB (10485760 bytes) limit of POST
// /v2/{endpoint}/run".
func tooLargeMessage(name string, limit, size int64) string {
	what := "request body"
	if size > 0 {
		what = fmt.Sprintf("request body of %d bytes", size)
	}
	msg := fmt.Sprintf("%s is over the %s (%d bytes) limit", what, formatBytes(limit), limit)
	if name != "" {
		msg += " of " + name
	}
	return msg
}
