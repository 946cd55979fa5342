package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/history"
	"github.com/emberhq/ember/scheduler/limits"
)

// The console's reads of an endpoint's recent activity: its chart history
// (GET /v1/endpoints/{id}/history) and its recent jobs (GET
// /v1/endpoints/{endpoint_id}/jobs). Their rows in routes.go sit together.

// defaultRecentJobs is how many recent jobs a request without ?limit=
// gets.
const defaultRecentJobs = 50

// historyResponse is the history route's answer.
type historyResponse struct {
	EndpointID        string          `json:"endpointId"`
	ResolutionSeconds int             `json:"resolutionSeconds"`
	WindowSeconds     int             `json:"windowSeconds"`
	Points            []history.Point `json:"points"`
}

// serveHistory answers GET /v1/endpoints/{id}/history: the endpoint's last
// hour in 10 s buckets, oldest first, since the endpoint was created or
// emberd started.
func (h *Server) serveHistory(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.s == nil {
		writeError(w, http.StatusNotFound, "no scheduler")
		return
	}
	id := segs[2]
	pts, err := h.s.History(id)
	if err != nil {
		writeEndpointErr(w, id, err)
		return
	}
	writeJSON(w, historyResponse{
		EndpointID:        id,
		ResolutionSeconds: int(history.Resolution.Seconds()),
		WindowSeconds:     int(history.Window.Seconds()),
		Points:            pts,
	})
}

// recentJob is one entry of the recent-jobs answer. Input, output and
// error are left out for a caller that may not see them (redacted).
type recentJob struct {
	ID              string          `json:"id"`
	Status          string          `json:"status"`
	CreatedAt       int64           `json:"createdAt"`
	StartedAt       int64           `json:"startedAt,omitempty"`
	CompletedAt     int64           `json:"completedAt,omitempty"`
	DelayTime       *int64          `json:"delayTime,omitempty"`
	ExecutionTime   *int64          `json:"executionTime,omitempty"`
	WorkerID        string          `json:"workerId,omitempty"`
	Input           json.RawMessage `json:"input,omitempty"`
	Output          json.RawMessage `json:"output,omitempty"`
	Error           string          `json:"error,omitempty"`
	InputTruncated  bool            `json:"inputTruncated,omitempty"`
	OutputTruncated bool            `json:"outputTruncated,omitempty"`
	ErrorTruncated  bool            `json:"errorTruncated,omitempty"`
}

// recentJobsResponse is the recent-jobs route's answer.
type recentJobsResponse struct {
	Jobs     []recentJob `json:"jobs"`
	Redacted bool        `json:"redacted,omitempty"`
}

// serveRecentJobs answers GET /v1/endpoints/{endpoint_id}/jobs?limit=N:
// the endpoint's newest jobs, newest first (N: default 50, at most
// limits.RecentJobs). Job input, output and error are clients' data: only
// an admin key, or an invoke key that may use the endpoint (the route
// table has checked that), sees them; for a read key they are left out
// and the answer says "redacted": true.
func (h *Server) serveRecentJobs(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.s == nil {
		writeError(w, http.StatusNotFound, "no scheduler")
		return
	}
	id := segs[2]
	limit, err := parseRecentLimit(r.URL.Query()["limit"])
	if err != nil {
		writeJSONStatus(w, http.StatusBadRequest, map[string]any{"error": err.Error(), "field": "limit", "limit": limits.RecentJobs})
		return
	}
	jobs, err := h.s.RecentJobs(r.Context(), id, limit)
	if err != nil {
		writeEndpointErr(w, id, err)
		return
	}
	c, _ := auth.FromContext(r.Context())
	redact := !(c.Scope == auth.Admin || (c.Scope == auth.Invoke && c.AllowsEndpoint(id)))
	out := recentJobsResponse{Jobs: make([]recentJob, 0, len(jobs)), Redacted: redact}
	for _, j := range jobs {
		rj := recentJob{
			ID: j.ID, Status: string(j.Status), CreatedAt: j.CreatedAt, StartedAt: j.StartedAt,
			CompletedAt: j.CompletedAt, WorkerID: j.WorkerID,
		}
		if j.HasDelay {
			rj.DelayTime = &j.DelayTime
		}
		if j.HasExecution {
			rj.ExecutionTime = &j.ExecutionTime
		}
		if !redact {
			rj.Input, rj.Output, rj.Error = j.Input, j.Output, j.Error
			rj.InputTruncated, rj.OutputTruncated, rj.ErrorTruncated = j.InputTruncated, j.OutputTruncated, j.ErrorTruncated
		}
		out.Jobs = append(out.Jobs, rj)
	}
	writeJSON(w, out)
}

// parseRecentLimit reads ?limit=: absent, defaultRecentJobs; else an
// integer from 1 to limits.RecentJobs.
func parseRecentLimit(v []string) (int, error) {
	switch {
	case len(v) == 0:
		return defaultRecentJobs, nil
	case len(v) > 1:
		return 0, errors.New("limit: give it once")
	}
	n, err := strconv.Atoi(v[0])
	switch {
	case err != nil:
		return 0, fmt.Errorf("limit: want an integer from 1 to %d, got %q", limits.RecentJobs, v[0])
	case n < 1:
		return 0, fmt.Errorf("limit: %d is below 1", n)
	case n > limits.RecentJobs:
		return 0, fmt.Errorf("limit: %d is above the limit of %d recent jobs", n, limits.RecentJobs)
	}
	return n, nil
}

// writeEndpointErr answers a scheduler error about endpoint id: 404
// naming it when it does not exist.
func writeEndpointErr(w http.ResponseWriter, id string, err error) {
	if errors.Is(err, scheduler.ErrNotFound) {
		writeError(w, http.StatusNotFound, "endpoint "+strconv.Quote(id)+" not found")
		return
	}
	writeSchedErr(w, err)
}
