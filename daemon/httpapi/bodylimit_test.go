package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/emberhq/ember/scheduler/limits"
)

// countingReader counts what was read of a body.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestReadLimited(t *testing.T) {
	const limit = 100
	bound := limits.DrainBound(limit) // limit + 1 MiB
	for _, tc := range []struct {
		name      string
		size      int64
		cl        int64 // -1: chunked
		expect    bool  // Expect: 100-continue
		wantOver  bool
		wantRead  int64 // bytes read of the body
		wantClose bool
	}{
		{"at the limit", limit, limit, false, false, limit, false},
		{"at the limit, chunked", limit, -1, false, false, limit, false},
		{"one over, drained", limit + 1, limit + 1, false, true, limit + 1, false},
		{"one over, chunked, drained", limit + 1, -1, false, true, limit + 1, false},
		{"at the drain bound", bound, bound, false, true, bound, false},
		{"past the drain bound by Content-Length", bound + 1, bound + 1, false, true, 0, true},
		{"past the drain bound, chunked", bound + 10, -1, false, true, bound + 1, true},
		{"waiting for 100 Continue", limit + 1, limit + 1, true, true, 0, true},
	} {
		cr := &countingReader{r: bytes.NewReader(make([]byte, tc.size))}
		r := httptest.NewRequest("POST", "/v2/ep/run", io.NopCloser(cr))
		r.ContentLength = tc.cl
		if tc.expect {
			r.Header.Set("Expect", "100-continue")
		}
		w := httptest.NewRecorder()
		b, n, err := readLimited(w, r, limit)
		over := errors.Is(err, errBodyTooLarge)
		if over != tc.wantOver || (!over && (err != nil || int64(len(b)) != tc.size)) {
			t.Errorf("%s: %d bytes, err %v; want over %v", tc.name, len(b), err, tc.wantOver)
		}
		if over && tc.cl >= 0 && n != tc.cl {
			t.Errorf("%s: size %d, want the Content-Length %d", tc.name, n, tc.cl)
		}
		if cr.n != tc.wantRead {
			t.Errorf("%s: read %d bytes of the body, want %d", tc.name, cr.n, tc.wantRead)
		}
		if got := w.Header().Get("Connection") == "close"; got != tc.wantClose {
			t.Errorf("%s: Connection: close %v, want %v", tc.name, got, tc.wantClose)
		}
	}
}

// classify returns the route of a request, or for a path that matches none
// a route with the small body limit (it is answered 404 or 405 without its
// body being used).
func classify(method string, segs []string) route {
	if rt, _ := findRoute(method, segs); rt != nil {
		return *rt
	}
	return route{limit: limits.SmallBody, epSeg: -1}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		limit        int64
		hold         holdKind
	}{
		{"POST", "/v2/ep/run", limits.RunBody, holdNone},
		{"POST", "/v2/ep/runsync", limits.RunSyncBody, holdWait},
		{"GET", "/v2/ep/status-sync/j", limits.SmallBody, holdWait},
		{"GET", "/v2/ep/status/j", limits.SmallBody, holdNone},
		{"GET", "/v2/ep/job-take/w", limits.SmallBody, holdWorkerPoll},
		{"POST", "/v2/ep/job-done/w/j", limits.ResultBody, holdNone},
		{"POST", "/v2/ep/job-stream/w/j", limits.ChunkBody, holdNone},
		{"POST", "/v2/ep/openai/v1/chat/completions", limits.RunBody, holdForever},
		{"POST", "/v1/endpoints", limits.EndpointBody, holdNone},
		{"PATCH", "/v1/endpoints/ep", limits.EndpointBody, holdNone},
		{"POST", "/v1/endpoints/ep/jobs", limits.RunBody, holdNone},
		{"POST", "/v1/endpoints/ep/jobs:sync", limits.RunSyncBody, holdWait},
		{"GET", "/v1/endpoints/ep/jobs/j", limits.SmallBody, holdWait},
		{"POST", "/v1/keys", limits.KeyBody, holdNone},
		{"POST", "/v1/workers/w:stop", limits.SmallBody, holdWait},
		{"GET", "/v1/workers/w/logs", limits.SmallBody, holdForever},
		{"POST", "/v1/images:pull", limits.SmallBody, holdForever},
		{"GET", "/healthz", limits.SmallBody, holdNone},
	} {
		rt := classify(tc.method, splitPath(tc.path))
		if rt.limit != tc.limit || rt.hold != tc.hold {
			t.Errorf("%s %s: limit %d hold %d; want %d, %d", tc.method, tc.path, rt.limit, rt.hold, tc.limit, tc.hold)
		}
	}
	if rt := classify("POST", splitPath("/v1/images:upload")); !rt.streamed {
		t.Error("image upload not streamed")
	}
}

func TestReservedRoute(t *testing.T) {
	for path, want := range map[string]bool{
		"/healthz": true, "/readyz": true, "/v2/ep/job-take/w": true, "/v2/ep/job-done/w/j": true, "/v2/ep/ping/w": true,
		"/v2/ep/run": false, "/v1/endpoints": false, "/metrics": false, "/v2/ep/status/j": false,
	} {
		if got := ReservedRoute(httptest.NewRequest(http.MethodGet, path, nil)); got != want {
			t.Errorf("ReservedRoute(%s) = %v, want %v", path, got, want)
		}
	}
}
