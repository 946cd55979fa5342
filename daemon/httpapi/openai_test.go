package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/store"
)

// The OpenAI route's tests run the real scheduler behind the real handler;
// the test plays the worker through the scheduler's worker calls (Take,
// AddChunk, Done) on the fake worker newWorkersEnv starts.

type oaiResp struct {
	code   int
	header http.Header
	body   []byte
}

// oaiDo sends a request to the OpenAI route with the admin key.
func oaiDo(t *testing.T, e *workersEnv, ctx context.Context, method, path, body string) (*http.Response, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+"/v2/"+e.ep+"/openai"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+workersKey)
	req.Header.Set("Content-Type", "application/json")
	return e.srv.Client().Do(req)
}

// oaiAsync sends a request in the background and hands back the whole answer.
func oaiAsync(t *testing.T, e *workersEnv, method, path, body string) <-chan oaiResp {
	t.Helper()
	ch := make(chan oaiResp, 1)
	go func() {
		resp, err := oaiDo(t, e, context.Background(), method, path, body)
		if err != nil {
			ch <- oaiResp{code: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- oaiResp{code: resp.StatusCode, header: resp.Header, body: b}
	}()
	return ch
}

func waitResp(t *testing.T, ch <-chan oaiResp) oaiResp {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer from the OpenAI route within 10 s")
	}
	return oaiResp{}
}

// takeJob takes the next job as the endpoint's worker.
func takeJob(t *testing.T, e *workersEnv) scheduler.TakenJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		lease, err := e.s.Take(ctx, e.ep, e.w.spec.ID, 1, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(lease.Jobs) > 0 {
			lease.Delivered(true)
			return lease.Jobs[0]
		}
	}
	t.Fatal("no job to take within 10 s")
	return scheduler.TakenJob{}
}

func chunk(t *testing.T, e *workersEnv, id, output string) {
	t.Helper()
	if err := e.s.AddChunk(context.Background(), e.ep, e.w.spec.ID, id, []byte(output)); err != nil {
		t.Fatal(err)
	}
}

func finish(t *testing.T, e *workersEnv, id string, res scheduler.Result) {
	t.Helper()
	if err := e.s.Done(context.Background(), e.ep, e.w.spec.ID, id, res); err != nil {
		t.Fatal(err)
	}
}

// oaiError decodes {"error":{...}}.
func oaiError(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var v struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error == nil {
		t.Fatalf("not an OpenAI error body: %s (%v)", body, err)
	}
	return v.Error
}

