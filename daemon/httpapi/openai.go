package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// openAIKeepAlive is the longest silence on an event stream before a comment
// is written (a variable for the tests).
var openAIKeepAlive = 15 * time.Second

// openAIWaitStep is how long one Wait call holds before the loop checks again.
const openAIWaitStep = time.Minute

// serveOpenAI serves the OpenAI-compatible route, /v2/{ep}/openai/v1/...
// (docs/compat.md, OpenAI route). Every call, whatever its method and
// path, becomes an ordinary durable /run job on the endpoint, answered by
// the endpoint's worker (as worker-vllm does) and relayed back in OpenAI's
// shape:
//
//   - Input: {"openai_route":"/v1/<rest of the path>","openai_input":<body>};
//     a request without a body (GET /models) has no openai_input. A body,
//     when present, must be a JSON object (400 otherwise) of at most the
//     /run limit (10 MiB, 413 above it). The query string is not passed on.
//     Auth is the admin key, as on every client route; the worker checks
//     none. The endpoint's execution timeout and the default TTL apply.
//   - Every response carries X-Ember-Job-Id, the job's id, so the job can be
//     looked up with /status; the job is kept for the /run retention.
//   - Non-streaming (the body has no "stream": true): the request is held
//     until the job is terminal, with no cut-off of its own (the execution
//     timeout and the TTL bound it), then:
//     COMPLETED: 200 application/json with output[0] when the output is a
//     JSON array (a generator worker with return_aggregate_stream), else
//     the output itself; an absent, null or empty output is a 502.
//     FAILED: the worker's error as an OpenAI error object. When that error
//     is itself an OpenAI error (JSON, or the Python str() of a dict as the
//     SDK produces for a yielded {"error": {...}}, possibly nested under
//     "error"), its fields are passed on and a numeric code in 400..599
//     becomes the HTTP status (worker-vllm's "model not found" is a 404);
//     anything else is a 500 whose message is the job's error string.
//     TIMED_OUT: 504. CANCELLED (by /cancel or /purge-queue): 503, which
//     the OpenAI SDKs retry. A job that vanished (its TTL expired while it
//     waited in the queue): 504.
//   - Streaming ("stream": true): 200 text/event-stream with Cache-Control:
//     no-cache, headers flushed at once, then the job's stream chunks as the
//     worker posts them, each flushed: a string chunk is written as it is
//     (worker-vllm yields "data: {...}\n\n"; a missing blank line at its end
//     is added so events never run together); an object or other JSON value
//     as "data: <json>\n\n"; a list as one event per element (string
//     elements as they are). When the job is terminal, a FAILED, TIMED_OUT
//     or CANCELLED job adds a data: {"error":{...}} event (the same object
//     the non-streaming answer would carry), and "data: [DONE]\n\n" ends the
//     stream unless the worker sent it already (nothing is written after the
//     worker's [DONE]). An SSE comment (": keep-alive") is written after 15 s
//     without output, so proxies keep a long queue wait open; OpenAI
//     clients ignore comments.
//   - A client that goes away before the job is terminal gets its job
//     cancelled (/cancel semantics: the worker is told through job-stop), so
//     no GPU works on an answer nobody reads.
//
// Errors the daemon produces itself use the same shape,
// {"error":{"message","type","code"}}, where code is the HTTP status and
// type is invalid_request_error (4xx), authentication_error (401) or
// server_error (5xx). rest is the path after "openai".
func (h *Server) serveOpenAI(w http.ResponseWriter, r *http.Request, ep string, rest []string) {
	if len(rest) < 2 || rest[0] != "v1" {
		writeOpenAIError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path+"; OpenAI routes live under /v2/"+ep+"/openai/v1/ (for example /v2/"+ep+"/openai/v1/chat/completions)")
		return
	}
	route := "/v1/" + strings.Join(rest[1:], "/")
	if _, err := h.s.Endpoint(ep); err != nil {
		writeOpenAISchedErr(w, err)
		return
	}
	body, tooBig, _, err := readBody(w, r, limits.RunBody)
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	if tooBig {
		writeOpenAIError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the %d MiB (%d bytes) limit", limits.RunBody>>20, limits.RunBody))
		return
	}
	input, stream, err := openAIInput(route, body)
	if err != nil {
		writeOpenAIError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := h.s.Submit(r.Context(), ep, spec.Submission{Input: input})
	if err != nil {
		writeOpenAISchedErr(w, err)
		return
	}
	w.Header().Set("X-Ember-Job-Id", v.ID)
	if stream {
		h.openAIStream(w, r, ep, v.ID)
	} else {
		h.openAIWait(w, r, ep, v.ID)
	}
}

