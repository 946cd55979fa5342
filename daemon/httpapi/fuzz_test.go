package httpapi

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
)

// Seeds: bodies real clients send (docs/compat.md: Submit body, Job done,
// Stream posts), malformed JSON,
// numbers at and past every limit, and nulls at every level.
var submissionSeeds = []struct{ body, query string }{
	{`{"input":{"msg":"hi"}}`, ""},
	{`{"input":{"output":42}}`, "wait=20000"},
	{`{"input":{"stream":5,"stream_delay_ms":100}}`, ""},
	{`{"input":{"prompt":"Hello"},"webhook":"https://example.internal/hook","policy":{"executionTimeout":900000,"ttl":3600000,"lowPriority":false},"s3Config":{"accessId":"AK","accessSecret":"SK","bucketName":"b","endpointUrl":"https://s3.internal","objectPath":"optional/prefix"}}`, ""},
	{`{"input":[1,2],"webhookV2":"https://h/v2","policy":{"lowPriority":true}}`, ""},
	{`{"input":{"a":null},"webhook":null,"webhookV2":null,"s3Config":null,"policy":{"executionTimeout":null,"ttl":null,"lowPriority":null}}`, ""},
	{`{"input":null}`, ""},
	{`{"input":{"x":{"y":{"z":[null,[null,{"n":null}]]}}}}`, ""},
	{`{"input":1,"policy":null}`, "ttl=60000"},
	{`{"input":1}`, "ttl=9"},
	{`{"input":1}`, "ttl=99999999999999999999999"},
	{`{"input":1,"policy":{"executionTimeout":4999}}`, ""},
	{`{"input":1,"policy":{"executionTimeout":604800001}}`, ""},
	{`{"input":1,"policy":{"executionTimeout":1e400,"ttl":-1e400}}`, ""},
	{`{"input":1,"policy":{"executionTimeout":99999999999999999999}}`, ""},
	{`{"input":1,"policy":{"executionTimeout":-9223372036854775808}}`, ""},
	{`{"input":1,"policy":{"ttl":9223372036854775807}}`, ""},
	{`{"input":1,"policy":{"ttl":10000.0}}`, ""},
	{`{"input":1,"policy":{"ttl":"20000"}}`, ""},
	{`{"input":1,"policy":{"ttl":0}}`, ""},
	{`{"input":123456789012345678901234567890e99999}`, ""},
	{`{"input":"\u2028 line\nbreak \ud800"}`, ""},
	{"{\n  \"input\" : {\n    \"a\" : [ 1 ,\n 2 ]\n  }\n}\n", ""},
	{`{"input":1,"webhook":"ftp://x"}`, ""},
	{`{"input":1,"webhook":"http://"}`, ""},
	{`{"input":1,"webhook":5}`, ""},
	{`{"input":1,"s3Config":[]}`, ""},
	{`{"input":1,"s3Config":"  {"}`, ""},
	{`{"input":1,"input":null}`, ""},
	{`{"input":`, ""},
	{`{"input":1}}`, ""},
	{`[{"input":1}]`, ""},
	{`null`, ""},
	{``, ""},
	{"\x00", ""},
	{`{"input":"\xff\xfe"}`, ""},
	{`{"input":1,"policy":{"lowPriority":"yes"}}`, ""},
}

func FuzzDecodeSubmission(f *testing.F) {
	for _, s := range submissionSeeds {
		f.Add([]byte(s.body), s.query)
	}
	f.Fuzz(func(t *testing.T, body []byte, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the server never sees an unparsable query as a url.Values
		}
		sub, err := decodeSubmission(body, q)
		if err != nil {
			requireClientError(t, err)
			return
		}
		if !json.Valid(sub.Input) {
			t.Fatalf("accepted input is not valid JSON: %q", sub.Input)
		}
		if len(sub.Input) == 0 || string(sub.Input) == "null" {
			t.Fatalf("accepted an empty or null input: %q", sub.Input)
		}
		if bytes.ContainsAny(sub.Input, "\n\r") {
			t.Fatalf("accepted input spans lines: %q", sub.Input)
		}
		if sub.S3Config != nil && (!json.Valid(sub.S3Config) || sub.S3Config[0] != '{' || bytes.ContainsAny(sub.S3Config, "\n\r")) {
			t.Fatalf("accepted s3Config %q", sub.S3Config)
		}
		if v := sub.ExecutionTimeoutMs; v != 0 && (v < runpod.MinExecutionTimeoutMs || v > runpod.MaxExecutionTimeoutMs) {
			t.Fatalf("executionTimeout %d out of range", v)
		}
		if v := sub.TTLMs; v != 0 && (v < runpod.MinTTLMs || v > runpod.MaxTTLMs) {
			t.Fatalf("ttl %d out of range", v)
		}
		if sub.Webhook != "" {
			u, err := url.Parse(sub.Webhook)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(sub.Webhook) > maxWebhookLen {
				t.Fatalf("accepted webhook %q", sub.Webhook)
			}
		}
		if sub.Sync {
			t.Fatal("decodeSubmission set Sync")
		}
		// The handler hands the submission on as it is: it must pass the
		// scheduler's own check.
		if err := sub.Validate(); err != nil {
			t.Fatalf("decoded submission fails Validate: %v", err)
		}
	})
}

