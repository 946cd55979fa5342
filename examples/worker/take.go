package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// takeURL builds the job-take request the SDK would send for n jobs: a single take for
// one, the /job-take-batch/ variant with batch_size for more. job_in_progress says whether
// the worker already holds a job (the daemon's idle accounting).
func (w *Worker) takeURL(n int) string {
	inProgress := "0"
	if w.jobs.len() > 0 {
		inProgress = "1"
	}
	if n == 1 {
		return w.cfg.TakeURL + "&job_in_progress=" + inProgress
	}
	batch := strings.ReplaceAll(w.cfg.TakeURL, "/job-take/", "/job-take-batch/")
	return batch + "&batch_size=" + strconv.Itoa(n) + "&job_in_progress=" + inProgress
}

// take asks for up to n jobs and returns those received plus how long to wait before the
// next take, following the SDK's reaction to each status (docs/compat.md,
// Job take).
func (w *Worker) take(ctx context.Context, n int) ([]*Job, time.Duration) {
	url := w.takeURL(n)
	tctx, cancel := context.WithTimeout(ctx, w.cfg.TakeTimeout)
	defer cancel()
	resp, err := w.client.get(tctx, url)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0 // shutting down: the aborted take is expected
		}
		if tctx.Err() != nil {
			w.log.Debug("job take timed out, polling again", "timeout", w.cfg.TakeTimeout)
			return nil, 0
		}
		w.log.Error("job take failed", "url", url, "err", err)
		return nil, w.cfg.TakeErrorPause
	}
	defer drainClose(resp.Body)
	return w.takeAnswer(resp, n)
}

// takeAnswer maps a take response to jobs and a pause.
func (w *Worker) takeAnswer(resp *http.Response, n int) ([]*Job, time.Duration) {
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent, http.StatusBadRequest:
		return nil, 0 // no job; the daemon's long-poll is the pacing
	case http.StatusTooManyRequests:
		w.log.Warn("job take rate limited", "pause", w.cfg.RateLimitPause)
		return nil, w.cfg.RateLimitPause
	default:
		w.log.Error("job take failed", "status", resp.StatusCode)
		return nil, w.cfg.TakeErrorPause
	}
	jobs, err := decodeJobs(resp)
	if err != nil {
		w.log.Error("job take answer unusable", "err", err, "usable_jobs", len(jobs))
	}
	if len(jobs) > n {
		w.log.Warn("daemon sent more jobs than asked, dropping the rest", "asked", n, "got", len(jobs))
		jobs = jobs[:n]
	}
	return jobs, 0
}

// decodeJobs reads a 200 take answer: one job object, or an array of them. Numbers are
// kept as written so echoed input round-trips exactly. With a batch it may return usable
// jobs and an error about the rest.
func decodeJobs(resp *http.Response) ([]*Job, error) {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read take body: %w", err)
	}
	if mt != "application/json" || len(bytes.TrimSpace(body)) == 0 {
		return nil, nil // the SDK treats this as "no job", silently
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode take body: %w", err)
	}
	switch v := v.(type) {
	case map[string]any:
		j, err := jobFrom(v)
		if err != nil {
			return nil, err
		}
		return []*Job{j}, nil
	case []any:
		return jobsFrom(v)
	default:
		return nil, fmt.Errorf("take body is %T, want a job object or an array", v)
	}
}

// jobsFrom converts a batch answer. Malformed items are skipped and reported; the valid
// ones still run, because the daemon already counts them as taken.
func jobsFrom(items []any) ([]*Job, error) {
	jobs := make([]*Job, 0, len(items))
	var errs []error
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("batch item %d is %T, want an object", i, it))
			continue
		}
		j, err := jobFrom(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("batch item %d: %w", i, err))
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, errors.Join(errs...)
}

// jobFrom checks the two fields the SDK requires: a string id and an input.
func jobFrom(m map[string]any) (*Job, error) {
	id, _ := m["id"].(string)
	input, hasInput := m["input"]
	if id == "" || !hasInput || input == nil {
		return nil, errors.New("job has missing field(s): id or input")
	}
	return &Job{ID: id, Input: input, Raw: m}, nil
}
