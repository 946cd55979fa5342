package main

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// openAIReq builds a request as the handler sees it (numbers as json.Number).
func openAIReq(t *testing.T, route, body string) *openAIRequest {
	t.Helper()
	m := map[string]any{"openai_route": route}
	if body != "" {
		m["openai_input"] = decodeJSON(t, []byte(body))
	}
	return parseOpenAI(m)
}

// jsonEqual compares a yielded value with the expected JSON text.
func jsonEqual(t *testing.T, what string, got any, want string) {
	t.Helper()
	b, err := marshalJSON(got)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := decodeJSON(t, b), decodeJSON(t, []byte(want)); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, b, want)
	}
}

func TestOpenAIYieldsNonStreaming(t *testing.T) {
	cases := []struct {
		name, route, body, want string
	}{
		{"models", "/v1/models", "",
			`{"object":"list","data":[{"id":"ember-echo","object":"model"}]}`},
		{"chat echoes the last message", "/v1/chat/completions",
			`{"model":"m1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}]}`,
			`{"id":"chatcmpl-j1","object":"chat.completion","created":7,"model":"m1",
			  "choices":[{"index":0,"message":{"role":"assistant","content":"hello there world"},"finish_reason":"stop","logprobs":null}],
			  "usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`},
		{"chat content parts, default model", "/v1/chat/completions",
			`{"messages":[{"role":"user","content":[{"type":"text","text":"a b"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"c"}]}],"stream":false}`,
			`{"id":"chatcmpl-j1","object":"chat.completion","created":7,"model":"ember-echo",
			  "choices":[{"index":0,"message":{"role":"assistant","content":"a b c"},"finish_reason":"stop","logprobs":null}],
			  "usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}`},
		{"completions echo the prompt", "/v1/completions", `{"model":"m2","prompt":"one two"}`,
			`{"id":"cmpl-j1","object":"text_completion","created":7,"model":"m2",
			  "choices":[{"index":0,"text":"one two","finish_reason":"stop","logprobs":null}],
			  "usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}`},
		{"completions prompt list", "/v1/completions", `{"prompt":["x","y"]}`,
			`{"id":"cmpl-j1","object":"text_completion","created":7,"model":"ember-echo",
			  "choices":[{"index":0,"text":"x y","finish_reason":"stop","logprobs":null}],
			  "usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}`},
		{"chat without messages", "/v1/chat/completions", "",
			`{"id":"chatcmpl-j1","object":"chat.completion","created":7,"model":"ember-echo",
			  "choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop","logprobs":null}],
			  "usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ys := openAIYields(openAIReq(t, tc.route, tc.body), "j1", 7)
			if len(ys) != 1 {
				t.Fatalf("%d yields, want 1: %v", len(ys), ys)
			}
			jsonEqual(t, "yield", ys[0], tc.want)
		})
	}
}

func TestOpenAIYieldsErrors(t *testing.T) {
	for _, tc := range []struct{ route, body, want string }{
		{"/v1/chat/completions", `{"model":"error","messages":[{"role":"user","content":"hi"}],"stream":true}`,
			`{'message': 'model not found', 'type': 'invalid_request_error', 'code': 404}`},
		{"/v1/completions", `{"model":"error"}`,
			`{'message': 'model not found', 'type': 'invalid_request_error', 'code': 404}`},
		{"/v1/embeddings", `{"input":"x"}`,
			`{'message': 'route /v1/embeddings is not served by the example worker', 'type': 'invalid_request_error', 'code': 404}`},
	} {
		ys := openAIYields(openAIReq(t, tc.route, tc.body), "j1", 7)
		if len(ys) != 1 {
			t.Fatalf("%s: %d yields, want the error alone", tc.route, len(ys))
		}
		oe, ok := ys[0].(openAIError)
		if !ok {
			t.Fatalf("%s: yield %v is not an error", tc.route, ys[0])
		}
		if got := oe.pyStr(); got != tc.want {
			t.Errorf("%s: str() %s, want %s", tc.route, got, tc.want)
		}
	}
}

// sseEvents checks each yield is one "data: <json>\n\n" event and returns the decoded
// payloads, the last being the [DONE] marker.
func sseEvents(t *testing.T, ys []any) []map[string]any {
	t.Helper()
	if len(ys) < 2 || ys[len(ys)-1] != "data: [DONE]\n\n" {
		t.Fatalf("stream yields do not end with a lone data: [DONE]: %q", ys)
	}
	var out []map[string]any
	for _, y := range ys[:len(ys)-1] {
		s, ok := y.(string)
		if !ok || !strings.HasPrefix(s, "data: ") || !strings.HasSuffix(s, "\n\n") || strings.Count(s, "\n") != 2 {
			t.Fatalf("yield %q is not one SSE data event", y)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(s, "data: "), "\n\n")), &m); err != nil {
			t.Fatalf("event %q: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

func TestOpenAIYieldsStreaming(t *testing.T) {
	ys := openAIYields(openAIReq(t, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"the  quick brown"}]}`), "j1", 7)
	evs := sseEvents(t, ys)
	if len(evs) != 3 {
		t.Fatalf("%d chunk events, want one per word (3)", len(evs))
	}
	var text []string
	for i, ev := range evs {
		if ev["object"] != "chat.completion.chunk" || ev["id"] != "chatcmpl-j1" || ev["model"] != "m" || ev["created"] != float64(7) {
			t.Errorf("event %d header fields: %v", i, ev)
		}
		choice := ev["choices"].([]any)[0].(map[string]any)
		delta := choice["delta"].(map[string]any)
		text = append(text, delta["content"].(string))
		if _, hasRole := delta["role"]; hasRole != (i == 0) {
			t.Errorf("event %d: role present %v, want it in the first chunk only", i, hasRole)
		}
		if want := map[bool]any{true: "stop", false: nil}[i == len(evs)-1]; choice["finish_reason"] != want {
			t.Errorf("event %d finish_reason %v, want %v", i, choice["finish_reason"], want)
		}
	}
	if got := strings.Join(text, ""); got != "the quick brown" {
		t.Errorf("streamed text %q", got)
	}

	ys = openAIYields(openAIReq(t, "/v1/completions", `{"stream":true,"prompt":"a b"}`), "j2", 7)
	evs = sseEvents(t, ys)
	if len(evs) != 2 {
		t.Fatalf("%d completion events, want 2", len(evs))
	}
	for i, want := range []string{"a", " b"} {
		if evs[i]["object"] != "text_completion" || evs[i]["choices"].([]any)[0].(map[string]any)["text"] != want {
			t.Errorf("completion event %d: %v", i, evs[i])
		}
	}

	// Nothing to echo: still one (empty, final) chunk before [DONE].
	ys = openAIYields(openAIReq(t, "/v1/chat/completions", `{"stream":true,"messages":[]}`), "j3", 7)
	if evs = sseEvents(t, ys); len(evs) != 1 {
		t.Fatalf("%d events for an empty echo, want 1", len(evs))
	}
}