var resultSeeds = []string{
	`{"output": {"image_url": "https://x"}}`,
	`{"output": null}`,
	`{"output": []}`,
	`{}`,
	`{"output": {"partial": 1}, "error": "bad seed"}`,
	`{"error": "{\"error_type\": \"<class 'ValueError'>\", \"error_message\": \"bad seed\", \"error_traceback\": \"Traceback ...\", \"hostname\": \"h\", \"worker_id\": \"w\", \"runpod_version\": \"1.12.0\"}"}`,
	`{"error": {"code": 7, "msg": "x"}}`,
	`{"error": ""}`,
	`{"error": null, "output": 1}`,
	`{"output": "x", "stopPod": true}`,
	`{"status": "IN_PROGRESS", "output": "step 3/10"}`,
	`{"status": "IN_PROGRESS", "error": "boom"}`,
	`{"status": "IN_PROGRESS", "error": null, "output": {"a": null}}`,
	`{"status": null, "output": null, "error": null, "stopPod": null}`,
	`{"output": {"rp_debugger": {"timings": [1.5e300, -1e-300]}}}`,
	`{"output": 1e99999}`,
	`{"output": "héllo ☃ \u0000"}`,
	"{\n\"output\":\n[1,\n2]\n}",
	`{"output":`,
	`output=1`,
	`[1]`,
	`null`,
	``,
	`"x"`,
}

func FuzzParseResult(f *testing.F) {
	for _, s := range resultSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := parseResult(body)
		if err != nil {
			requireClientError(t, err)
			return
		}
		if res.Progress && res.HasError {
			t.Fatalf("both progress and error: %+v", res)
		}
		if res.HasError && res.Error == "" {
			t.Fatalf("an error without a message: %+v", res)
		}
		if !res.HasError && res.Error != "" {
			t.Fatalf("an error message without HasError: %+v", res)
		}
		if res.Output != nil && (!json.Valid(res.Output) || bytes.ContainsAny(res.Output, "\n\r")) {
			t.Fatalf("output %q is not single-line JSON", res.Output)
		}
	})
}

var chunkSeeds = []string{
	`{"output": "chunk 1"}`,
	`{"output": {"text": "a\nb", "metrics": {"t": 1}}}`,
	`{"output": null}`,
	`{"output": [null, {"x": null}]}`,
	"{\n\"output\":\n[1,\n2]}",
	`{"output": 123456789012345678901234567890}`,
	`{"other": 1}`,
	`{}`,
	`null`,
	``,
	`{"output": }`,
	`{"output": "x"} trailing`,
}

func FuzzParseChunk(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := parseChunk(body)
		if err != nil {
			requireClientError(t, err)
			return
		}
		if out == nil || !json.Valid(out) || bytes.ContainsAny(out, "\n\r") {
			t.Fatalf("chunk %q is not single-line JSON", out)
		}
	})
}

// requireClientError: every refusal must become a 400 with a message.
// Validation failures from spec.Submission.Validate arrive as
// *spec.FieldError, which the server also answers with 400.
func requireClientError(t *testing.T, err error) {
	t.Helper()
	switch e := err.(type) {
	case *badRequest:
		if e.msg == "" {
			t.Fatal("badRequest with an empty message")
		}
	case *spec.FieldError:
		if e.Field == "" || e.Msg == "" {
			t.Fatalf("FieldError without field or message: %+v", e)
		}
	default:
		t.Fatalf("error %T (%v) is neither *badRequest nor *spec.FieldError", err, err)
	}
}