// openAIInput builds the job input and reports whether the client asked for
// a stream. An empty body gives no openai_input.
func openAIInput(route string, body []byte) (json.RawMessage, bool, error) {
	rt, err := json.Marshal(route)
	if err != nil {
		return nil, false, err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return json.RawMessage(`{"openai_route":` + string(rt) + `}`), false, nil
	}
	if !json.Valid(body) {
		var top map[string]json.RawMessage
		err := json.Unmarshal(body, &top)
		return nil, false, fmt.Errorf("request body is not valid JSON: %s", jsonErr(err))
	}
	if body[0] != '{' {
		return nil, false, fmt.Errorf("request body must be a JSON object, got %s", jsonKind(body[0]))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, false, fmt.Errorf("request body is not a JSON object: %s", jsonErr(err))
	}
	stream := false
	if raw, ok := top["stream"]; ok {
		_ = json.Unmarshal(raw, &stream) // anything but true means no stream
	}
	var b bytes.Buffer
	b.WriteString(`{"openai_route":`)
	b.Write(rt)
	b.WriteString(`,"openai_input":`)
	b.Write(compact(body))
	b.WriteByte('}')
	return b.Bytes(), stream, nil
}

func jsonKind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// cancelAbandoned cancels a job whose client went away.
func (h *Server) cancelAbandoned(r *http.Request, ep, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	v, err := h.s.Cancel(ctx, ep, id)
	if err != nil {
		h.log.Warn("openai route: cancel the job of a client that went away", "endpoint", ep, "job", id, "err", err)
		return
	}
	h.log.Info("openai route: client went away, job cancelled", "endpoint", ep, "job", id, "status", v.Status)
}

// openAIWait holds a non-streaming request until its job is terminal.
func (h *Server) openAIWait(w http.ResponseWriter, r *http.Request, ep, id string) {
	ctx := r.Context()
	for {
		v, err := h.s.Wait(ctx, ep, id, openAIWaitStep)
		if ctx.Err() != nil {
			if err != nil || !v.Status.Terminal() {
				h.cancelAbandoned(r, ep, id)
			}
			return
		}
		if err != nil {
			code, obj := openAIGoneError(id, err)
			writeOpenAIObject(w, code, obj)
			return
		}
		if !v.Status.Terminal() {
			continue
		}
		if v.Status == runpod.Completed {
			out := firstOutput(v.Output)
			if out == nil {
				writeOpenAIError(w, http.StatusBadGateway, "the worker completed job "+id+" without an output (a generator handler must be started with return_aggregate_stream)")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.Write(out)
			return
		}
		code, obj := openAIJobError(v)
		writeOpenAIObject(w, code, obj)
		return
	}
}

// firstOutput is output[0] for an array, the output itself otherwise; nil
// when there is nothing to answer with.
func firstOutput(out json.RawMessage) json.RawMessage {
	out = bytes.TrimSpace(out)
	if len(out) == 0 || string(out) == "null" {
		return nil
	}
	if out[0] != '[' {
		return out
	}
	var items []json.RawMessage
	if err := json.Unmarshal(out, &items); err != nil || len(items) == 0 {
		return nil
	}
	return compact(items[0])
}

// openAIStream relays the job's stream chunks as server-sent events.
func (h *Server) openAIStream(w http.ResponseWriter, r *http.Request, ep, id string) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	flush := func() bool {
		err := rc.Flush()
		return err == nil || errors.Is(err, http.ErrNotSupported)
	}
	send := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return flush()
	}
	if !flush() {
		h.cancelAbandoned(r, ep, id)
		return
	}
	sawDone := false
	lastWrite := time.Now()
	var buf bytes.Buffer
	for {
		// Hold no longer than the keep-alive is due (and at most the
		// scheduler's StreamHold).
		hold := max(openAIKeepAlive-time.Since(lastWrite), 10*time.Millisecond)
		v, err := h.s.Stream(ctx, ep, id, hold)
		if ctx.Err() != nil {
			h.cancelAbandoned(r, ep, id)
			return
		}
		if err != nil {
			code, obj := openAIGoneError(id, err)
			if !errors.Is(err, scheduler.ErrNotFound) {
				// The chunks cannot be read (disk): nobody will see this
				// job's answer, so it should not hold a worker either.
				h.cancelAbandoned(r, ep, id)
			}
			buf.Reset()
			writeSSEData(&buf, openAIErrorBody(code, obj))
			buf.WriteString("data: [DONE]\n\n")
			send(buf.Bytes())
			return
		}
		buf.Reset()
		for _, c := range v.Stream {
			if sseChunk(&buf, c.Output) {
				sawDone = true
			}
		}
		switch {
		case buf.Len() > 0:
		case !v.Status.Terminal() && time.Since(lastWrite) >= openAIKeepAlive:
			buf.WriteString(": keep-alive\n\n")
		}
		if buf.Len() > 0 {
			if !send(buf.Bytes()) {
				if !v.Status.Terminal() {
					h.cancelAbandoned(r, ep, id)
				}
				return
			}
			lastWrite = time.Now()
		}
		if v.Status.Terminal() && len(v.Stream) == 0 {
			h.finishStream(send, ep, id, v.Status, sawDone)
			return
		}
	}
}

