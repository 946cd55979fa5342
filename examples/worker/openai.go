package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// OpenAI mode (docs/compat.md, OpenAI route): a job whose input has "openai_route" is
// answered the way worker-vllm answers the platform's /openai/v1/... passthrough, as a
// generator handler started with return_aggregate_stream. The "model" is an echo: the
// completion text is the last chat message's content, or the prompt.

// echoModel is the one model the example worker serves.
const echoModel = "ember-echo"

// openAIRequest is the passthrough part of a job input.
type openAIRequest struct {
	route string
	// body is openai_input; nil when absent or not an object (GET /models has none).
	body map[string]any
}

// openAIError is an error the handler yields, {"error": {message, type, code}}, in
// worker-vllm's shape. The SDK never posts it as a chunk: it ends the stream and the job
// fails with str() of the inner dict as its error.
type openAIError struct {
	Message string
	Type    string
	Code    int
}

// pyStr is Python's str() of the error dict, keys in insertion order.
func (e openAIError) pyStr() string {
	return "{'message': " + pyRepr(e.Message) + ", 'type': " + pyRepr(e.Type) + ", 'code': " + strconv.Itoa(e.Code) + "}"
}

// parseOpenAI reads openai_route and openai_input; nil when the input has no route.
func parseOpenAI(m map[string]any) *openAIRequest {
	route, ok := m["openai_route"].(string)
	if !ok {
		return nil
	}
	body, _ := m["openai_input"].(map[string]any)
	return &openAIRequest{route: route, body: body}
}

// openAIYields lists what the handler yields for a request, in order. The last value may
// be an openAIError.
func openAIYields(req *openAIRequest, jobID string, created int64) []any {
	model := echoModel
	if s, ok := req.body["model"].(string); ok && s != "" {
		model = s
	}
	if model == "error" {
		return []any{openAIError{Message: "model not found", Type: "invalid_request_error", Code: 404}}
	}
	stream, _ := req.body["stream"].(bool)
	var text, prompt string
	chat := false
	switch req.route {
	case "/v1/models":
		return []any{map[string]any{"object": "list", "data": []any{map[string]any{"id": echoModel, "object": "model"}}}}
	case "/v1/chat/completions":
		chat = true
		text, prompt = chatText(req.body["messages"])
	case "/v1/completions":
		text = promptText(req.body["prompt"])
		prompt = text
	default:
		return []any{openAIError{Message: "route " + req.route + " is not served by the example worker", Type: "invalid_request_error", Code: 404}}
	}
	id, object := "cmpl-"+jobID, "text_completion"
	if chat {
		id = "chatcmpl-" + jobID
	}
	words := strings.Fields(text)
	if !stream {
		choice := map[string]any{"index": 0, "text": text, "finish_reason": "stop", "logprobs": nil}
		if chat {
			object = "chat.completion"
			choice = map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": nil}
		}
		p, c := len(strings.Fields(prompt)), len(words)
		return []any{map[string]any{
			"id": id, "object": object, "created": created, "model": model,
			"choices": []any{choice},
			"usage":   map[string]any{"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
		}}
	}
	if chat {
		object = "chat.completion.chunk"
	}
	if len(words) == 0 {
		words = []string{""}
	}
	out := make([]any, 0, len(words)+1)
	for i, w := range words {
		if i > 0 {
			w = " " + w
		}
		var finish any
		if i == len(words)-1 {
			finish = "stop"
		}
		choice := map[string]any{"index": 0, "text": w, "finish_reason": finish, "logprobs": nil}
		if chat {
			delta := map[string]any{"content": w}
			if i == 0 {
				delta["role"] = "assistant"
			}
			choice = map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}
		}
		chunk := map[string]any{"id": id, "object": object, "created": created, "model": model, "choices": []any{choice}}
		data, err := marshalJSON(chunk)
		if err != nil { // cannot happen: strings, numbers and nil only
			data = []byte(`{}`)
		}
		out = append(out, "data: "+string(data)+"\n\n")
	}
	return append(out, "data: [DONE]\n\n")
}

// chatText returns the echo (the last message's content) and the whole prompt (every
// message's content) of a chat request.
func chatText(messages any) (last, all string) {
	list, _ := messages.([]any)
	var parts []string
	for _, m := range list {
		msg, _ := m.(map[string]any)
		last = contentText(msg["content"])
		parts = append(parts, last)
	}
	return last, strings.Join(parts, " ")
}

// contentText reads a message content: a string, or a list of parts whose "text" parts
// are joined with spaces.
func contentText(c any) string {
	switch c := c.(type) {
	case string:
		return c
	case []any:
		var texts []string
		for _, p := range c {
			if part, ok := p.(map[string]any); ok {
				if t, ok := part["text"].(string); ok {
					texts = append(texts, t)
				}
			}
		}
		return strings.Join(texts, " ")
	}
	return ""
}

// promptText reads a completions prompt: a string, or a list whose strings are joined
// with spaces.
func promptText(p any) string {
	switch p := p.(type) {
	case string:
		return p
	case []any:
		var texts []string
		for _, s := range p {
			if t, ok := s.(string); ok {
				texts = append(texts, t)
			}
		}
		return strings.Join(texts, " ")
	}
	return ""
}

// openAI runs an OpenAI passthrough job as a generator with return_aggregate_stream: one
// chunk post per yielded value (stream_delay_ms before each), then the final isStream=true
// post with all of them. A yielded error is not posted as a chunk; the final body is
// {"error": str(error dict)}, as the SDK sends it.
func (h ExampleHandler) openAI(ctx context.Context, in instructions, job *Job, e Emitter) (Outcome, error) {
	yields := openAIYields(in.openai, job.ID, time.Now().Unix())
	chunks := make([]any, 0, len(yields))
	for _, y := range yields {
		if err := sleepCtx(ctx, in.streamDelay); err != nil {
			return Outcome{}, err
		}
		if oe, ok := y.(openAIError); ok {
			return Outcome{Body: withStopPod(map[string]any{"error": oe.pyStr()}, in.refresh), IsStream: true}, nil
		}
		e.Chunk(ctx, y)
		chunks = append(chunks, y)
	}
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	return Outcome{Body: withStopPod(map[string]any{"output": chunks}, in.refresh), IsStream: true}, nil
}

// pyRepr is Python 3's repr() of a str: single quotes unless the text has a single quote
// and no double quote, backslash escapes for the quote, backslash and control
// characters, and \x, \u or \U escapes for what Python does not consider printable.
func pyRepr(s string) string {
	q := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteRune(q)
	for _, r := range s {
		switch {
		case r == '\\' || r == q:
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x7f || unicode.IsPrint(r):
			b.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteRune(q)
	return b.String()
}
