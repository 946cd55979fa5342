package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// maxWebhookLen caps a webhook URL. The body limits (docs/limits.md) are in
// scheduler/limits, shared with every transport.
const maxWebhookLen = 2048

// badRequest is a decoding failure: 400 with a message naming the field.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, a ...any) error { return &badRequest{msg: fmt.Sprintf(format, a...)} }

// decodeSubmission parses a /run or /runsync body (docs/compat.md, Submit
// body). Unknown
// top-level keys are ignored, as RunPod does; known keys must have the
// right type and range.
func decodeSubmission(body []byte, query url.Values) (spec.Submission, error) {
	var sub spec.Submission
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return sub, badf("request body is empty; expected a JSON object with an \"input\" field")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return sub, badf("request body is not a JSON object: %s", jsonErr(err))
	}
	in, ok := top["input"]
	if !ok || isNull(in) {
		return sub, badf("missing required field \"input\"")
	}
	sub.Input = compact(in)
	if raw, ok := top["webhook"]; ok && !isNull(raw) {
		w, err := decodeWebhook("webhook", raw)
		if err != nil {
			return sub, err
		}
		sub.Webhook = w
	}
	if raw, ok := top["webhookV2"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &sub.WebhookV2); err != nil {
			return sub, badf("field \"webhookV2\" must be a string")
		}
	}
	if raw, ok := top["s3Config"]; ok && !isNull(raw) {
		if !isObject(raw) {
			return sub, badf("field \"s3Config\" must be an object")
		}
		sub.S3Config = compact(raw)
	}
	if raw, ok := top["policy"]; ok && !isNull(raw) {
		if err := decodePolicy(raw, &sub); err != nil {
			return sub, err
		}
	}
	if q := query.Get("ttl"); q != "" && sub.TTLMs == 0 {
		v, err := strconv.ParseInt(q, 10, 64)
		if err != nil {
			return sub, badf("query parameter \"ttl\" must be an integer number of milliseconds")
		}
		if msg := runpod.CheckTTL(v); msg != "" {
			return sub, badf("query parameter \"ttl\" %s", msg)
		}
		sub.TTLMs = v
	}
	return sub, sub.Validate()
}

func decodePolicy(raw json.RawMessage, sub *spec.Submission) error {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(raw, &p); err != nil {
		return badf("field \"policy\" must be an object")
	}
	if v, ok := p["executionTimeout"]; ok && !isNull(v) {
		n, err := msField("policy.executionTimeout", v)
		if err != nil {
			return err
		}
		if n == 0 {
			// An explicit 0 is out of range, not the default a missing field gets.
			return badf("field \"policy.executionTimeout\" %s", runpod.CheckExecutionTimeout(0))
		}
		sub.ExecutionTimeoutMs = n
	}
	if v, ok := p["ttl"]; ok && !isNull(v) {
		n, err := msField("policy.ttl", v)
		if err != nil {
			return err
		}
		if n == 0 {
			return badf("field \"policy.ttl\" %s", runpod.CheckTTL(0))
		}
		sub.TTLMs = n
	}
	if v, ok := p["lowPriority"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &sub.LowPriority); err != nil {
			return badf("field \"policy.lowPriority\" must be a boolean")
		}
	}
	return nil
}

// msField reads an integer number of milliseconds. Integral values written
// as decimals (Python's json.dumps writes 60000.0) are accepted; strings and
// fractions are not.
func msField(name string, raw json.RawMessage) (int64, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return 0, badf("field %q must be an integer number of milliseconds", name)
	}
	num, ok := v.(json.Number)
	if !ok {
		return 0, badf("field %q must be an integer number of milliseconds, got %s", name, bytes.TrimSpace(raw))
	}
	if n, err := num.Int64(); err == nil {
		return n, nil
	}
	f, err := num.Float64()
	if err != nil || f != math.Trunc(f) || f > math.MaxInt64/2 || f < math.MinInt64/2 {
		return 0, badf("field %q must be an integer number of milliseconds, got %s", name, num.String())
	}
	return int64(f), nil
}

func decodeWebhook(name string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badf("field %q must be a string URL", name)
	}
	if s == "" {
		return "", nil
	}
	if len(s) > maxWebhookLen {
		return "", badf("field %q is longer than %d characters", name, maxWebhookLen)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", badf("field %q must be an absolute http or https URL", name)
	}
	return s, nil
}

// parseResult reads a worker's job-done body (docs/compat.md, Job done). The
// SDK labels it
// application/x-www-form-urlencoded but sends raw JSON; it is never parsed
// as a form. status IN_PROGRESS marks a progress update; any "error" marks
// a failure, with non-string errors kept as their JSON text.
func parseResult(body []byte) (scheduler.Result, error) {
	var res scheduler.Result
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return res, badf("result body is empty; expected a JSON object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return res, badf("result body is not a JSON object: %s", jsonErr(err))
	}
	if st, ok := top["status"]; ok {
		var s string
		if json.Unmarshal(st, &s) == nil && runpod.Status(s) == runpod.InProgress {
			res.Progress = true
		}
	}
	if out, ok := top["output"]; ok {
		res.Output = compact(out)
	}
	if e, ok := top["error"]; ok && !isNull(e) {
		res.HasError = true
		var s string
		if json.Unmarshal(e, &s) == nil {
			res.Error = s
		} else {
			// A dict error (docs/compat.md, Job done): RunPod showed COMPLETED
			// without output; a FAILED job with the error's JSON text is what
			// users asked for.
			res.Error = string(compact(e))
		}
		if res.Error == "" {
			res.Error = "handler reported an empty error"
		}
	}
	if sp, ok := top["stopPod"]; ok {
		var b bool
		if json.Unmarshal(sp, &b) == nil {
			res.StopPod = b
		}
	}
	if res.Progress && res.HasError {
		// An error is never progress.
		res.Progress = false
	}
	return res, nil
}

// parseChunk reads a job-stream body {"output": x} and returns x.
func parseChunk(body []byte) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(body), &top); err != nil {
		return nil, badf("stream body is not a JSON object: %s", jsonErr(err))
	}
	out, ok := top["output"]
	if !ok {
		return nil, badf("stream body has no \"output\" field")
	}
	return compact(out), nil
}

// parseJobIDs splits the ping's job_id list.
func parseJobIDs(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// compact removes insignificant whitespace so every answer stays on one
// line (clients read /stream line by line).
func compact(raw json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return buf.Bytes()
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if ok := asSyntax(err, &se); ok {
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	}
	return err.Error()
}

func asSyntax(err error, target **json.SyntaxError) bool {
	se, ok := err.(*json.SyntaxError)
	if ok {
		*target = se
	}
	return ok
}

// oversizeResult is the failure recorded for a result body over the limit.
func oversizeResult(size int64) scheduler.Result {
	what := "more than"
	if size > 0 {
		what = fmt.Sprintf("%d bytes, over", size)
	}
	return scheduler.Result{HasError: true, Error: fmt.Sprintf("result rejected: the worker posted %s the %d MiB result limit; return large outputs through s3Config or /runpod-volume", what, limits.ResultBody>>20)}
}
