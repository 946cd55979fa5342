package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/emberhq/ember/runpod"
)

// Job states, as in RunPod Serverless (runpod/status.go).
const (
	StatusInQueue    = string(runpod.InQueue)
	StatusInProgress = string(runpod.InProgress)
	StatusCompleted  = string(runpod.Completed)
	StatusFailed     = string(runpod.Failed)
	StatusCancelled  = string(runpod.Cancelled)
	StatusTimedOut   = string(runpod.TimedOut)
)

// MaxWait is the longest long-poll the client asks for. It matches the wait
// RunPod clients use, so requests behave the same against either service.
const MaxWait = 90 * time.Second

// JobStatus is RunPod's job status object.
type JobStatus struct {
	ID            string          `json:"id"`
	Status        string          `json:"status"`
	DelayTime     int64           `json:"delayTime,omitempty"`     // milliseconds
	ExecutionTime int64           `json:"executionTime,omitempty"` // milliseconds
	Output        json.RawMessage `json:"output,omitempty"`
	// Error is the handler's error. RunPod workers may report a structured
	// error; it is kept here as compact JSON text.
	Error    string `json:"error,omitempty"`
	WorkerID string `json:"workerId,omitempty"`

	// Raw is the object exactly as the daemon sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON tolerates the variations seen across RunPod-compatible
// servers: times as strings or floats, and errors that are objects.
func (s *JobStatus) UnmarshalJSON(b []byte) error {
	var aux struct {
		ID            string          `json:"id"`
		Status        string          `json:"status"`
		DelayTime     flexInt         `json:"delayTime"`
		ExecutionTime flexInt         `json:"executionTime"`
		Output        json.RawMessage `json:"output"`
		Error         json.RawMessage `json:"error"`
		WorkerID      string          `json:"workerId"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*s = JobStatus{
		ID:            aux.ID,
		Status:        aux.Status,
		DelayTime:     int64(aux.DelayTime),
		ExecutionTime: int64(aux.ExecutionTime),
		Output:        aux.Output,
		WorkerID:      aux.WorkerID,
		Raw:           bytes.Clone(b),
	}
	if len(aux.Error) > 0 && string(aux.Error) != "null" {
		s.Error = rawText(aux.Error)
	}
	return nil
}

// Terminal reports whether the job has reached a state it will not leave.
func (s *JobStatus) Terminal() bool { return runpod.Status(s.Status).Terminal() }

// RequestBody builds a /run or /runsync body from input. An object that
// already has an "input" key is taken as a full request body (so webhook and
// policy can be passed); any other JSON value becomes {"input": value}.
func RequestBody(input json.RawMessage) (json.RawMessage, error) {
	if !json.Valid(input) {
		return nil, errors.New("input is not valid JSON")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(input, &obj); err == nil && obj != nil {
		if _, ok := obj["input"]; ok {
			return input, nil
		}
	}
	body, err := json.Marshal(struct {
		Input json.RawMessage `json:"input"`
	}{input})
	if err != nil {
		return nil, fmt.Errorf("wrapping input: %w", err)
	}
	return body, nil
}

// waitQuery asks for a long-poll of at most MaxWait, shortened to what is
// left of ctx so that the daemon answers before the caller gives up.
func waitQuery(ctx context.Context, wait time.Duration) url.Values {
	if wait <= 0 || wait > MaxWait {
		wait = MaxWait
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < wait {
			wait = max(left, time.Millisecond)
		}
	}
	return url.Values{"wait": {strconv.FormatInt(wait.Milliseconds(), 10)}}
}

func jobPath(endpointID, rest string) string {
	return "/v2/" + url.PathEscape(endpointID) + "/" + rest
}

// RunSync submits a job and waits up to wait (at most MaxWait) for it to
// finish. body is a full request body; see RequestBody. The returned status
// may not be terminal yet: continue with StatusSync, or use Run.
func (c *Client) RunSync(ctx context.Context, endpointID string, body json.RawMessage, wait time.Duration) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodPost, jobPath(endpointID, "runsync"), waitQuery(ctx, wait), body, &st); err != nil {
		return nil, fmt.Errorf("submitting job to endpoint %q: %w", endpointID, err)
	}
	return &st, nil
}

// StatusSync waits up to wait (at most MaxWait) for a job to finish and
// returns its status, terminal or not.
func (c *Client) StatusSync(ctx context.Context, endpointID, jobID string, wait time.Duration) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodGet, jobPath(endpointID, "status-sync/"+url.PathEscape(jobID)), waitQuery(ctx, wait), nil, &st); err != nil {
		return nil, fmt.Errorf("waiting for job %q: %w", jobID, err)
	}
	return &st, nil
}

// Status returns a job's current status without waiting.
func (c *Client) Status(ctx context.Context, endpointID, jobID string) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodGet, jobPath(endpointID, "status/"+url.PathEscape(jobID)), nil, nil, &st); err != nil {
		return nil, fmt.Errorf("getting status of job %q: %w", jobID, err)
	}
	return &st, nil
}

// WaitError is returned by Run when the job was submitted but waiting for it
// failed (the context ended, or the daemon became unreachable). The job may
// still be running; Last is the last status seen, so callers can tell people
// which job to check on.
type WaitError struct {
	Last *JobStatus
	Err  error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("job %s (last status %s): %v", e.Last.ID, e.Last.Status, e.Err)
}

func (e *WaitError) Unwrap() error { return e.Err }

// Submit queues a job through /run and returns at once with its id and
// status (IN_QUEUE). body is a full request body; see RequestBody. A job
// queued this way keeps its result for the daemon's /run retention (30
// minutes by default), long enough to look it up after giving up waiting.
func (c *Client) Submit(ctx context.Context, endpointID string, body json.RawMessage) (*JobStatus, error) {
	var st JobStatus
	if _, err := c.do(ctx, http.MethodPost, jobPath(endpointID, "run"), nil, body, &st); err != nil {
		return nil, fmt.Errorf("submitting job to endpoint %q: %w", endpointID, err)
	}
	if st.ID == "" {
		return nil, fmt.Errorf("daemon accepted the job with status %q but returned no job ID", st.Status)
	}
	return &st, nil
}

// Run submits a job through runsync and long-polls status-sync until the job
// is terminal, returning the final status whatever it is; a FAILED job is not
// an error here, only failing to find out is. progress, when not nil, is
// called with every status received, including the final one.
func (c *Client) Run(ctx context.Context, endpointID string, body json.RawMessage, progress func(*JobStatus)) (*JobStatus, error) {
	st, err := c.RunSync(ctx, endpointID, body, MaxWait)
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(st)
	}
	if !st.Terminal() && st.ID == "" {
		return nil, fmt.Errorf("daemon accepted the job with status %q but returned no job ID", st.Status)
	}
	return c.Wait(ctx, endpointID, st, MaxWait, progress)
}

// Wait long-polls status-sync for the job st names until it is terminal and
// returns its final status; st itself is returned when it is terminal
// already. Each poll is held at most poll (MaxWait when 0 or more): a
// short one lets progress see IN_QUEUE turn into IN_PROGRESS soon after it
// happens. progress, when not nil, is called with every status received.
// Failing to find out is a *WaitError carrying the last status seen.
func (c *Client) Wait(ctx context.Context, endpointID string, st *JobStatus, poll time.Duration, progress func(*JobStatus)) (*JobStatus, error) {
	gap := c.pollInterval
	for !st.Terminal() {
		started := time.Now()
		next, err := c.StatusSync(ctx, endpointID, st.ID, poll)
		if err != nil {
			return nil, &WaitError{Last: st, Err: err}
		}
		st = next
		if progress != nil {
			progress(st)
		}
		if st.Terminal() {
			break
		}
		// A long-poll that came back well before poll and unfinished
		// means the daemon is not holding requests; back off so as not
		// to spin on it.
		if elapsed := time.Since(started); elapsed < gap {
			t := time.NewTimer(gap - elapsed)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, &WaitError{Last: st, Err: ctx.Err()}
			case <-t.C:
			}
			gap = min(gap*2, 5*time.Second)
		} else {
			gap = c.pollInterval
		}
	}
	return st, nil
}
