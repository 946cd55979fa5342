package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// Worker is a running worker as the daemon reports it.
type Worker struct {
	ID         string `json:"id"`
	EndpointID string `json:"endpointId"`
	// State is initializing, idle, running, draining, frozen, parked,
	// stopped or unhealthy.
	State string `json:"state"`
	// PID is the worker's main process on the daemon's host; 0 if unknown.
	PID int `json:"pid,omitempty"`
	// StartedAt is when the daemon started it (RFC 3339).
	StartedAt string `json:"startedAt,omitempty"`
	// Jobs are the IDs of the jobs it holds.
	Jobs []string `json:"jobs"`
	// SDKVersion is the RunPod SDK version it reported, if any.
	SDKVersion string `json:"sdkVersion,omitempty"`
	// Reason says why it is unhealthy or stopping.
	Reason string `json:"reason,omitempty"`
	// LogPath is its log file on the daemon's host.
	LogPath string `json:"logPath,omitempty"`
	// Generation is the endpoint generation it runs; 0 if unknown (a
	// worker that ended unhealthy, or an older daemon).
	Generation int64 `json:"generation,omitempty"`
	// Outdated: its endpoint has a newer generation; it finishes its jobs
	// and then stops.
	Outdated bool `json:"outdated,omitempty"`
	// ParkedBytes is the host memory a parked worker's GPU state takes;
	// ParkedGPUs are the GPUs it revives on.
	ParkedBytes int64    `json:"parkedBytes,omitempty"`
	ParkedGPUs  []string `json:"parkedGpus,omitempty"`

	// Raw is the object exactly as the daemon sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object.
func (w *Worker) UnmarshalJSON(b []byte) error {
	type plain Worker
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*w = Worker(p)
	w.Raw = bytes.Clone(b)
	return nil
}

// ListWorkers lists the live workers, oldest first; endpoint, when not
// empty, is an endpoint ID that limits the list to its workers.
func (c *Client) ListWorkers(ctx context.Context, endpoint string) ([]Worker, error) {
	var q url.Values
	if endpoint != "" {
		q = url.Values{"endpoint": {endpoint}}
	}
	var out struct {
		Workers []Worker `json:"workers"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/workers", q, nil, &out); err != nil {
		return nil, err
	}
	if out.Workers == nil {
		out.Workers = []Worker{}
	}
	return out.Workers, nil
}

// WorkerLogs copies worker id's log to w: its last tail lines (all that the
// daemon keeps at hand, up to 1 MiB, when tail < 0). With follow it goes on
// copying what the worker writes until ctx ends (and then returns ctx's
// error) or the worker has exited (and then returns nil). A worker that is
// gone but left its log can still be read.
func (c *Client) WorkerLogs(ctx context.Context, id string, follow bool, tail int, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	if tail >= 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	path := "/v1/workers/" + url.PathEscape(id) + "/logs"
	return c.streamText(ctx, path, q, w, "the log of worker "+id)
}

// StopWorker drains a worker (POST /v1/workers/{id}:stop): it takes no new
// job, its running jobs finish (up to the daemon's stop grace), then it
// exits. The answer is the worker as it is now (usually "draining").
func (c *Client) StopWorker(ctx context.Context, id string) (*Worker, error) {
	var w Worker
	if _, err := c.do(ctx, http.MethodPost, "/v1/workers/"+url.PathEscape(id)+":stop", nil, nil, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// streamText GETs path with query q and copies the text answer to w as it
// arrives (logs, followed until ctx ends); what names it in errors.
func (c *Client) streamText(ctx context.Context, path string, q url.Values, w io.Writer, what string) error {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return fmt.Errorf("building GET %s request: %w", path, err)
	}
	u.Path = p
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("building GET %s request: %w", path, err)
	}
	req.Header.Set("Accept", "text/plain, application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return parseAPIError(http.MethodGet, path, resp.StatusCode, data)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reading %s: %w", what, err)
	}
	return nil
}
