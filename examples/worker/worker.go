package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// Outcome is what a handler hands back for the final job-done post: the body, already in
// the SDK's shape, and whether the job was a generator (isStream=true).
type Outcome struct {
	Body     map[string]any
	IsStream bool
}

// Emitter lets a handler report before it finishes. Posts are awaited, so progress and
// chunks always reach the daemon before the final result; failures are logged and dropped,
// as in the SDK, and never fail the job.
type Emitter interface {
	Progress(ctx context.Context, output any)
	Chunk(ctx context.Context, output any)
}

// Handler runs one job. It returns ctx's error when the job was stopped, or an
// *ExitRequest when the process must die holding the job.
type Handler func(ctx context.Context, job *Job, e Emitter) (Outcome, error)

// ExitRequest asks the worker to exit the process at once with Code, without reporting
// the job: the equivalent of sys.exit() inside a Python handler.
type ExitRequest struct{ Code int }

func (e *ExitRequest) Error() string { return "handler requested exit " + strconv.Itoa(e.Code) }

// Worker speaks the runpod-python 1.12 worker protocol: take loop, stop channel, pings
// and result posts around a Handler.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	client  *client
	jobs    *jobSet
	handler Handler
	// exit ends the process (os.Exit in main); tests substitute a recorder.
	exit    func(int)
	running sync.WaitGroup
}

// NewWorker wires a worker; call Run to start it.
func NewWorker(cfg Config, log *slog.Logger, h Handler, exit func(int)) *Worker {
	return &Worker{cfg: cfg, log: log, client: newClient(cfg, log), jobs: newJobSet(), handler: h, exit: exit}
}

// Run takes and runs jobs until ctx ends, then stops taking, lets every held job finish
// and report (no time limit, as the SDK does on SIGTERM), and stops its pinger and stop
// poller last so the daemon keeps seeing the draining jobs.
func (w *Worker) Run(ctx context.Context) {
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	if w.cfg.PingURL != "" {
		bg.Go(func() { w.pingLoop(bgCtx) })
	}
	if u := stopURL(w.cfg.TakeURL); u != "" {
		bg.Go(func() { w.stopLoop(bgCtx, u) })
	}
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "take", w.cfg.TakeURL)
	w.takeLoop(ctx)
	w.log.Info("stopped taking jobs, draining", "held", w.jobs.len())
	w.running.Wait()
	stopBg()
	bg.Wait()
	w.client.close()
	w.log.Info("worker stopped")
}

// takeLoop asks for as many jobs as there are free slots and starts each one.
func (w *Worker) takeLoop(ctx context.Context) {
	for {
		n := w.jobs.waitFree(ctx, w.cfg.Concurrency)
		if n == 0 {
			return
		}
		jobs, pause := w.take(ctx, n)
		// Jobs already received run even if shutdown began meanwhile: the daemon
		// counts them as taken.
		for _, j := range jobs {
			w.start(ctx, j)
		}
		if sleepCtx(ctx, pause) != nil {
			return
		}
	}
}

// start runs a job in its own goroutine. The job's context keeps ctx's values but not its
// cancellation: shutdown must let jobs finish, only a stop signal cancels them.
func (w *Worker) start(ctx context.Context, j *Job) {
	jctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	if !w.jobs.add(j.ID, cancel) {
		cancel(nil)
		w.log.Warn("job already held, ignoring the duplicate", "job", j.ID)
		return
	}
	w.running.Go(func() {
		defer cancel(nil)
		defer w.jobs.remove(j.ID)
		w.runJob(jctx, j)
	})
}

// runJob runs the handler and reports its outcome, unless the job was stopped or the
// handler asked the process to exit.
func (w *Worker) runJob(ctx context.Context, j *Job) {
	log := w.log.With("job", j.ID)
	log.Info("job started")
	out, err := w.handler(ctx, j, jobEmitter{w: w, job: j, log: log})
	var exit *ExitRequest
	switch {
	case errors.As(err, &exit):
		log.Warn("handler asked to exit while holding the job", "code", exit.Code)
		w.exit(exit.Code)
		return
	case ctx.Err() != nil:
		log.Info("job cancelled, no result posted", "cause", context.Cause(ctx))
		return
	case err != nil:
		log.Error("handler failed", "err", err)
		out = Outcome{Body: map[string]any{"error": err.Error()}}
	}
	w.postJSON(ctx, log, jobURL(w.cfg.DoneTemplate, j.ID, out.IsStream), j.ID, out.Body)
	log.Info("job finished", "is_stream", out.IsStream, "failed", out.Body["error"] != nil)
}

// jobURL renders a job-done or job-stream URL: $ID becomes the job id and isStream is
// appended with '&', exactly as the SDK does.
func jobURL(template, jobID string, isStream bool) string {
	return strings.ReplaceAll(template, "$ID", jobID) + "&isStream=" + strconv.FormatBool(isStream)
}

// postJSON encodes and posts a body, logging (and so dropping) a final failure, which is
// all the SDK does with it.
func (w *Worker) postJSON(ctx context.Context, log *slog.Logger, url, jobID string, body any) {
	data, err := marshalJSON(body)
	if err != nil {
		log.Error("result not serialisable, dropped", "err", err)
		return
	}
	if err := w.client.post(ctx, url, jobID, data); err != nil {
		if ctx.Err() != nil {
			log.Info("post abandoned, job cancelled", "url", url)
			return
		}
		log.Error("failed to return job results, dropped", "url", url, "err", err)
	}
}

// marshalJSON encodes like json.dumps(ensure_ascii=False): UTF-8 as is and no HTML
// escaping of <, > and &.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jobEmitter posts a job's progress updates and stream chunks.
type jobEmitter struct {
	w   *Worker
	job *Job
	log *slog.Logger
}

// Progress sends {"status":"IN_PROGRESS","output":x} to the job-done URL, as
// runpod.serverless.progress_update does.
func (e jobEmitter) Progress(ctx context.Context, output any) {
	body := map[string]any{"status": "IN_PROGRESS", "output": output}
	e.w.postJSON(ctx, e.log, jobURL(e.w.cfg.DoneTemplate, e.job.ID, false), e.job.ID, body)
}

// Chunk sends one generator value to the job-stream URL; isStream is always false there (sic).
func (e jobEmitter) Chunk(ctx context.Context, output any) {
	body := map[string]any{"output": output}
	e.w.postJSON(ctx, e.log, jobURL(e.w.cfg.StreamTemplate, e.job.ID, false), e.job.ID, body)
}
