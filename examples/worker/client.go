package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"time"
)

// maxPostAttempts is the SDK's aiohttp-retry setting: 3 attempts in total, 5xx only.
const maxPostAttempts = 3

// StatusError is an HTTP answer the worker did not want. It carries the status so callers
// can tell retryable (5xx) from final (4xx) failures.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body)
}

// client sends every worker request with the headers the SDK's shared session carries, so
// the daemon sees the same wire traffic from this worker as from a Python one.
type client struct {
	http        *http.Client
	apiKey      string
	userAgent   string
	retryDelay  time.Duration
	postTimeout time.Duration
	log         *slog.Logger
}

func newClient(cfg Config, log *slog.Logger) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Takes, stop polls, pings and several jobs' posts share one host; keep their
	// connections instead of reopening them on every long-poll.
	tr.MaxIdleConnsPerHost = cfg.Concurrency + 4
	return &client{
		http:        &http.Client{Transport: tr},
		apiKey:      cfg.APIKey,
		userAgent:   fmt.Sprintf("RunPod-Python-SDK/%s (%s; %s) Language/Go %s Integration/ember-example-worker", sdkVersion, runtime.GOOS, runtime.GOARCH, runtime.Version()),
		retryDelay:  cfg.RetryDelay,
		postTimeout: cfg.PostTimeout,
		log:         log,
	}
}

// close releases idle connections when the worker stops.
func (c *client) close() { c.http.CloseIdleConnections() }

// newRequest sets the SDK session headers. The API key goes out raw, with no "Bearer",
// exactly like runpod-python.
func (c *client) newRequest(ctx context.Context, method, url string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, fmt.Errorf("build %s request: %w", method, err)
	}
	req.Header.Set("Authorization", c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	return req, nil
}

// get performs a GET; the caller closes the body.
func (c *client) get(ctx context.Context, url string) (*http.Response, error) {
	req, err := c.newRequest(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET: %w", err)
	}
	return resp, nil
}

// post sends a JSON body the way the SDK's _transmit does: labelled as a form (the daemon
// must read the raw body), retried on 5xx only, 3 attempts about 2 s then 3 s apart.
// 4xx answers and connection errors are returned at once; the SDK does not retry them.
func (c *client) post(ctx context.Context, url, jobID string, body []byte) error {
	delays := []time.Duration{c.retryDelay, c.retryDelay * 3 / 2}
	for attempt := 1; ; attempt++ {
		err := c.postOnce(ctx, url, jobID, body)
		var se *StatusError
		if err == nil || !errors.As(err, &se) || se.Code < 500 || attempt == maxPostAttempts {
			return err
		}
		c.log.Warn("result post failed, retrying", "job", jobID, "attempt", attempt, "err", err)
		if err := sleepCtx(ctx, delays[attempt-1]); err != nil {
			return fmt.Errorf("post abandoned during retry pause: %w", err)
		}
	}
}

// postOnce is one attempt. Any status of 400 or above is an error, as with aiohttp's
// raise_for_status.
func (c *client) postOnce(ctx context.Context, url, jobID string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.postTimeout)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodPost, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("charset", "utf-8") // sic: the SDK sends this as a header of its own
	req.Header.Set("X-Request-ID", jobID)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST: %w", err)
	}
	defer drainClose(resp.Body)
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode >= 400 {
		return &StatusError{Code: resp.StatusCode, Body: string(bytes.TrimSpace(msg))}
	}
	return nil
}

// drainClose reads what is left of a (small) response body before closing it, so the
// keep-alive connection can be reused for the next long-poll.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// sleepCtx waits for d or until ctx ends; it reports ctx's error in the latter case, so
// callers can tell an interrupted wait from a completed one.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
