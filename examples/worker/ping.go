package main

import (
	"context"
	"net/url"
	"strings"
	"time"
)

// pingURL renders one heartbeat URL the way the SDK's requests call does: params merged
// into the existing query (or a new one), job_id omitted when no job is held, and the
// comma list percent-encoded (requests sends "a%2Cb"; decoded it is "a,b").
func pingURL(base string, jobIDs []string) string {
	sep := "&"
	if !strings.Contains(base, "?") {
		sep = "?"
	}
	q := ""
	if len(jobIDs) > 0 {
		q = "job_id=" + url.QueryEscape(strings.Join(jobIDs, ",")) + "&"
	}
	return base + sep + q + "runpod_version=" + url.QueryEscape(sdkVersion)
}

// pingLoop sends a heartbeat at once and then every interval until ctx ends. Like the
// SDK's separate ping process it keeps going while jobs run and while draining.
func (w *Worker) pingLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.PingInterval)
	defer t.Stop()
	for {
		w.ping(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping sends one heartbeat listing the held jobs. Failures are logged and the next tick
// tries again; the response body is ignored.
func (w *Worker) ping(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 2*w.cfg.PingInterval)
	defer cancel()
	u := pingURL(w.cfg.PingURL, w.jobs.ids())
	resp, err := w.client.get(pctx, u)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("ping failed", "err", err)
		}
		return
	}
	drainClose(resp.Body)
	if resp.StatusCode >= 400 {
		w.log.Warn("ping rejected", "status", resp.StatusCode)
	}
}
