package tests

// End-to-end tests of the OpenAI-compatible route /v2/{ep}/openai/v1/...
// (docs/compat.md, OpenAI route) against a real emberd and the real
// example worker in OpenAI mode (process runtime), spoken to as an OpenAI
// client would: JSON in, JSON or server-sent events out.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// oaiClient bounds every request; streams carry their own deadline as well.
var oaiClient = &http.Client{Timeout: 90 * time.Second}

// oaiRequest sends a request to the endpoint's OpenAI base URL with the
// admin key as a Bearer token, as the OpenAI SDKs do.
func oaiRequest(t *testing.T, ctx context.Context, d *Daemon, ep, method, path, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.URL+"/v2/"+ep+"/openai/v1"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.Key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := oaiClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, d.Log())
	}
	return resp
}

// oaiCall sends a request and returns status, decoded JSON body and headers.
func oaiCall(t *testing.T, d *Daemon, ep, method, path, body string) (int, map[string]any, http.Header) {
	t.Helper()
	resp := oaiRequest(t, context.Background(), d, ep, method, path, body)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d body is not a JSON object: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m, resp.Header
}

// readSSE reads data: payloads until the body ends; comments and blank
// lines are skipped, as OpenAI clients do.
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	var data []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ":") {
			continue
		}
		payload, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("SSE line %q is not a data line", line)
		}
		data = append(data, payload)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read event stream: %v", err)
	}
	return data
}

func TestOpenAI_Route(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("openai", map[string]any{"workersMax": 2})

	t.Run("chat completion", func(t *testing.T) {
		code, m, hdr := oaiCall(t, d, ep, "POST", "/chat/completions",
			`{"model":"echo-1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello ember world"}]}`)
		if code != 200 {
			t.Fatalf("status %d: %v", code, m)
		}
		// The unwrapped response object, not the job's [object] output.
		choices, _ := m["choices"].([]any)
		if m["object"] != "chat.completion" || m["model"] != "echo-1" || len(choices) != 1 {
			t.Fatalf("answer %v, want one chat.completion for model echo-1", m)
		}
		msg := choices[0].(map[string]any)["message"].(map[string]any)
		if msg["role"] != "assistant" || msg["content"] != "hello ember world" {
			t.Errorf("message %v, want the echo of the last message", msg)
		}
		if usage := m["usage"].(map[string]any); usage["completion_tokens"] != float64(3) || usage["total_tokens"] != float64(8) {
			t.Errorf("usage %v", usage)
		}
		id := hdr.Get("X-Ember-Job-Id")
		if id == "" {
			t.Fatal("no X-Ember-Job-Id header")
		}
		st := d.JSON("GET", "/v2/"+ep+"/status/"+id, nil, 200)
		if st["status"] != "COMPLETED" || m["id"] != "chatcmpl-"+id {
			t.Errorf("the job behind it: %v (answer id %v)", st, m["id"])
		}
	})

	t.Run("models", func(t *testing.T) {
		code, m, _ := oaiCall(t, d, ep, "GET", "/models", "")
		want := map[string]any{"object": "list", "data": []any{map[string]any{"id": "ember-echo", "object": "model"}}}
		if code != 200 || !reflect.DeepEqual(m, want) {
			t.Errorf("GET /models: %d %v, want 200 %v", code, m, want)
		}
	})

	t.Run("completion", func(t *testing.T) {
		code, m, _ := oaiCall(t, d, ep, "POST", "/completions", `{"model":"echo-1","prompt":"once upon"}`)
		choices, _ := m["choices"].([]any)
		if code != 200 || m["object"] != "text_completion" || len(choices) != 1 || choices[0].(map[string]any)["text"] != "once upon" {
			t.Errorf("completion: %d %v", code, m)
		}
	})

	t.Run("streaming chat completion", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		resp := oaiRequest(t, ctx, d, ep, "POST", "/chat/completions",
			`{"model":"echo-1","stream":true,"stream_delay_ms":20,"messages":[{"role":"user","content":"the quick brown fox jumps"}]}`)
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("stream answered %d, Content-Type %q, Cache-Control %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
		}
		data := readSSE(t, resp.Body)
		if len(data) == 0 || data[len(data)-1] != "[DONE]" {
			t.Fatalf("events %q do not end with [DONE]", data)
		}
		var words []string
		for i, p := range data[:len(data)-1] {
			if p == "[DONE]" {
				t.Fatalf("[DONE] at event %d of %d: %q", i, len(data), data)
			}
			var ev struct {
				Object  string
				Model   string
				Choices []struct {
					Delta        struct{ Content string }
					FinishReason *string `json:"finish_reason"`
				}
			}
			if err := json.Unmarshal([]byte(p), &ev); err != nil {
				t.Fatalf("event %q: %v", p, err)
			}
			if ev.Object != "chat.completion.chunk" || ev.Model != "echo-1" || len(ev.Choices) != 1 {
				t.Fatalf("event %q", p)
			}
			words = append(words, ev.Choices[0].Delta.Content)
		}
		if got := strings.Join(words, ""); got != "the quick brown fox jumps" || len(words) != 5 {
			t.Errorf("streamed %q (%d chunks), want the 5 words in order", got, len(words))
		}
	})

	t.Run("error model", func(t *testing.T) {
		code, m, _ := oaiCall(t, d, ep, "POST", "/chat/completions", `{"model":"error","messages":[{"role":"user","content":"hi"}]}`)
		e, _ := m["error"].(map[string]any)
		if code != 404 || e["message"] != "model not found" || e["type"] != "invalid_request_error" || e["code"] != float64(404) {
			t.Errorf("error model: %d %v, want 404 with the worker's OpenAI error", code, m)
		}
		// Streaming: the headers are out already, so the error is an event.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		resp := oaiRequest(t, ctx, d, ep, "POST", "/chat/completions", `{"model":"error","stream":true}`)
		defer resp.Body.Close()
		data := readSSE(t, resp.Body)
		if len(data) != 2 || !strings.Contains(data[0], `"model not found"`) || data[1] != "[DONE]" {
			t.Errorf("streamed error model: %q, want an error event then [DONE]", data)
		}
	})

	t.Run("bad request", func(t *testing.T) {
		code, m, _ := oaiCall(t, d, ep, "POST", "/chat/completions", `{"model":`)
		e, _ := m["error"].(map[string]any)
		if msg, _ := e["message"].(string); code != 400 || e["type"] != "invalid_request_error" || !strings.Contains(msg, "JSON") {
			t.Errorf("bad JSON: %d %v", code, m)
		}
	})

	t.Run("client disconnect cancels the job", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		resp := oaiRequest(t, ctx, d, ep, "POST", "/chat/completions",
			`{"stream":true,"stream_delay_ms":300,"messages":[{"role":"user","content":"`+strings.Repeat("word ", 40)+`"}]}`)
		id := resp.Header.Get("X-Ember-Job-Id")
		if resp.StatusCode != 200 || id == "" {
			t.Fatalf("stream answered %d, job id %q", resp.StatusCode, id)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("first event line %q: %v", line, err)
		}
		cancel()
		resp.Body.Close()
		st := d.WaitStatus(ep, id, 20*time.Second, "CANCELLED", "COMPLETED", "FAILED", "TIMED_OUT")
		if st["status"] != "CANCELLED" {
			t.Errorf("job of a client that left mid-stream: %v, want CANCELLED", st)
		}
	})
}