func TestOpenAINonStreaming(t *testing.T) {
	e := newWorkersEnv(t)
	cases := []struct {
		name, method, path, body string
		wantInput                string
		output                   string
		want                     string
	}{
		{"chat: output[0] of the aggregate", "POST", "/v1/chat/completions",
			"{\n \"model\": \"m\", \"messages\": [{\"role\":\"user\",\"content\":\"hi\"}]}",
			`{"openai_route":"/v1/chat/completions","openai_input":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`,
			`[{"id":"c1","object":"chat.completion"},{"ignored":true}]`, `{"id":"c1","object":"chat.completion"}`},
		{"models GET has no openai_input", "GET", "/v1/models", "",
			`{"openai_route":"/v1/models"}`,
			`[{"object":"list","data":[]}]`, `{"object":"list","data":[]}`},
		{"a body-less POST, double slashes", "POST", "//v1//completions", "  ",
			`{"openai_route":"/v1/completions"}`,
			`{"plain":"object"}`, `{"plain":"object"}`},
		{"stream false is not a stream", "POST", "/v1/completions", `{"stream":false,"prompt":"p"}`,
			`{"openai_route":"/v1/completions","openai_input":{"stream":false,"prompt":"p"}}`,
			`["text"]`, `"text"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := oaiAsync(t, e, tc.method, tc.path, tc.body)
			job := takeJob(t, e)
			if string(job.Input) != tc.wantInput {
				t.Errorf("job input %s, want %s", job.Input, tc.wantInput)
			}
			finish(t, e, job.ID, scheduler.Result{Output: json.RawMessage(tc.output)})
			r := waitResp(t, ch)
			if r.code != 200 || string(r.body) != tc.want {
				t.Fatalf("answer %d %s, want 200 %s", r.code, r.body, tc.want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := r.header.Get("X-Ember-Job-Id"); got != job.ID {
				t.Errorf("X-Ember-Job-Id %q, want %s", got, job.ID)
			}
			// An ordinary /run job: durable, readable through /status.
			v, err := e.s.Status(e.ep, job.ID)
			if err != nil || v.Status != store.Completed || strings.HasPrefix(job.ID, "sync-") {
				t.Errorf("job %s afterwards: %+v %v", job.ID, v, err)
			}
		})
	}
}

func TestOpenAIRequestErrors(t *testing.T) {
	e := newWorkersEnv(t)
	big := `{"x":"` + strings.Repeat("a", limits.RunBody) + `"}`
	cases := []struct {
		name, path, body, auth, ep string
		code                       int
		typ, msg                   string
	}{
		{"bad JSON", "/v1/chat/completions", `{"model":`, "", "", 400, "invalid_request_error", "not valid JSON"},
		{"trailing garbage", "/v1/chat/completions", `{"a":1}}`, "", "", 400, "invalid_request_error", "not valid JSON"},
		{"array body", "/v1/chat/completions", `[{"a":1}]`, "", "", 400, "invalid_request_error", "must be a JSON object, got an array"},
		{"string body", "/v1/chat/completions", `"hi"`, "", "", 400, "invalid_request_error", "must be a JSON object, got a string"},
		{"too big", "/v1/chat/completions", big, "", "", 413, "invalid_request_error", "10 MiB"},
		{"no key", "/v1/models", "", "none", "", 401, "authentication_error", "API key"},
		{"wrong key", "/v1/models", "", "Bearer nope", "", 401, "authentication_error", "API key"},
		{"unknown endpoint", "/v1/models", "", "", "nosuchep", 404, "invalid_request_error", "nosuchep"},
		{"no v1", "/chat/completions", `{}`, "", "", 404, "invalid_request_error", "/openai/v1/"},
		{"v1 alone", "/v1", `{}`, "", "", 404, "invalid_request_error", "/openai/v1/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := e.ep
			if tc.ep != "" {
				ep = tc.ep
			}
			req, err := http.NewRequest("POST", e.srv.URL+"/v2/"+ep+"/openai"+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			switch tc.auth {
			case "":
				req.Header.Set("Authorization", "Bearer "+workersKey)
			case "none":
			default:
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, b)
			}
			oe := oaiError(t, b)
			if oe["type"] != tc.typ || oe["code"] != float64(tc.code) || !strings.Contains(oe["message"].(string), tc.msg) {
				t.Errorf("error %v, want type %s, code %d and a message naming %q", oe, tc.typ, tc.code, tc.msg)
			}
		})
	}
	if h, _ := e.s.Health(e.ep); h.Jobs.InQueue != 0 || h.Jobs.InProgress != 0 {
		t.Errorf("refused requests queued jobs: %+v", h.Jobs)
	}
}

// TestOpenAIJobFailures: a FAILED job's error becomes an OpenAI error, with
// the worker's own status when its error is an OpenAI error object.
func TestOpenAIJobFailures(t *testing.T) {
	e := newWorkersEnv(t)
	cases := []struct {
		name   string
		err    string
		code   int
		expect map[string]any
	}{
		{"SDK str() of a yielded error dict",
			`{'message': 'model not found', 'type': 'invalid_request_error', 'code': 404}`, 404,
			map[string]any{"message": "model not found", "type": "invalid_request_error", "code": float64(404)}},
		{"worker-vllm ErrorResponse str()",
			`{'object': 'error', 'message': "can't do \u00e9", 'type': 'BadRequestError', 'param': None, 'code': 400}`, 400,
			map[string]any{"object": "error", "message": "can't do é", "type": "BadRequestError", "param": nil, "code": float64(400)}},
		{"dict error posted as JSON, nested under error",
			`{"error":{"message":"slow down","type":"rate_limit","code":429}}`, 429,
			map[string]any{"message": "slow down", "type": "rate_limit", "code": float64(429)}},
		{"error string holding a dict", `{'error': "{'message': 'x', 'code': 503}"}`, 503,
			map[string]any{"message": "x", "type": "server_error", "code": float64(503)}},
		{"code outside 400..599", `{'message': 'odd', 'type': 't', 'code': 200}`, 500,
			map[string]any{"message": "odd", "type": "t", "code": float64(200)}},
		{"string code", `{"message":"m","type":"invalid_request_error","code":"model_not_found"}`, 500,
			map[string]any{"message": "m", "type": "invalid_request_error", "code": "model_not_found"}},
		{"no code", `{'message': 'quiet'}`, 500,
			map[string]any{"message": "quiet", "type": "server_error", "code": float64(500)}},
		{"generator exception", "handler: boom \ntraceback: Traceback ...", 500,
			map[string]any{"message": "handler: boom \ntraceback: Traceback ...", "type": "server_error", "code": float64(500)}},
		{"dict without message", `{"error_type": "<class 'RuntimeError'>", "error_message": "x"}`, 500,
			map[string]any{"message": `{"error_type": "<class 'RuntimeError'>", "error_message": "x"}`, "type": "server_error", "code": float64(500)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := oaiAsync(t, e, "POST", "/v1/chat/completions", `{"model":"error"}`)
			job := takeJob(t, e)
			finish(t, e, job.ID, scheduler.Result{HasError: true, Error: tc.err})
			r := waitResp(t, ch)
			if r.code != tc.code {
				t.Fatalf("status %d, want %d: %s", r.code, tc.code, r.body)
			}
			if got := oaiError(t, r.body); !reflect.DeepEqual(got, tc.expect) {
				t.Errorf("error %v, want %v", got, tc.expect)
			}
		})
	}
}

func TestOpenAICancelledAndTimedOut(t *testing.T) {
	e := newWorkersEnv(t)
	ch := oaiAsync(t, e, "POST", "/v1/completions", `{"prompt":"p"}`)
	job := takeJob(t, e)
	if _, err := e.s.Cancel(context.Background(), e.ep, job.ID); err != nil {
		t.Fatal(err)
	}
	r := waitResp(t, ch)
	if oe := oaiError(t, r.body); r.code != 503 || oe["code"] != float64(503) || !strings.Contains(oe["message"].(string), "cancelled") {
		t.Errorf("cancelled job: %d %s, want 503 saying cancelled", r.code, r.body)
	}

	code, obj := openAIJobError(scheduler.JobView{ID: "j", Status: store.TimedOut, Error: "execution timeout of 5000 ms exceeded"})
	if code != 504 || !strings.Contains(obj["message"].(string), "execution timeout of 5000 ms") || obj["type"] != "server_error" {
		t.Errorf("timed out: %d %v", code, obj)
	}
	code, obj = openAIGoneError("j", scheduler.ErrNotFound)
	if code != 504 || !strings.Contains(obj["message"].(string), "expired") {
		t.Errorf("vanished job: %d %v", code, obj)
	}
}

// TestOpenAICompletedWithoutOutput: an aggregate that is empty is a 502.
func TestOpenAICompletedWithoutOutput(t *testing.T) {
	e := newWorkersEnv(t)
	for _, out := range []string{`[]`, `null`, ``} {
		ch := oaiAsync(t, e, "GET", "/v1/models", "")
		job := takeJob(t, e)
		res := scheduler.Result{}
		if out != "" {
			res.Output = json.RawMessage(out)
		}
		finish(t, e, job.ID, res)
		r := waitResp(t, ch)
		if oe := oaiError(t, r.body); r.code != 502 || !strings.Contains(oe["message"].(string), "without an output") {
			t.Errorf("output %q: %d %s, want 502", out, r.code, r.body)
		}
	}
}

// sseReader reads a response body event by event.
type sseReader struct {
	t  *testing.T
	br *bufio.Reader
}

// next returns the next event's text including its blank line, or "" at EOF.
func (s sseReader) next() string {
	s.t.Helper()
	var b strings.Builder
	for {
		line, err := s.br.ReadString('\n')
		b.WriteString(line)
		if line == "\n" || err != nil {
			return b.String()
		}
	}
}

func startStream(t *testing.T, e *workersEnv, ctx context.Context, body string) (*http.Response, sseReader) {
	t.Helper()
	resp, err := oaiDo(t, e, ctx, "POST", "/v1/chat/completions", body)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream answered %d: %s", resp.StatusCode, b)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	return resp, sseReader{t: t, br: bufio.NewReader(resp.Body)}
}

// TestOpenAIStreaming: chunks are relayed as they arrive, each kind in its
// SSE form, and [DONE] is added once.
func TestOpenAIStreaming(t *testing.T) {
	e := newWorkersEnv(t)
	resp, sse := startStream(t, e, context.Background(), `{"model":"m","stream":true,"messages":[]}`)
	job := takeJob(t, e)
	if resp.Header.Get("X-Ember-Job-Id") != job.ID {
		t.Errorf("X-Ember-Job-Id %q, want %s", resp.Header.Get("X-Ember-Job-Id"), job.ID)
	}
	if !strings.Contains(string(job.Input), `"stream":true`) {
		t.Errorf("job input %s", job.Input)
	}
	// Each event must arrive before the next chunk exists: it was flushed.
	steps := []struct{ chunk, want string }{
		{`"data: {\"a\":1}\n\n"`, "data: {\"a\":1}\n\n"},
		{`{"b": 2}`, "data: {\"b\":2}\n\n"},
		{`"data: {\"open\":1}"`, "data: {\"open\":1}\n\n"},
		{`"data: {\"half\":1}\n"`, "data: {\"half\":1}\n\n"},
		{`[{"c":3},"data: {\"d\":4}\n\n",5]`, "data: {\"c\":3}\n\n"},
	}
	for _, st := range steps {
		chunk(t, e, job.ID, st.chunk)
		if got := sse.next(); got != st.want {
			t.Fatalf("after chunk %s read %q, want %q", st.chunk, got, st.want)
		}
	}
	for _, want := range []string{"data: {\"d\":4}\n\n", "data: 5\n\n"} {
		if got := sse.next(); got != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	finish(t, e, job.ID, scheduler.Result{Output: json.RawMessage(`[]`)})
	rest, _ := io.ReadAll(sse.br)
	if string(rest) != "data: [DONE]\n\n" {
		t.Errorf("after the job ended: %q, want one data: [DONE]", rest)
	}
}

// TestOpenAIKeepAlive: a silent stream gets SSE comments, which OpenAI
// clients skip, and still ends normally.
func TestOpenAIKeepAlive(t *testing.T) {
	old := openAIKeepAlive
	openAIKeepAlive = 50 * time.Millisecond
	t.Cleanup(func() { openAIKeepAlive = old })
	e := newWorkersEnv(t)
	_, sse := startStream(t, e, context.Background(), `{"stream":true}`)
	for range 2 {
		if got := sse.next(); got != ": keep-alive\n\n" {
			t.Fatalf("silent queued stream: read %q, want a keep-alive comment", got)
		}
	}
	job := takeJob(t, e)
	chunk(t, e, job.ID, `"data: {}\n\n"`)
	for {
		got := sse.next()
		if got == "data: {}\n\n" {
			break
		}
		if got != ": keep-alive\n\n" {
			t.Fatalf("read %q, want the chunk", got)
		}
	}
	finish(t, e, job.ID, scheduler.Result{Output: json.RawMessage(`[]`)})
	rest, _ := io.ReadAll(sse.br)
	if got := strings.ReplaceAll(string(rest), ": keep-alive\n\n", ""); got != "data: [DONE]\n\n" {
		t.Errorf("end of stream %q", rest)
	}
}

// TestOpenAIStreamWorkerDone: the worker's own [DONE] is not repeated, and
// chunks posted before the stream is read are all delivered.
func TestOpenAIStreamWorkerDone(t *testing.T) {
	e := newWorkersEnv(t)
	ch := oaiAsync(t, e, "POST", "/v1/chat/completions", `{"stream":true}`)
	job := takeJob(t, e)
	chunk(t, e, job.ID, `"data: {\"w\":\"a\"}\n\n"`)
	chunk(t, e, job.ID, `"data: {\"w\":\"b\"}\n\ndata: [DONE]\n\n"`)
	finish(t, e, job.ID, scheduler.Result{Output: json.RawMessage(`["x","y"]`)})
	r := waitResp(t, ch)
	want := "data: {\"w\":\"a\"}\n\ndata: {\"w\":\"b\"}\n\ndata: [DONE]\n\n"
	if r.code != 200 || string(r.body) != want {
		t.Errorf("stream %d %q, want %q", r.code, r.body, want)
	}
}

// TestOpenAIStreamFailure: a job that fails mid-stream ends with an error
// event, then [DONE].
func TestOpenAIStreamFailure(t *testing.T) {
	e := newWorkersEnv(t)
	ch := oaiAsync(t, e, "POST", "/v1/chat/completions", `{"stream":true}`)
	job := takeJob(t, e)
	chunk(t, e, job.ID, `"data: {\"n\":1}\n\n"`)
	finish(t, e, job.ID, scheduler.Result{HasError: true, Error: `{'message': 'model not found', 'type': 'invalid_request_error', 'code': 404}`})
	r := waitResp(t, ch)
	events := strings.SplitAfter(string(r.body), "\n\n")
	if r.code != 200 || len(events) != 4 || events[0] != "data: {\"n\":1}\n\n" || events[2] != "data: [DONE]\n\n" || events[3] != "" {
		t.Fatalf("stream %d %q", r.code, r.body)
	}
	oe := oaiError(t, []byte(strings.TrimSpace(strings.TrimPrefix(events[1], "data: "))))
	if oe["message"] != "model not found" || oe["code"] != float64(404) {
		t.Errorf("error event %v", oe)
	}
}

// TestOpenAIDisconnectCancels: a client that goes away, streaming or not,
// gets its job cancelled.
func TestOpenAIDisconnectCancels(t *testing.T) {
	e := newWorkersEnv(t)
	for _, stream := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		var job scheduler.TakenJob
		if stream {
			_, sse := startStream(t, e, ctx, `{"stream":true}`)
			job = takeJob(t, e)
			chunk(t, e, job.ID, `"data: {}\n\n"`)
			if got := sse.next(); got != "data: {}\n\n" {
				t.Fatalf("first event %q", got)
			}
		} else {
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := oaiDo(t, e, ctx, "POST", "/v1/completions", `{}`)
				if err == nil {
					resp.Body.Close()
				}
			}()
			job = takeJob(t, e)
			defer func() { <-done }()
		}
		cancel()
		deadline := time.Now().Add(10 * time.Second)
		for {
			v, err := e.s.Status(e.ep, job.ID)
			if err == nil && v.Status == store.Cancelled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream=%v: job %s is %v (%v) 10 s after the client left, want CANCELLED", stream, job.ID, v.Status, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestSSEChunk(t *testing.T) {
	cases := []struct {
		out, want string
		done      bool
	}{
		{`"data: x\n\n"`, "data: x\n\n", false},
		{`"data: x"`, "data: x\n\n", false},
		{`"data: x\r\n\r\n"`, "data: x\r\n\r\n", false},
		{`""`, "", false},
		{`"data: [DONE]\n\n"`, "data: [DONE]\n\n", true},
		{`"data: a\n\ndata:[DONE]"`, "data: a\n\ndata:[DONE]\n\n", true},
		{`"data: [DONE] later"`, "data: [DONE] later\n\n", false},
		{`{"k": [1, 2]}`, "data: {\"k\":[1,2]}\n\n", false},
		{`[]`, "", false},
		{`[null,"data: [DONE]\n\n"]`, "data: null\n\ndata: [DONE]\n\n", true},
		{`42`, "data: 42\n\n", false},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		done := sseChunk(&buf, json.RawMessage(tc.out))
		if buf.String() != tc.want || done != tc.done {
			t.Errorf("sseChunk(%s) = %q, %v; want %q, %v", tc.out, buf.String(), done, tc.want, tc.done)
		}
	}
}
