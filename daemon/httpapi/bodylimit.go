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

// route is what the HTTP surface knows of a request before serving it: its
// body limit (scheduler/limits, the one table for every transport) and how
// long it may legitimately take (deadlines.go).
type route struct {
	// name is the route in messages: "POST /v2/{endpoint}/run".
	name string
	// limit caps the body. Routes with a limit above limits.SmallBody read
	// their body after their key is checked (an unauthenticated client
	// cannot make emberd buffer megabytes); the rest are read up front.
	limit int64
	// streamed marks the image upload: its body goes to disk under its own
	// limit (Config.MaxUploadBytes) and is never buffered.
	streamed bool
	// hold is how long the handler may wait before it answers (long-polls),
	// pushed onto the connection's deadlines; holdForever clears them.
	hold holdKind
}

// classify names the route of a request and gives its body limit and hold.
// It follows ServeHTTP's dispatch; a path that matches nothing gets the
// small limit (it is answered 404 without its body being used).
func classify(method string, segs []string) route {
	small := route{limit: limits.SmallBody}
	n := len(segs)
	switch {
	case n == 0:
		return small
	case segs[0] == "v2" && n >= 3:
		op := segs[2]
		if _, ok := workerOps[op]; ok {
			switch workerOps[op] {
			case opDone:
				return route{name: method + " /v2/{endpoint}/job-done", limit: limits.ResultBody}
			case opStream:
				return route{name: method + " /v2/{endpoint}/job-stream", limit: limits.ChunkBody}
			case opTake, opTakeBatch, opStop:
				return route{name: method + " /v2/{endpoint}/" + op, limit: limits.SmallBody, hold: holdWorkerPoll}
			}
			return route{name: method + " /v2/{endpoint}/" + op, limit: limits.SmallBody}
		}
		switch op {
		case "run":
			return route{name: method + " /v2/{endpoint}/run", limit: limits.RunBody}
		case "runsync":
			return route{name: method + " /v2/{endpoint}/runsync", limit: limits.RunSyncBody, hold: holdWait}
		case "status-sync", "stream", "purge-queue":
			return route{name: method + " /v2/{endpoint}/" + op, limit: limits.SmallBody, hold: holdWait}
		case "openai":
			// Held until the job ends, or streamed as it runs.
			return route{name: method + " /v2/{endpoint}/openai", limit: limits.RunBody, hold: holdForever}
		}
		return route{name: method + " /v2/{endpoint}/" + op, limit: limits.SmallBody}
	case segs[0] != "v1" || n < 2:
		return small
	case segs[1] == "keys":
		return route{name: method + " /v1/keys", limit: limits.KeyBody}
	case segs[1] == "images:upload":
		return route{name: method + " /v1/images:upload", streamed: true, hold: holdForever}
	case segs[1] == "images:import" || segs[1] == "images:pull":
		// An import or a pull of many gigabytes takes minutes.
		return route{name: method + " /v1/" + segs[1], limit: limits.SmallBody, hold: holdForever}
	case segs[1] == "workers":
		if n == 4 && segs[3] == "logs" {
			// logs?follow=1 streams until the client goes away.
			return route{name: method + " /v1/workers/{id}/logs", limit: limits.SmallBody, hold: holdForever}
		}
		// :stop waits for the worker to drain.
		return route{name: method + " /v1/workers", limit: limits.SmallBody, hold: holdWait}
	case segs[1] == "endpoints" && (n == 2 || n == 3) && (method == http.MethodPost || method == http.MethodPatch):
		return route{name: method + " /v1/endpoints", limit: limits.EndpointBody}
	case segs[1] == "endpoints" && n == 4 && segs[3] == "jobs" && method == http.MethodPost:
		return route{name: "POST /v1/endpoints/{id}/jobs", limit: limits.RunBody}
	case segs[1] == "endpoints" && n == 4 && segs[3] == "jobs:sync" && method == http.MethodPost:
		return route{name: "POST /v1/endpoints/{id}/jobs:sync", limit: limits.RunSyncBody, hold: holdWait}
	case segs[1] == "endpoints":
		// Job reads with a wait, streams, purges: held like their /v2
		// twins.
		return route{name: method + " /v1/endpoints", limit: limits.SmallBody, hold: holdWait}
	}
	return small
}

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
