package tests

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// TestRateLimits: with --rate-limits run=5/1m, the 6th /run on an endpoint
// is answered 429 with Retry-After and the JSON body; its /v1 and gRPC
// twins share the budget; another endpoint still works; /metrics counts
// the refusals; a request without a key is 401 and spends nothing; and
// SIGHUP with rate-limits = "off" lifts the limit. The limit is per minute
// (a token every 12 s) so that a slow machine cannot refill a token in
// the middle of the test. The daemon's log carries the audit lines of the
// endpoints created, and never the key.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(t.TempDir(), "ember.toml")
	if err := os.WriteFile(conf, []byte("rate-limits = \"run=5/1m\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, "--config", conf)
	a := d.CreateEndpoint("limited-a", nil)
	b := d.CreateEndpoint("limited-b", nil)
	job := map[string]any{"input": map[string]any{"output": "ok"}}

	for range 3 {
		if code, out := d.DoKey("POST", "/v2/"+a+"/run", job, ""); code != 401 {
			t.Fatalf("/run without a key: %d %s", code, out)
		}
	}
	for range 5 {
		d.Submit(a, job)
	}
	req, _ := http.NewRequest("POST", d.URL+"/v2/"+a+"/run", strings.NewReader(`{"input":{"output":"ok"}}`))
	req.Header.Set("Authorization", "Bearer "+d.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var body struct {
		Error             string `json:"error"`
		Reason            string `json:"reason"`
		RetryAfterSeconds int    `json:"retryAfterSeconds"`
	}
	if err := json.Unmarshal(out, &body); err != nil {
		t.Fatalf("6th /run: %d, body %s: %v", resp.StatusCode, out, err)
	}
	retryAfter, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 429 || retryAfter < 1 || retryAfter > 12 || body.RetryAfterSeconds != retryAfter || body.Reason != "rate" ||
		!strings.Contains(body.Error, "too many run requests: at most 5 per 1m") {
		t.Errorf("6th /run: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), out)
	}
	if code, out := d.Do("POST", "/v1/endpoints/"+a+"/jobs", map[string]any{"input": map[string]any{"output": "ok"}}); code != 429 {
		t.Errorf("/v1 twin of /run after the budget is spent: %d %s", code, out)
	}
	cc := grpcConn(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.Key)
	_, err = emberv1.NewJobServiceClient(cc).Run(ctx, &emberv1.RunJobRequest{EndpointId: a, Input: structpb.NewStringValue("x")})
	st := status.Convert(err)
	var retry *errdetails.RetryInfo
	for _, det := range st.Details() {
		if r, ok := det.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if st.Code() != codes.ResourceExhausted || retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("gRPC Run after the budget is spent: %v, retry info %v", err, retry)
	}
	// Another endpoint has its own budget.
	d.Submit(b, job)

	code, metrics := d.Do("GET", "/metrics", nil)
	if code != 200 || !strings.Contains(string(metrics), `ember_requests_refused_total{code="429",reason="rate"} 3`+"\n") {
		t.Errorf("/metrics: %d, refused lines:\n%s", code, grepLines(string(metrics), "ember_requests_refused_total"))
	}

	if err := os.WriteFile(conf, []byte("rate-limits = \"off\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "rate limits reloaded", func() bool { return strings.Contains(d.Log(), "reloaded: rate limits applied") })
	for range 3 {
		d.Submit(a, job)
	}

	log := d.Log()
	for _, want := range []string{"msg=audit audit=true action=endpoint.create object=" + a, "action=endpoint.create object=" + b} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if strings.Contains(log, d.Key) {
		t.Error("the admin key reached the log")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
