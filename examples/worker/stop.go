package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// stopURL derives the stop channel from the take URL, as SDK 1.10+ does; "" when the take
// URL has no /job-take/ segment (the SDK then disables the channel).
func stopURL(takeURL string) string {
	if !strings.Contains(takeURL, "/job-take/") {
		return ""
	}
	return strings.ReplaceAll(takeURL, "/job-take/", "/job-stop/")
}

// stopLoop long-polls the stop channel until ctx ends, cancelling each job the daemon
// names. It keeps running while the worker drains after SIGTERM, so the daemon can still
// cancel a job that is finishing.
func (w *Worker) stopLoop(ctx context.Context, url string) {
	for ctx.Err() == nil {
		pause := w.pollStop(ctx, url)
		if sleepCtx(ctx, pause) != nil {
			return
		}
	}
}

// pollStop makes one stop-channel request and returns the pause before the next.
func (w *Worker) pollStop(ctx context.Context, url string) time.Duration {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.TakeTimeout)
	defer cancel()
	resp, err := w.client.get(pctx, url)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Debug("stop poll failed", "err", err)
		}
		return w.cfg.StopPollPause
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		w.applyStops(resp.Body)
		return 0
	case http.StatusNoContent:
		return w.cfg.StopPollPause
	case http.StatusTooManyRequests:
		return w.cfg.RateLimitPause
	default:
		w.log.Warn("stop poll failed", "status", resp.StatusCode)
		return w.cfg.StopPollPause
	}
}

// applyStops cancels the jobs listed in a {"jobsToStop": [...]} answer. Like the SDK it
// drops non-string ids and ignores a body it cannot parse.
func (w *Worker) applyStops(body io.Reader) {
	ids, err := decodeStops(body)
	if err != nil {
		w.log.Warn("stop answer ignored", "err", err)
		return
	}
	for _, id := range ids {
		if w.jobs.stop(id) {
			w.log.Info("job stopped by daemon", "job", id)
		} else {
			w.log.Debug("stop signal for a job not held", "job", id)
		}
	}
}

func decodeStops(body io.Reader) ([]string, error) {
	var msg struct {
		JobsToStop []any `json:"jobsToStop"`
	}
	if err := json.NewDecoder(body).Decode(&msg); err != nil {
		return nil, fmt.Errorf("decode stop answer: %w", err)
	}
	var ids []string
	for _, v := range msg.JobsToStop {
		if s, ok := v.(string); ok {
			ids = append(ids, s)
		}
	}
	return ids, nil
}