// finishStream ends the event stream of a terminal job.
func (h *Server) finishStream(send func([]byte) bool, ep, id string, st runpod.Status, sawDone bool) {
	if sawDone {
		if st != runpod.Completed {
			h.log.Info("openai route: job ended after the worker's [DONE]; nothing more sent", "endpoint", ep, "job", id, "status", st)
		}
		return
	}
	var buf bytes.Buffer
	if st != runpod.Completed {
		v, err := h.s.Status(ep, id)
		var code int
		var obj map[string]any
		if err != nil {
			code, obj = openAIGoneError(id, err)
		} else {
			code, obj = openAIJobError(v)
		}
		writeSSEData(&buf, openAIErrorBody(code, obj))
	}
	buf.WriteString("data: [DONE]\n\n")
	send(buf.Bytes())
}

// sseChunk appends one stream chunk's output as SSE and reports whether it
// carried the [DONE] marker.
func sseChunk(buf *bytes.Buffer, out json.RawMessage) bool {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return false
	}
	switch out[0] {
	case '"':
		var s string
		if json.Unmarshal(out, &s) != nil {
			return false
		}
		return sseText(buf, s)
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(out, &items) != nil {
			return false
		}
		done := false
		for _, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) > 0 && it[0] == '"' {
				var s string
				if json.Unmarshal(it, &s) == nil && sseText(buf, s) {
					done = true
				}
				continue
			}
			writeSSEData(buf, compact(it))
		}
		return done
	default:
		writeSSEData(buf, compact(out))
		return false
	}
}

// sseText writes worker-made SSE text as it is, closing its last event with
// a blank line when the worker left it open.
func sseText(buf *bytes.Buffer, s string) bool {
	if s == "" {
		return false
	}
	buf.WriteString(s)
	switch {
	case strings.HasSuffix(s, "\n\n"), strings.HasSuffix(s, "\r\n\r\n"):
	case strings.HasSuffix(s, "\n"):
		buf.WriteByte('\n')
	default:
		buf.WriteString("\n\n")
	}
	return hasDoneEvent(s)
}

// hasDoneEvent reports whether SSE text contains a data: [DONE] line.
func hasDoneEvent(s string) bool {
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "data:"); ok && strings.TrimSpace(rest) == "[DONE]" {
			return true
		}
	}
	return false
}

