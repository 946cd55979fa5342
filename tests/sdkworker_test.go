package tests

// An SDK-like worker: the test binary itself, started by emberd (process
// runtime) with EMBER_TEST_SDK_WORKER=1, behaves as runpod-python 1.12's
// worker loop does on the points that decide when it exits (docs/compat.md:
// Job stop, Worker exit; runpod/serverless/modules/rp_scale.py):
//
//   - job-take and job-stop are concurrent long-polls, each bounded at 90 s
//     and never cancelled by SIGTERM;
//   - SIGTERM (or SIGINT) only clears "alive": each loop ends when its
//     in-flight request has returned and it next checks alive;
//   - after an empty stop answer (204, or no ids) the stop loop sleeps 1 s,
//     after a 429 5 s, after an error 1 s; an empty take re-polls at once;
//   - pings run on their own and do not hold the exit (a separate process in
//     the SDK, which dies with the worker);
//   - the process exits once the take loop (with its jobs) and the stop loop
//     have both returned.
//
// Simplifications: concurrency 1, so a job runs in the take loop (the SDK
// with concurrency 1 does not take while it holds a job); the handler
// echoes its input after sleep_ms; the ping interval is used in ms (the SDK
// integer-divides it into seconds, which makes the tests' 500 ms a busy
// loop); a transport error on take pauses 10 ms rather than spinning.
//
// At exit the worker writes $SDK_WORKER_DIR/exit.<worker id>.json (an
// sdkExit), which the tests read.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const sdkWorkerEnv = "EMBER_TEST_SDK_WORKER"

func init() {
	// Runs before TestMain: as a worker, the test binary never runs tests.
	if os.Getenv(sdkWorkerEnv) == "1" {
		os.Exit(sdkWorkerMain())
	}
}

// sdkExit is what an SDK-like worker reports about its end (Unix ms).
type sdkExit struct {
	Worker string `json:"worker"`
	// TermAt: SIGTERM received; ExitAt: both loops returned.
	TermAt int64 `json:"termAt"`
	ExitAt int64 `json:"exitAt"`
	// LastStopPollAt: when the last job-stop poll started before SIGTERM.
	LastStopPollAt int64 `json:"lastStopPollAt"`
	// StopPolls and Jobs count the stop polls made and jobs run.
	StopPolls int `json:"stopPolls"`
	Jobs      int `json:"jobs"`
}

type sdkWorker struct {
	id, key          string
	take, stop, ping string
	done             string // $ID still in it
	pingEvery        time.Duration
	alive            atomic.Bool
	mu               sync.Mutex
	rep              sdkExit
	client           *http.Client
	logf             func(format string, args ...any)
}

func sdkWorkerMain() int {
	w := &sdkWorker{
		id:     os.Getenv("RUNPOD_POD_ID"),
		key:    os.Getenv("RUNPOD_AI_API_KEY"),
		client: &http.Client{},
		logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
		},
	}
	w.take = strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_GET_JOB"), "$ID", w.id)
	if !strings.Contains(w.take, "/job-take/") {
		w.logf("RUNPOD_WEBHOOK_GET_JOB has no /job-take/: %q", w.take)
		return 2
	}
	w.stop = strings.Replace(w.take, "/job-take/", "/job-stop/", 1)
	w.ping = strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_PING"), "$RUNPOD_POD_ID", w.id)
	w.done = strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_POST_OUTPUT"), "$RUNPOD_POD_ID", w.id)
	ms, _ := strconv.Atoi(os.Getenv("RUNPOD_PING_INTERVAL"))
	w.pingEvery = time.Duration(max(ms, 100)) * time.Millisecond
	w.rep.Worker = w.id
	w.alive.Store(true)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		s := <-sig
		w.mu.Lock()
		w.rep.TermAt = time.Now().UnixMilli()
		w.mu.Unlock()
		w.logf("received %v: shutting down", s)
		w.alive.Store(false)
	}()
	go w.pingLoop() // dies with the process, as the SDK's ping process does

	var loops sync.WaitGroup
	loops.Go(w.takeLoop)
	loops.Go(w.stopLoop)
	loops.Wait()

	w.mu.Lock()
	w.rep.ExitAt = time.Now().UnixMilli()
	b, _ := json.Marshal(w.rep)
	w.mu.Unlock()
	dir := os.Getenv("SDK_WORKER_DIR")
	tmp := filepath.Join(dir, ".exit."+w.id)
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		os.Rename(tmp, filepath.Join(dir, "exit."+w.id+".json"))
	}
	w.logf("exited: %s", b)
	return 0
}

// get makes one long-poll GET, bounded at 90 s as the SDK's wait_for is,
// whatever happens to the process meanwhile.
func (w *sdkWorker) get(u string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", w.key)
	req.Header.Set("User-Agent", "RunPod-Python-SDK/1.12.0 (ember test SDK-like worker)")
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (w *sdkWorker) takeLoop() {
	for w.alive.Load() {
		code, body, err := w.get(w.take + "&job_in_progress=0")
		switch {
		case err != nil:
			time.Sleep(10 * time.Millisecond)
		case code == http.StatusTooManyRequests:
			time.Sleep(5 * time.Second)
		case code == http.StatusOK:
			var job struct {
				ID    string `json:"id"`
				Input struct {
					SleepMs int `json:"sleep_ms"`
				} `json:"input"`
			}
			raw := struct {
				Input json.RawMessage `json:"input"`
			}{}
			if json.Unmarshal(body, &job) != nil || json.Unmarshal(body, &raw) != nil || job.ID == "" {
				continue
			}
			w.runJob(job.ID, time.Duration(job.Input.SleepMs)*time.Millisecond, raw.Input)
		}
		// 204, 400 and anything else: re-poll at once.
	}
}

// runJob sleeps, then posts {"output":{"echo":input}}; a job already
// received runs to its end even after SIGTERM, as in the SDK.
func (w *sdkWorker) runJob(id string, sleep time.Duration, input json.RawMessage) {
	w.mu.Lock()
	w.rep.Jobs++
	w.mu.Unlock()
	time.Sleep(sleep)
	body := []byte(`{"output":{"echo":` + string(input) + `}}`)
	u := strings.ReplaceAll(w.done, "$ID", id) + "&isStream=false"
	for attempt := 0; attempt < 3; attempt++ {
		req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", w.key)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := w.client.Do(req)
		if err != nil {
			return // connection errors are not retried
		}
		resp.Body.Close()
		if resp.StatusCode < 500 {
			return
		}
		time.Sleep(time.Second)
	}
}

func (w *sdkWorker) stopLoop() {
	for w.alive.Load() {
		w.mu.Lock()
		w.rep.LastStopPollAt = time.Now().UnixMilli()
		w.rep.StopPolls++
		w.mu.Unlock()
		code, body, err := w.get(w.stop)
		switch {
		case err != nil:
			time.Sleep(time.Second)
		case code == http.StatusTooManyRequests:
			time.Sleep(5 * time.Second)
		case code == http.StatusOK:
			var msg struct {
				JobsToStop []string `json:"jobsToStop"`
			}
			if json.Unmarshal(body, &msg) != nil || len(msg.JobsToStop) == 0 {
				time.Sleep(time.Second)
			}
			// Jobs run to their end here (the echo handler is short).
		default: // 204: no signal; any other status: an error
			time.Sleep(time.Second)
		}
	}
}

func (w *sdkWorker) pingLoop() {
	for {
		code, _, err := w.get(w.ping + "&runpod_version=1.12.0")
		if err == nil && code != http.StatusOK {
			w.logf("ping answered %d", code)
		}
		time.Sleep(w.pingEvery)
	}
}