func TestPyRepr(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         `'plain'`,
		"it's":          `"it's"`,
		`say "hi"`:      `'say "hi"'`,
		`it's "x"`:      `'it\'s "x"'`,
		"a\\b":          `'a\\b'`,
		"l1\nl2\t\r":    `'l1\nl2\t\r'`,
		"\x00\x1f\x7f":  `'\x00\x1f\x7f'`,
		"é 😀 ü":         `'é 😀 ü'`,
		"nb\u00a0sp":    `'nb\xa0sp'`,
		"zw\u200bsp":    `'zw\u200bsp'`,
		"\U000e0001tag": `'\U000e0001tag'`,
		"":              `''`,
	} {
		if got := pyRepr(in); got != want {
			t.Errorf("pyRepr(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestOpenAIStreamJob runs a streaming chat job through the worker: one chunk post per
// SSE string, stream_delay_ms read from the request body, then the aggregate.
func TestOpenAIStreamJob(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, nil)
	d.queue(jobAnswer(`{"id":"j1","input":{"openai_route":"/v1/chat/completions","openai_input":{"model":"m","stream":true,"stream_delay_ms":30,"messages":[{"role":"user","content":"hi you"}]}}}`))
	d.waitFor("final post", func() bool { return len(d.of("done")) == 1 })
	posts := d.jobPosts("j1")
	if len(posts) != 4 {
		t.Fatalf("%d posts, want 3 chunks and the final one:\n%s", len(posts), d.dump())
	}
	var chunks []any
	for i, p := range posts[:3] {
		if want := streamPost("j1", "").url; p.URL != want {
			t.Errorf("post %d to %s, want %s", i, p.URL, want)
		}
		checkPostHeaders(t, p)
		var body map[string]any
		if err := json.Unmarshal(p.Body, &body); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, body["output"])
		if i > 0 {
			if gap := p.At.Sub(posts[i-1].At); gap < 30*time.Millisecond {
				t.Errorf("chunk %d came %v after the previous one, want at least stream_delay_ms (30 ms)", i, gap)
			}
		}
	}
	evs := sseEvents(t, chunks)
	if len(evs) != 2 || !strings.HasSuffix(chunks[2].(string), "[DONE]\n\n") {
		t.Errorf("chunks %q", chunks)
	}
	final := posts[3]
	if want := donePost("j1", "true", "").url; final.URL != want {
		t.Errorf("final post to %s, want %s", final.URL, want)
	}
	var body map[string]any
	if err := json.Unmarshal(final.Body, &body); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(body, map[string]any{"output": chunks}) {
		t.Errorf("final body %s, want the aggregate of the chunks", final.Body)
	}
}

// TestBlockIgnoresStop: block_ms is not interrupted by a stop signal (a synchronous Python
// handler blocks the event loop); the job stays held, then posts nothing.
func TestBlockIgnoresStop(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, map[string]string{"RUNPOD_PING_INTERVAL": "20"})
	d.queue(jobAnswer(`{"id":"j1","input":{"block_ms":500,"output":"late"}}`))
	d.waitFor("the job held in a ping", func() bool {
		return slices.ContainsFunc(d.of("ping"), func(r recorded) bool { return strings.Contains(r.URL, "job_id=j1") })
	})
	stopped := time.Now()
	d.stops <- `{"jobsToStop":["j1"]}`
	d.waitFor("the stop poll answered", func() bool { return len(d.stops) == 0 })
	time.Sleep(200 * time.Millisecond)
	if !slices.ContainsFunc(d.of("ping"), func(r recorded) bool {
		return r.At.After(stopped.Add(150*time.Millisecond)) && strings.Contains(r.URL, "job_id=j1")
	}) {
		t.Fatal("the blocked job was let go within 150 ms of its stop signal")
	}
	d.waitFor("an idle take after the block", func() bool {
		return slices.ContainsFunc(d.of("take"), func(r recorded) bool {
			return r.At.After(stopped) && strings.HasSuffix(r.URL, "job_in_progress=0")
		})
	})
	time.Sleep(30 * time.Millisecond)
	if n := len(d.jobPosts("j1")); n != 0 {
		t.Errorf("a job stopped during its block posted %d times", n)
	}
}