func writeSSEData(buf *bytes.Buffer, data []byte) {
	buf.WriteString("data: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}

// openAIGoneError describes a job that could not be read after it was
// submitted: vanished (TTL expired in the queue) or an internal failure.
func openAIGoneError(id string, err error) (int, map[string]any) {
	if errors.Is(err, scheduler.ErrNotFound) {
		return http.StatusGatewayTimeout, openAIErrorObject(http.StatusGatewayTimeout, "job "+id+" expired before it finished (its TTL ran out while it waited for a worker)")
	}
	code := http.StatusInternalServerError
	if errors.Is(err, scheduler.ErrUnavailable) {
		code = http.StatusServiceUnavailable
	}
	return code, openAIErrorObject(code, "job "+id+": "+err.Error())
}

// openAIJobError maps a terminal job that did not complete to a status and
// an OpenAI error object.
func openAIJobError(v scheduler.JobView) (int, map[string]any) {
	switch v.Status {
	case runpod.TimedOut:
		msg := v.Error
		if msg == "" {
			msg = "timed out"
		}
		return http.StatusGatewayTimeout, openAIErrorObject(http.StatusGatewayTimeout, "job "+v.ID+" timed out: "+msg)
	case runpod.Cancelled:
		return http.StatusServiceUnavailable, openAIErrorObject(http.StatusServiceUnavailable, "job "+v.ID+" was cancelled before it finished")
	}
	return workerOpenAIError(v.Error)
}

// workerOpenAIError turns a FAILED job's error string into a status and an
// OpenAI error object. An error that is an OpenAI error object (JSON, or a
// Python dict literal, possibly under an "error" key) is passed on, with its
// numeric code in 400..599 as the status; anything else is a 500 carrying
// the string.
func workerOpenAIError(msg string) (int, map[string]any) {
	if msg == "" {
		msg = "the worker reported a failure without a message"
	}
	v, ok := decodeLoose(msg)
	for depth := 0; ok && depth < 4; depth++ {
		m, isMap := v.(map[string]any)
		if !isMap {
			break
		}
		inner, has := m["error"]
		if !has {
			break
		}
		switch in := inner.(type) {
		case map[string]any:
			v = in
		case string:
			if parsed, pok := decodeLoose(in); pok {
				if _, isMap := parsed.(map[string]any); isMap {
					v = parsed
					continue
				}
			}
			return http.StatusInternalServerError, openAIErrorObject(http.StatusInternalServerError, in)
		default:
			ok = false
		}
	}
	m, isMap := v.(map[string]any)
	if !ok || !isMap {
		return http.StatusInternalServerError, openAIErrorObject(http.StatusInternalServerError, msg)
	}
	if _, hasMsg := m["message"].(string); !hasMsg {
		return http.StatusInternalServerError, openAIErrorObject(http.StatusInternalServerError, msg)
	}
	code := http.StatusInternalServerError
	if c, ok := httpCode(m["code"]); ok {
		code = c
	}
	obj := make(map[string]any, len(m)+2)
	for k, val := range m {
		obj[k] = val
	}
	if t, _ := obj["type"].(string); t == "" {
		obj["type"] = openAIErrorType(code)
	}
	if _, has := obj["code"]; !has {
		obj["code"] = code
	}
	return code, obj
}

// httpCode reads an error code that is an integer HTTP error status.
func httpCode(v any) (int, bool) {
	var f float64
	switch c := v.(type) {
	case float64:
		f = c
	case json.Number:
		var err error
		if f, err = c.Float64(); err != nil {
			return 0, false
		}
	case string:
		n, err := strconv.Atoi(c)
		if err != nil {
			return 0, false
		}
		f = float64(n)
	default:
		return 0, false
	}
	if f != math.Trunc(f) || f < 400 || f > 599 {
		return 0, false
	}
	return int(f), true
}

// decodeLoose reads JSON, or failing that a Python literal (what str() of a
// dict prints).
func decodeLoose(s string) (any, bool) {
	s = strings.TrimSpace(s)
	if s == "" || (s[0] != '{' && s[0] != '[') {
		return nil, false
	}
	var v any
	if json.Unmarshal([]byte(s), &v) == nil {
		return v, true
	}
	v, err := runpod.ParsePyLiteral(s)
	return v, err == nil
}

func openAIErrorType(code int) string {
	switch {
	case code == http.StatusUnauthorized:
		return "authentication_error"
	case code < 500:
		return "invalid_request_error"
	}
	return "server_error"
}

func openAIErrorObject(code int, msg string) map[string]any {
	return map[string]any{"message": msg, "type": openAIErrorType(code), "code": code}
}

func openAIErrorBody(code int, obj map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"error": obj})
	if err != nil {
		b, _ = json.Marshal(map[string]any{"error": openAIErrorObject(code, "encode error: "+err.Error())})
	}
	return b
}

func writeOpenAIObject(w http.ResponseWriter, code int, obj map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(openAIErrorBody(code, obj))
}

// writeOpenAIError answers with an OpenAI-style error object.
func writeOpenAIError(w http.ResponseWriter, code int, msg string) {
	writeOpenAIObject(w, code, openAIErrorObject(code, msg))
}

// writeOpenAISchedErr maps scheduler errors as writeSchedErr does, in
// OpenAI's shape.
func writeOpenAISchedErr(w http.ResponseWriter, err error) {
	code, _ := schedErrStatus(err)
	obj := openAIErrorObject(code, err.Error())
	var se *scheduler.InsufficientStorageError
	if errors.As(err, &se) {
		obj["freeBytes"], obj["neededBytes"] = se.Free, se.Needed
	}
	writeOpenAIObject(w, code, obj)
}
