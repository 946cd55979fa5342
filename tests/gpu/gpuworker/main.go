// Command gpuworker is the protocol half of the GPU test worker of
// tests/gpu: a minimal RunPod-protocol worker (take, done, ping) whose
// handler drives a long-lived CUDA process (testdata/cudaprobe.cu, built
// with nvcc by the test) over its stdin and stdout, or runs a command.
//
// Job input:
//
//	{"cuda": "info" | "inc" | "free"}   the probe's answer as the output
//	{"cuda": "alloc", "mb": N}          allocate N MiB more on the GPU
//	{"exec": ["nvidia-smi", "-L"]}      {"stdout": ..., "code": ...}
//	{"ls": "/dev"}                      {"names": [...]} (the image has no ls)
//
// The probe starts with the worker, so its CUDA context (and the counter it
// keeps on the GPU) lives as long as the worker: through freezing,
// parking and reviving.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type probe struct {
	mu  sync.Mutex
	in  io.Writer
	out *bufio.Reader
}

// ask sends one command and returns the probe's JSON answer.
func (p *probe) ask(cmd string) (map[string]any, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return nil, fmt.Errorf("write to cudaprobe: %w", err)
	}
	line, err := p.out.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("read from cudaprobe: %w", err)
	}
	var v map[string]any
	if err := json.Unmarshal(line, &v); err != nil {
		return nil, fmt.Errorf("cudaprobe answered %q: %w", line, err)
	}
	return v, nil
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("gpuworker", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	id := os.Getenv("RUNPOD_POD_ID")
	take := strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_GET_JOB"), "$ID", id)
	done := strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_POST_OUTPUT"), "$RUNPOD_POD_ID", id)
	ping := strings.ReplaceAll(os.Getenv("RUNPOD_WEBHOOK_PING"), "$RUNPOD_POD_ID", id)
	key := os.Getenv("RUNPOD_AI_API_KEY")
	if take == "" || done == "" {
		return fmt.Errorf("RUNPOD_WEBHOOK_GET_JOB and RUNPOD_WEBHOOK_POST_OUTPUT are required")
	}
	bin := os.Getenv("CUDAPROBE")
	if bin == "" {
		bin = "/cudaprobe"
	}
	cmd := exec.Command(bin)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	p := &probe{in: in, out: bufio.NewReader(out)}

	var current sync.Map // job id -> true, for pings
	if ping != "" {
		interval := 10 * time.Second
		if ms, err := strconv.Atoi(os.Getenv("RUNPOD_PING_INTERVAL")); err == nil && ms > 0 {
			interval = time.Duration(ms) * time.Millisecond
		}
		go func() { // ends with the process
			for {
				var jobs []string
				current.Range(func(k, _ any) bool { jobs = append(jobs, k.(string)); return true })
				if resp, err := send(ctx, "GET", ping+"&job_id="+strings.Join(jobs, ","), key, nil); err == nil {
					resp.Body.Close()
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(interval):
				}
			}
		}()
	}

	for ctx.Err() == nil {
		resp, err := send(ctx, "GET", take+"&job_in_progress=0", key, nil)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("take", "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(bytes.TrimSpace(body)) == 0 {
			continue
		}
		var job struct {
			ID    string         `json:"id"`
			Input map[string]any `json:"input"`
		}
		if err := json.Unmarshal(body, &job); err != nil || job.ID == "" {
			log.Warn("unusable job", "body", string(body), "err", err)
			continue
		}
		current.Store(job.ID, true)
		result := handle(ctx, p, job.Input)
		b, _ := json.Marshal(result)
		url := strings.ReplaceAll(done, "$ID", job.ID) + "&isStream=false"
		if resp, err := send(ctx, "POST", url, key, b); err != nil {
			log.Error("post result", "job", job.ID, "err", err)
		} else {
			resp.Body.Close()
		}
		current.Delete(job.ID)
	}
	return nil
}

func handle(ctx context.Context, p *probe, input map[string]any) map[string]any {
	if dir, ok := input["ls"].(string); ok {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return map[string]any{"error": err.Error()}
		}
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return map[string]any{"output": map[string]any{"names": names}}
	}
	if args, ok := input["exec"].([]any); ok && len(args) > 0 {
		var argv []string
		for _, a := range args {
			argv = append(argv, fmt.Sprint(a))
		}
		var buf bytes.Buffer
		c := exec.CommandContext(ctx, argv[0], argv[1:]...)
		c.Stdout, c.Stderr = &buf, &buf
		err := c.Run()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		out := map[string]any{"stdout": buf.String(), "code": code}
		if err != nil {
			out["err"] = err.Error()
		}
		return map[string]any{"output": out}
	}
	cmd, _ := input["cuda"].(string)
	if cmd == "alloc" {
		mb, _ := input["mb"].(float64)
		cmd = fmt.Sprintf("alloc %d", int(mb))
	}
	if cmd == "" {
		return map[string]any{"error": "input needs cuda or exec"}
	}
	v, err := p.ask(cmd)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	if e, ok := v["error"]; ok {
		return map[string]any{"error": fmt.Sprint(e)}
	}
	return map[string]any{"output": v}
}

func send(ctx context.Context, method, url, key string, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	orig := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{orig, closerFunc(func() error { defer cancel(); return orig.Close() })}
	return resp, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
