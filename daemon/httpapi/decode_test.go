package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

func TestDecodeSubmission(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		query string
		// want, when the body is accepted
		want spec.Submission
		// errHas, when it is refused: a substring of the message
		errHas string
	}{
		// Bodies as the SDKs send them (docs/compat.md, Submit body).
		{name: "JS SDK run", body: `{"input":{"msg":"hi"}}`,
			want: spec.Submission{Input: []byte(`{"msg":"hi"}`)}},
		{name: "docs example with every field", body: `{
  "input": {"prompt": "Hello"},
  "webhook": "https://example.internal/hook",
  "policy": {"executionTimeout": 900000, "ttl": 3600000, "lowPriority": false},
  "s3Config": {"accessId": "AK", "accessSecret": "SK", "bucketName": "b", "endpointUrl": "https://s3.internal", "objectPath": "optional/prefix"}
}`,
			want: spec.Submission{Input: []byte(`{"prompt":"Hello"}`), Webhook: "https://example.internal/hook", ExecutionTimeoutMs: 900000, TTLMs: 3600000,
				S3Config: []byte(`{"accessId":"AK","accessSecret":"SK","bucketName":"b","endpointUrl":"https://s3.internal","objectPath":"optional/prefix"}`)}},
		{name: "Go SDK with webhookV2 and low priority", body: `{"input":[1,2],"webhookV2":"https://h/v2","policy":{"lowPriority":true}}`,
			want: spec.Submission{Input: []byte(`[1,2]`), WebhookV2: "https://h/v2", LowPriority: true}},
		{name: "nested nulls are defaults", body: `{"input":{"a":null},"webhook":null,"webhookV2":null,"s3Config":null,"policy":{"executionTimeout":null,"ttl":null,"lowPriority":null}}`,
			want: spec.Submission{Input: []byte(`{"a":null}`)}},
		{name: "policy null", body: `{"input":1,"policy":null}`, want: spec.Submission{Input: []byte(`1`)}},
		{name: "unknown keys ignored", body: `{"input":"x","foo":{"bar":[1]},"policy":{"other":1}}`, want: spec.Submission{Input: []byte(`"x"`)}},
		{name: "scalar inputs", body: `{"input":false}`, want: spec.Submission{Input: []byte(`false`)}},
		{name: "empty object input", body: `{"input":{}}`, want: spec.Submission{Input: []byte(`{}`)}},
		{name: "whitespace around body", body: "\n\t {\"input\" : { \"a\" : [ 1 , 2 ] } } \r\n", want: spec.Submission{Input: []byte(`{"a":[1,2]}`)}},
		{name: "newlines inside input are compacted", body: "{\"input\":{\n\"a\":\n\"line\\nbreak\"\n}}", want: spec.Submission{Input: []byte(`{"a":"line\nbreak"}`)}},
		{name: "empty webhook means none", body: `{"input":1,"webhook":""}`, want: spec.Submission{Input: []byte(`1`)}},
		{name: "integral float ms", body: `{"input":1,"policy":{"executionTimeout":5000}}`, want: spec.Submission{Input: []byte(`1`), ExecutionTimeoutMs: 5000}},
		{name: "policy bounds inclusive", body: fmt.Sprintf(`{"input":1,"policy":{"executionTimeout":%d,"ttl":%d}}`, runpod.MaxExecutionTimeoutMs, runpod.MinTTLMs),
			want: spec.Submission{Input: []byte(`1`), ExecutionTimeoutMs: runpod.MaxExecutionTimeoutMs, TTLMs: runpod.MinTTLMs}},
		{name: "ttl query", body: `{"input":1}`, query: "ttl=60000", want: spec.Submission{Input: []byte(`1`), TTLMs: 60000}},
		{name: "policy ttl wins over query", body: `{"input":1,"policy":{"ttl":20000}}`, query: "ttl=60000", want: spec.Submission{Input: []byte(`1`), TTLMs: 20000}},
		{name: "policy ttl wins over a bad query", body: `{"input":1,"policy":{"ttl":20000}}`, query: "ttl=x", want: spec.Submission{Input: []byte(`1`), TTLMs: 20000}},
		{name: "unrelated query ignored", body: `{"input":1}`, query: "wait=5&foo=bar", want: spec.Submission{Input: []byte(`1`)}},

		// Refusals.
		{name: "empty body", body: "", errHas: "empty"},
		{name: "blank body", body: " \n ", errHas: "empty"},
		{name: "not JSON", body: `input=1`, errHas: "not a JSON object"},
		{name: "truncated", body: `{"input":{"a":1}`, errHas: "not a JSON object"},
		{name: "array body", body: `[{"input":1}]`, errHas: "not a JSON object"},
		{name: "null body", body: `null`, errHas: "input"},
		{name: "no input", body: `{"prompt":"hi"}`, errHas: `"input"`},
		{name: "null input", body: `{"input":null}`, errHas: `"input"`},
		{name: "trailing garbage", body: `{"input":1} x`, errHas: "not a JSON object"},
		{name: "webhook not a string", body: `{"input":1,"webhook":5}`, errHas: "webhook"},
		{name: "webhook relative", body: `{"input":1,"webhook":"/hook"}`, errHas: "webhook"},
		{name: "webhook bad scheme", body: `{"input":1,"webhook":"ftp://h/x"}`, errHas: "webhook"},
		{name: "webhook too long", body: `{"input":1,"webhook":"https://h/` + strings.Repeat("a", maxWebhookLen) + `"}`, errHas: "longer"},
		{name: "webhookV2 not a string", body: `{"input":1,"webhookV2":{}}`, errHas: "webhookV2"},
		{name: "s3Config not an object", body: `{"input":1,"s3Config":"x"}`, errHas: "s3Config"},
		{name: "policy not an object", body: `{"input":1,"policy":[1]}`, errHas: "policy"},
		{name: "executionTimeout string", body: `{"input":1,"policy":{"executionTimeout":"10m"}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout fractional", body: `{"input":1,"policy":{"executionTimeout":6000.5}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout zero", body: `{"input":1,"policy":{"executionTimeout":0}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout below", body: `{"input":1,"policy":{"executionTimeout":4999}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout negative", body: `{"input":1,"policy":{"executionTimeout":-1}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout above", body: fmt.Sprintf(`{"input":1,"policy":{"executionTimeout":%d}}`, runpod.MaxExecutionTimeoutMs+1), errHas: "policy.executionTimeout"},
		{name: "executionTimeout huge", body: `{"input":1,"policy":{"executionTimeout":1e400}}`, errHas: "policy.executionTimeout"},
		{name: "executionTimeout beyond int64", body: `{"input":1,"policy":{"executionTimeout":99999999999999999999}}`, errHas: "policy.executionTimeout"},
		{name: "ttl zero", body: `{"input":1,"policy":{"ttl":0}}`, errHas: "policy.ttl"},
		{name: "ttl below", body: `{"input":1,"policy":{"ttl":9999}}`, errHas: "policy.ttl"},
		{name: "ttl bool", body: `{"input":1,"policy":{"ttl":true}}`, errHas: "policy.ttl"},
		{name: "lowPriority string", body: `{"input":1,"policy":{"lowPriority":"true"}}`, errHas: "lowPriority"},
		{name: "ttl query not a number", body: `{"input":1}`, query: "ttl=1h", errHas: "ttl"},
		{name: "ttl query below", body: `{"input":1}`, query: "ttl=5", errHas: "ttl"},
		{name: "ttl query above", body: `{"input":1}`, query: fmt.Sprintf("ttl=%d", runpod.MaxTTLMs+1), errHas: "ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeSubmission([]byte(tc.body), q)
			if tc.errHas != "" {
				if err == nil {
					t.Fatalf("accepted %s as %+v, want an error about %q", tc.body, got, tc.errHas)
				}
				checkClientError(t, err)
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not mention %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if string(got.Input) != string(tc.want.Input) || string(got.S3Config) != string(tc.want.S3Config) {
				t.Errorf("input %s s3 %s, want %s %s", got.Input, got.S3Config, tc.want.Input, tc.want.S3Config)
			}
			got.Input, got.S3Config, tc.want.Input, tc.want.S3Config = nil, nil, nil, nil
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.Sync {
				t.Error("decodeSubmission set Sync; the handler decides that")
			}
		})
	}
}

// checkClientError requires an error that the server answers with 400 and
// a message: a *badRequest, or a *spec.FieldError from Validate.
func checkClientError(t *testing.T, err error) {
	t.Helper()
	var br *badRequest
	var fe *spec.FieldError
	switch {
	case errors.As(err, &br):
		if br.msg == "" {
			t.Errorf("badRequest with an empty message")
		}
	case errors.As(err, &fe):
		if fe.Field == "" || fe.Msg == "" {
			t.Errorf("FieldError without field or message: %+v", fe)
		}
	default:
		t.Errorf("error %T (%v) is neither *badRequest nor *spec.FieldError: it would be a 500", err, err)
	}
}

func TestParseResult(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		want   scheduler.Result
		errHas string
	}{
		// Bodies from docs/compat.md, Job done.
		{name: "plain output", body: `{"output": {"image_url": "https://x"}}`, want: scheduler.Result{Output: []byte(`{"image_url":"https://x"}`)}},
		{name: "None output", body: `{"output": null}`, want: scheduler.Result{Output: []byte(`null`)}},
		{name: "empty list output", body: `{"output": []}`, want: scheduler.Result{Output: []byte(`[]`)}},
		{name: "empty dict returned", body: `{}`, want: scheduler.Result{}},
		{name: "dict with error", body: `{"output": {"partial": 1}, "error": "bad seed"}`, want: scheduler.Result{Output: []byte(`{"partial":1}`), Error: "bad seed", HasError: true}},
		{name: "raised exception", body: `{"error": "{\"error_type\": \"<class 'ValueError'>\", \"error_message\": \"bad seed\"}"}`,
			want: scheduler.Result{Error: `{"error_type": "<class 'ValueError'>", "error_message": "bad seed"}`, HasError: true}},
		{name: "dict error kept as JSON text", body: `{"error": {"code": 7, "msg": "x"}}`, want: scheduler.Result{Error: `{"code":7,"msg":"x"}`, HasError: true}},
		{name: "numeric error", body: `{"error": 42}`, want: scheduler.Result{Error: `42`, HasError: true}},
		{name: "empty error string", body: `{"error": ""}`, want: scheduler.Result{Error: "handler reported an empty error", HasError: true}},
		{name: "null error is no error", body: `{"output": 1, "error": null}`, want: scheduler.Result{Output: []byte(`1`)}},
		{name: "refresh_worker", body: `{"output": "x", "stopPod": true}`, want: scheduler.Result{Output: []byte(`"x"`), StopPod: true}},
		{name: "stopPod not a bool", body: `{"output": "x", "stopPod": "yes"}`, want: scheduler.Result{Output: []byte(`"x"`)}},
		{name: "progress", body: `{"status": "IN_PROGRESS", "output": "step 3/10"}`, want: scheduler.Result{Progress: true, Output: []byte(`"step 3/10"`)}},
		{name: "progress without output", body: `{"status": "IN_PROGRESS"}`, want: scheduler.Result{Progress: true}},
		{name: "other status is final", body: `{"status": "COMPLETED", "output": 1}`, want: scheduler.Result{Output: []byte(`1`)}},
		{name: "status not a string", body: `{"status": 1, "output": 1}`, want: scheduler.Result{Output: []byte(`1`)}},
		{name: "progress with error is a failure", body: `{"status": "IN_PROGRESS", "error": "boom"}`, want: scheduler.Result{Error: "boom", HasError: true}},
		{name: "aggregate stream", body: `{"output": ["a", "b"]}`, want: scheduler.Result{Output: []byte(`["a","b"]`)}},
		{name: "UTF-8 output", body: `{"output": "héllo ☃"}`, want: scheduler.Result{Output: []byte(`"héllo ☃"`)}},
		{name: "pretty printed", body: "{\n  \"output\": {\n    \"a\": [1,\n 2]\n  }\n}\n", want: scheduler.Result{Output: []byte(`{"a":[1,2]}`)}},

		{name: "empty", body: "", errHas: "empty"},
		{name: "form encoded", body: "output=1", errHas: "not a JSON object"},
		{name: "array", body: `[1]`, errHas: "not a JSON object"},
		{name: "truncated", body: `{"output": `, errHas: "not a JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseResult([]byte(tc.body))
			if tc.errHas != "" {
				if err == nil {
					t.Fatalf("accepted as %+v", got)
				}
				checkClientError(t, err)
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not mention %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.Output == nil) != (tc.want.Output == nil) || string(got.Output) != string(tc.want.Output) {
				t.Errorf("output %q (nil %v), want %q (nil %v)", got.Output, got.Output == nil, tc.want.Output, tc.want.Output == nil)
			}
			if got.Progress != tc.want.Progress || got.HasError != tc.want.HasError || got.Error != tc.want.Error || got.StopPod != tc.want.StopPod {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseChunk(t *testing.T) {
	cases := []struct {
		body, want string
		ok         bool
	}{
		{`{"output": "chunk 1"}`, `"chunk 1"`, true},
		{`{"output": {"text": "a\nb", "metrics": {"t": 1}}}`, `{"text":"a\nb","metrics":{"t":1}}`, true},
		{`{"output": null}`, `null`, true},
		{"{\n\"output\":\n[1,\n2]}", `[1,2]`, true},
		{`{"other": 1}`, ``, false},
		{`{}`, ``, false},
		{`null`, ``, false},
		{``, ``, false},
		{`"output"`, ``, false},
		{`{"output": }`, ``, false},
	}
	for _, tc := range cases {
		got, err := parseChunk([]byte(tc.body))
		if !tc.ok {
			if err == nil {
				t.Errorf("parseChunk(%q) = %s, want an error", tc.body, got)
			} else {
				checkClientError(t, err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("parseChunk(%q) = %s, %v; want %s", tc.body, got, err, tc.want)
		}
	}
}

func TestParseJobIDs(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a,b,c", []string{"a", "b", "c"}},
		{" a , b ", []string{"a", "b"}},
		{"a,,b,", []string{"a", "b"}},
		{",,,", []string{}},
		{"sync-0965434e-ff63-4a1c-a9f9-5b705f66e176-u2", []string{"sync-0965434e-ff63-4a1c-a9f9-5b705f66e176-u2"}},
	}
	for _, tc := range cases {
		got := parseJobIDs(tc.in)
		if len(got) != len(tc.want) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseJobIDs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWaitParam(t *testing.T) {
	const (
		def = 90 * time.Second
		min = time.Second
		max = 300 * time.Second
	)
	cases := []struct {
		query string
		want  time.Duration
	}{
		{"", def},
		{"wait=", def},
		{"wait=20000", 20 * time.Second},
		{"wait=1000", time.Second},
		{"wait=1500", 1500 * time.Millisecond},
		{"wait=0", min},
		{"wait=999", min},
		{"wait=300000", max},
		{"wait=300001", max},
		{"wait=90000000", max},
		{"wait=-5", def},
		{"wait=1.5", def},
		{"wait=abc", def},
		{"wait=1e4", def},
		{"wait=%2B5", def},
		{"wait=%205", def},
		{"other=5", def},
		{"wait=5000&wait=9000", 5 * time.Second},
		// Huge values must clamp to max, not wrap around to something small.
		{"wait=9300000000000", max},
		{"wait=99999999999999999999999999", max},
		{"wait=18446744073709551616", max},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v2/ep/status-sync/id?"+tc.query, nil)
		if got := waitParam(r, def, min, max); got != tc.want {
			t.Errorf("waitParam(%q) = %v, want %v", tc.query, got, tc.want)
		}
	}
	// Stream: no default, no minimum.
	r := httptest.NewRequest("GET", "/v2/ep/stream/id", nil)
	if got := waitParam(r, 0, 0, 300*time.Second); got != 0 {
		t.Errorf("stream without wait = %v", got)
	}
	r = httptest.NewRequest("GET", "/v2/ep/stream/id?wait=0", nil)
	if got := waitParam(r, 0, 0, 300*time.Second); got != 0 {
		t.Errorf("stream wait=0 = %v", got)
	}
}

func TestPathID(t *testing.T) {
	cases := map[string]string{
		"w-abc":                   "w-abc",
		"w-abc&isStream=false":    "w-abc",
		"job-1&isStream=true&x=y": "job-1",
		"&":                       "",
		"":                        "",
		"sync-1-u2":               "sync-1-u2",
	}
	for in, want := range cases {
		if got := pathID(in); got != want {
			t.Errorf("pathID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitPath(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"/", []string{}},
		{"/v2/ep/run", []string{"v2", "ep", "run"}},
		{"//v2//ep///run/", []string{"v2", "ep", "run"}},
		{"/v2/ep/status/id", []string{"v2", "ep", "status", "id"}},
		{"v2/ep", []string{"v2", "ep"}},
		{"/openapi.json", []string{"openapi.json"}},
	}
	for _, tc := range cases {
		got := splitPath(tc.in)
		if len(got) != len(tc.want) || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("splitPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPresentedKey(t *testing.T) {
	cases := []struct {
		header []string // nil: no header
		want   string
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"Bearer KEY"}, "KEY"},
		{[]string{"bearer KEY"}, "KEY"},
		{[]string{"BEARER KEY"}, "KEY"},
		{[]string{"Bearer   KEY  "}, "KEY"},
		{[]string{"  Bearer KEY"}, "KEY"},
		{[]string{"KEY"}, "KEY"},
		{[]string{"  KEY  "}, "KEY"},
		{[]string{"rpa_ABC123"}, "rpa_ABC123"},
		{[]string{"Bearer"}, "Bearer"},
		{[]string{"Bearer "}, "Bearer"},
		{[]string{"Bearer KEY", "Bearer OTHER"}, "KEY"}, // the first header counts
		{[]string{"Basic dXNlcjpwYXNz"}, "Basic dXNlcjpwYXNz"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/v2/ep/health", nil)
		for _, h := range tc.header {
			r.Header.Add("Authorization", h)
		}
		if got := presentedKey(r); got != tc.want {
			t.Errorf("presentedKey(%q) = %q, want %q", tc.header, got, tc.want)
		}
	}
	// The header name is matched case-insensitively (docs/compat.md, Client
	// API): net/http
	// canonicalises it when it parses the request.
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /v2/ep/health HTTP/1.1\r\nHost: x\r\nauthorization: Bearer lower\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := presentedKey(r); got != "lower" {
		t.Errorf("lower-case header name: %q", got)
	}
}

func TestMsFieldAcceptsIntegralDecimals(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want int64
		ok   bool
	}{
		{"60000", 60000, true},
		{"60000.0", 60000, true},
		{"6e4", 60000, true},
		{"60000.5", 0, false},
		{`"60000"`, 0, false},
		{"true", 0, false},
	} {
		got, err := msField("policy.ttl", json.RawMessage(tc.raw))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("msField(%s) = %d, %v; want %d, ok=%v", tc.raw, got, err, tc.want, tc.ok)
		}
	}
}
