package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// instructions is the job input contract (see the package doc and README.md), decoded.
// Keys of the wrong type are ignored, like unknown keys.
type instructions struct {
	sleep       time.Duration
	progress    int
	stream      int
	streamDelay time.Duration
	fail        string
	hasFail     bool
	raise       string
	hasRaise    bool
	exitCode    int
	hasExit     bool
	refresh     bool
	output      any
	hasOutput   bool
	allocMB     int
	echoJob     bool
	// echoEnv names an environment variable whose value the job returns.
	echoEnv string
	// block is a sleep that ignores stop signals and shutdown (block_ms).
	block time.Duration
	// openai is set for an OpenAI passthrough job (openai_route).
	openai *openAIRequest
	// flood is stream_flood: chunks of floodBytes each, posted back to back.
	flood, floodBytes int
}

// parseInstructions reads the keys the example handler understands from a job input.
// Input that is not an object carries no instructions and is simply echoed.
func parseInstructions(input any) instructions {
	m, _ := input.(map[string]any)
	var in instructions
	in.sleep = time.Duration(intKey(m, "sleep_ms")) * time.Millisecond
	in.progress = intKey(m, "progress")
	in.stream = intKey(m, "stream")
	in.streamDelay = time.Duration(intKey(m, "stream_delay_ms")) * time.Millisecond
	if f, ok := m["stream_flood"].(map[string]any); ok {
		in.flood, in.floodBytes = intKey(f, "chunks"), intKey(f, "bytes")
	}
	in.allocMB = intKey(m, "alloc_mb")
	in.block = time.Duration(intKey(m, "block_ms")) * time.Millisecond
	in.fail, in.hasFail = m["fail"].(string)
	in.raise, in.hasRaise = m["raise"].(string)
	in.refresh, _ = m["refresh_worker"].(bool)
	in.echoJob, _ = m["echo_job"].(bool)
	in.echoEnv, _ = m["echo_env"].(string)
	in.output, in.hasOutput = m["output"]
	if n, ok := m["exit"].(json.Number); ok {
		if c, err := n.Int64(); err == nil {
			in.exitCode, in.hasExit = int(c), true
		}
	}
	if in.openai = parseOpenAI(m); in.openai != nil {
		// The daemon builds the top level of an OpenAI job, so the timing knobs can also
		// come in the request body (an OpenAI SDK's extra_body); they win there.
		for key, d := range map[string]*time.Duration{"sleep_ms": &in.sleep, "stream_delay_ms": &in.streamDelay, "block_ms": &in.block} {
			if _, ok := in.openai.body[key]; ok {
				*d = time.Duration(intKey(in.openai.body, key)) * time.Millisecond
			}
		}
	}
	return in
}

// intKey reads a non-negative integer; fractions are truncated, anything else is 0.
func intKey(m map[string]any, key string) int {
	n, ok := m[key].(json.Number)
	if !ok {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return max(int(i), 0)
	}
	if f, err := n.Float64(); err == nil && f > 0 && f < 1<<31 {
		return int(f)
	}
	return 0
}

// ExampleHandler is the test handler behind the input contract. WorkerID and Hostname go
// into exception reports, as the SDK puts RUNPOD_POD_ID and RUNPOD_POD_HOSTNAME there.
type ExampleHandler struct {
	WorkerID string
	Hostname string
}

// Handle runs a job in a fixed order: alloc_mb, block_ms, sleep_ms (with progress), exit,
// then an OpenAI passthrough (openai_route), a stream, or the final result. Every wait but
// block_ms ends early when the job is stopped.
func (h ExampleHandler) Handle(ctx context.Context, job *Job, e Emitter) (Outcome, error) {
	in := parseInstructions(job.Input)
	mem := allocate(in.allocMB)
	defer runtime.KeepAlive(mem) // hold the memory until the job is over
	// Like a synchronous Python handler blocking the event loop: neither a stop signal nor
	// shutdown interrupts it. A job stopped meanwhile posts nothing afterwards.
	time.Sleep(in.block)
	if err := waitWithProgress(ctx, in, e); err != nil {
		return Outcome{}, err
	}
	if in.hasExit {
		return Outcome{}, &ExitRequest{Code: in.exitCode}
	}
	if in.openai != nil {
		return h.openAI(ctx, in, job, e)
	}
	if in.flood > 0 {
		return h.flood(ctx, in, e)
	}
	if in.stream > 0 {
		return h.generate(ctx, in, e)
	}
	return h.finish(in, job), nil
}

// allocate touches every page of n MiB so the memory is really resident, which is what a
// memory-limit test needs to observe.
func allocate(mb int) []byte {
	if mb <= 0 {
		return nil
	}
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

// waitWithProgress sleeps sleep_ms in total. With progress N it sends "progress i/N"
// at the start of each of N equal slices, so the first update is immediate and the last
// comes one slice before the end.
func waitWithProgress(ctx context.Context, in instructions, e Emitter) error {
	if in.progress <= 0 {
		return sleepCtx(ctx, in.sleep)
	}
	step := in.sleep / time.Duration(in.progress)
	for i := 1; i <= in.progress; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.Progress(ctx, fmt.Sprintf("progress %d/%d", i, in.progress))
		if err := sleepCtx(ctx, step); err != nil {
			return err
		}
	}
	return nil
}

