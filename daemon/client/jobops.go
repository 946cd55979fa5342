package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Cancel cancels a job (POST /v2/{ep}/cancel/{id}): a queued job is
// removed, a running one ends CANCELLED and its worker is told to stop. A
// job that has already finished keeps its status. The answer is the job's
// status object.
func (c *Client) Cancel(ctx context.Context, endpointID, jobID string) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodPost, jobPath(endpointID, "cancel/"+url.PathEscape(jobID)), nil, nil, &st); err != nil {
		return nil, fmt.Errorf("cancelling job %q: %w", jobID, err)
	}
	return &st, nil
}

// Retry re-queues a FAILED or TIMED_OUT job with the same ID and input
// (POST /v2/{ep}/retry/{id}).
func (c *Client) Retry(ctx context.Context, endpointID, jobID string) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodPost, jobPath(endpointID, "retry/"+url.PathEscape(jobID)), nil, nil, &st); err != nil {
		return nil, fmt.Errorf("retrying job %q: %w", jobID, err)
	}
	return &st, nil
}

// PurgeResult is the answer of POST /v2/{ep}/purge-queue.
type PurgeResult struct {
	// Removed counts the queued jobs cancelled; running jobs go on.
	Removed int    `json:"removed"`
	Status  string `json:"status"`

	Raw json.RawMessage `json:"-"`
}

// PurgeQueue cancels every queued job of an endpoint.
func (c *Client) PurgeQueue(ctx context.Context, endpointID string) (*PurgeResult, error) {
	var aux struct {
		Removed flexInt `json:"removed"`
		Status  string  `json:"status"`
	}
	raw, err := c.do(ctx, http.MethodPost, jobPath(endpointID, "purge-queue"), nil, nil, &aux)
	if err != nil {
		return nil, fmt.Errorf("purging the queue of endpoint %q: %w", endpointID, err)
	}
	return &PurgeResult{Removed: int(aux.Removed), Status: aux.Status, Raw: raw}, nil
}

// StreamChunk is one streamed output.
type StreamChunk struct {
	Output json.RawMessage `json:"output"`
	// Raw is the chunk object exactly as the daemon sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object.
func (s *StreamChunk) UnmarshalJSON(b []byte) error {
	var aux struct {
		Output json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*s = StreamChunk{Output: aux.Output, Raw: bytes.Clone(b)}
	return nil
}

// StreamResult is the answer of /v2/{ep}/stream/{id}: the job's status and
// the chunks not handed out before.
type StreamResult struct {
	Status string        `json:"status"`
	Stream []StreamChunk `json:"stream"`
}

// Terminal reports whether the job has reached a state it will not leave.
func (s *StreamResult) Terminal() bool {
	st := JobStatus{Status: s.Status}
	return st.Terminal()
}

// Stream reads the chunks a job streamed since the last read. The daemon
// holds the request (up to 5 s) while there are none and the job runs.
// Every chunk is handed out once: a chunk read here is not seen by another
// reader.
func (c *Client) Stream(ctx context.Context, endpointID, jobID string) (*StreamResult, error) {
	var sr StreamResult
	if _, err := c.do(ctx, http.MethodGet, jobPath(endpointID, "stream/"+url.PathEscape(jobID)), nil, nil, &sr); err != nil {
		return nil, fmt.Errorf("streaming job %q: %w", jobID, err)
	}
	return &sr, nil
}

// FollowStream reads a job's stream until the job is terminal, calling fn
// with every chunk in order, and returns the last status seen (terminal
// unless an error is returned). An error from fn stops it.
func (c *Client) FollowStream(ctx context.Context, endpointID, jobID string, fn func(StreamChunk) error) (string, error) {
	gap := c.pollInterval
	for {
		started := time.Now()
		sr, err := c.Stream(ctx, endpointID, jobID)
		if err != nil {
			return "", err
		}
		for _, ch := range sr.Stream {
			if err := fn(ch); err != nil {
				return sr.Status, err
			}
		}
		if sr.Terminal() {
			return sr.Status, nil
		}
		// An empty answer that came back early means the daemon is not
		// holding the request; back off so as not to spin on it.
		if len(sr.Stream) == 0 && time.Since(started) < gap {
			t := time.NewTimer(gap - time.Since(started))
			select {
			case <-ctx.Done():
				t.Stop()
				return sr.Status, ctx.Err()
			case <-t.C:
			}
			gap = min(gap*2, 5*time.Second)
		} else {
			gap = c.pollInterval
		}
	}
}

// EndpointHealth is the answer of /v2/{ep}/health: RunPod's job and worker
// counters, every key always present.
type EndpointHealth struct {
	Jobs struct {
		Completed  int `json:"completed"`
		Failed     int `json:"failed"`
		InProgress int `json:"inProgress"`
		InQueue    int `json:"inQueue"`
		Retried    int `json:"retried"`
	} `json:"jobs"`
	// Workers counts workers by RunPod's states: idle, initializing,
	// ready (the same as idle), running, throttled, unhealthy.
	Workers map[string]int `json:"workers"`

	Raw json.RawMessage `json:"-"`
}

// EndpointHealth reads an endpoint's job and worker counters.
func (c *Client) EndpointHealth(ctx context.Context, endpointID string) (*EndpointHealth, error) {
	var h EndpointHealth
	raw, err := c.do(ctx, http.MethodGet, jobPath(endpointID, "health"), nil, nil, &h)
	if err != nil {
		return nil, fmt.Errorf("health of endpoint %q: %w", endpointID, err)
	}
	h.Raw = raw
	return &h, nil
}