// generate behaves like a generator handler with return_aggregate_stream: one chunk post
// per value, then a final isStream=true result carrying all of them. fail/raise end the
// stream after the chunks with the SDK's generator error bodies.
func (h ExampleHandler) generate(ctx context.Context, in instructions, e Emitter) (Outcome, error) {
	chunks := make([]any, 0, in.stream)
	for i := 1; i <= in.stream; i++ {
		if err := sleepCtx(ctx, in.streamDelay); err != nil {
			return Outcome{}, err
		}
		chunk := fmt.Sprintf("chunk %d", i)
		e.Chunk(ctx, chunk)
		chunks = append(chunks, chunk)
	}
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	body := map[string]any{"output": chunks}
	switch {
	case in.hasRaise:
		body = map[string]any{"error": "handler: " + in.raise + " \ntraceback: " + pythonTraceback(in.raise)}
	case in.hasFail:
		body = map[string]any{"error": in.fail}
	}
	return Outcome{Body: withStopPod(body, in.refresh), IsStream: true}, nil
}

// flood is a generator that yields faster than anyone reads: stream_flood.chunks chunks,
// each a string of stream_flood.bytes bytes (JSON quotes included), posted back to back.
// Like the SDK it logs a refused post and goes on; only a stop signal ends it early. The
// final post is {"output": []}, as from a generator without return_aggregate_stream.
func (h ExampleHandler) flood(ctx context.Context, in instructions, e Emitter) (Outcome, error) {
	chunk := strings.Repeat("x", max(in.floodBytes-2, 0))
	for i := 0; i < in.flood; i++ {
		if err := ctx.Err(); err != nil {
			return Outcome{}, err
		}
		e.Chunk(ctx, chunk)
	}
	return Outcome{Body: map[string]any{"output": []any{}}, IsStream: true}, nil
}

// finish builds the final result of a plain (non-generator) job.
func (h ExampleHandler) finish(in instructions, job *Job) Outcome {
	if in.hasRaise {
		return Outcome{Body: map[string]any{"error": h.exceptionReport(in.raise)}}
	}
	var ret any
	switch {
	case in.hasFail:
		ret = map[string]any{"error": in.fail}
	case in.hasOutput:
		ret = in.output
	case in.echoJob:
		ret = job.Raw
	case in.echoEnv != "":
		// What a rolling update's new worker sees (tests/rolling_test.go).
		v, ok := os.LookupEnv(in.echoEnv)
		ret = map[string]any{"env": in.echoEnv, "value": v, "set": ok}
	default:
		ret = map[string]any{"echo": job.Input}
	}
	return Outcome{Body: withStopPod(returnBody(ret), in.refresh)}
}

func withStopPod(body map[string]any, refresh bool) map[string]any {
	if refresh {
		body["stopPod"] = true
	}
	return body
}

// returnBody turns a handler's return value into the job-done body with the SDK's rules
// (rp_job.run_job): a dict's "error" and "refresh_worker" keys are lifted out (error and
// stopPod, when truthy), and an empty dict output is omitted.
func returnBody(ret any) map[string]any {
	d, ok := ret.(map[string]any)
	if !ok {
		return map[string]any{"output": ret}
	}
	rest := make(map[string]any, len(d))
	for k, v := range d {
		if k != "error" && k != "refresh_worker" {
			rest[k] = v
		}
	}
	body := map[string]any{}
	if len(rest) > 0 {
		body["output"] = rest
	}
	if truthy(d["error"]) {
		body["error"] = d["error"]
	}
	if truthy(d["refresh_worker"]) {
		body["stopPod"] = true
	}
	return body
}

// truthy is Python's truth test for decoded JSON values.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case json.Number:
		f, err := v.Float64()
		return err != nil || f != 0
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// exceptionReport is the error string the SDK posts when a handler raises: json.dumps of
// an ordered dict, with Python's separators and ASCII escaping.
func (h ExampleHandler) exceptionReport(msg string) string {
	return pyDumps([][2]string{
		{"error_type", "<class 'RuntimeError'>"},
		{"error_message", msg},
		{"error_traceback", pythonTraceback(msg)},
		{"hostname", h.Hostname},
		{"worker_id", h.WorkerID},
		{"runpod_version", sdkVersion},
	})
}

// pythonTraceback imitates traceback.format_exc() for a RuntimeError raised by the handler.
func pythonTraceback(msg string) string {
	return "Traceback (most recent call last):\n" +
		"  File \"/handler.py\", line 1, in handler\n" +
		"    raise RuntimeError(input[\"raise\"])\n" +
		"RuntimeError: " + msg + "\n"
}
