package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// post is an expected done or stream post: its URL (path?query) and JSON body.
type post struct {
	url  string
	body string
}

func donePost(job, isStream, body string) post {
	return post{"/v2/ep/job-done/w1/" + job + "?gpu=X&isStream=" + isStream, body}
}

func streamPost(job, body string) post {
	return post{"/v2/ep/job-stream/w1/" + job + "?gpu=X&isStream=false", body}
}

// TestJobResults drives the input contract end to end: one job per case, and the exact
// sequence of progress, stream and final posts the daemon must see.
func TestJobResults(t *testing.T) {
	cases := []struct {
		name string
		job  string
		want []post
	}{
		{"echo object", `{"id":"j1","input":{"a":1,"b":[true,null]}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"a":1,"b":[true,null]}}}`)}},
		{"echo keeps big numbers exact", `{"id":"j1","input":{"n":12345678901234567890,"f":1.50}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"n":12345678901234567890,"f":1.50}}}`)}},
		{"non-object input string", `{"id":"j1","input":"hello"}`,
			[]post{donePost("j1", "false", `{"output":{"echo":"hello"}}`)}},
		{"non-object input array", `{"id":"j1","input":[1,2]}`,
			[]post{donePost("j1", "false", `{"output":{"echo":[1,2]}}`)}},
		{"output string", `{"id":"j1","input":{"output":"hi"}}`,
			[]post{donePost("j1", "false", `{"output":"hi"}`)}},
		{"output null", `{"id":"j1","input":{"output":null}}`,
			[]post{donePost("j1", "false", `{"output":null}`)}},
		{"output empty dict gives empty body", `{"id":"j1","input":{"output":{}}}`,
			[]post{donePost("j1", "false", `{}`)}},
		{"output dict with error key is lifted", `{"id":"j1","input":{"output":{"error":"bad","x":1}}}`,
			[]post{donePost("j1", "false", `{"output":{"x":1},"error":"bad"}`)}},
		{"output dict with refresh_worker key", `{"id":"j1","input":{"output":{"refresh_worker":true,"x":1}}}`,
			[]post{donePost("j1", "false", `{"output":{"x":1},"stopPod":true}`)}},
		{"fail", `{"id":"j1","input":{"fail":"boom"}}`,
			[]post{donePost("j1", "false", `{"error":"boom"}`)}},
		{"fail wins over output", `{"id":"j1","input":{"fail":"boom","output":"x"}}`,
			[]post{donePost("j1", "false", `{"error":"boom"}`)}},
		{"refresh_worker", `{"id":"j1","input":{"refresh_worker":true}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"refresh_worker":true}},"stopPod":true}`)}},
		{"fail with refresh_worker", `{"id":"j1","input":{"fail":"x","refresh_worker":true}}`,
			[]post{donePost("j1", "false", `{"error":"x","stopPod":true}`)}},
		{"progress before final", `{"id":"j1","input":{"progress":3,"sleep_ms":30,"output":"done"}}`,
			[]post{
				donePost("j1", "false", `{"status":"IN_PROGRESS","output":"progress 1/3"}`),
				donePost("j1", "false", `{"status":"IN_PROGRESS","output":"progress 2/3"}`),
				donePost("j1", "false", `{"status":"IN_PROGRESS","output":"progress 3/3"}`),
				donePost("j1", "false", `{"output":"done"}`),
			}},
		{"progress without sleep still precedes final", `{"id":"j1","input":{"progress":2}}`,
			[]post{
				donePost("j1", "false", `{"status":"IN_PROGRESS","output":"progress 1/2"}`),
				donePost("j1", "false", `{"status":"IN_PROGRESS","output":"progress 2/2"}`),
				donePost("j1", "false", `{"output":{"echo":{"progress":2}}}`),
			}},
		{"stream chunks then aggregate", `{"id":"j1","input":{"stream":3,"stream_delay_ms":5}}`,
			[]post{
				streamPost("j1", `{"output":"chunk 1"}`),
				streamPost("j1", `{"output":"chunk 2"}`),
				streamPost("j1", `{"output":"chunk 3"}`),
				donePost("j1", "true", `{"output":["chunk 1","chunk 2","chunk 3"]}`),
			}},
		{"stream flood", `{"id":"j1","input":{"stream_flood":{"chunks":2,"bytes":7},"stream":5}}`,
			[]post{streamPost("j1", `{"output":"xxxxx"}`), streamPost("j1", `{"output":"xxxxx"}`), donePost("j1", "true", `{"output":[]}`)}},
		{"stream with fail", `{"id":"j1","input":{"stream":1,"fail":"late"}}`,
			[]post{streamPost("j1", `{"output":"chunk 1"}`), donePost("j1", "true", `{"error":"late"}`)}},
		{"stream with refresh_worker", `{"id":"j1","input":{"stream":1,"refresh_worker":true}}`,
			[]post{streamPost("j1", `{"output":"chunk 1"}`), donePost("j1", "true", `{"output":["chunk 1"],"stopPod":true}`)}},
		{"echo_job passes s3Config through", `{"id":"j1","input":{"echo_job":true},"s3Config":{"bucketName":"b","accessId":"a"},"webhook":null,"batchId":"b1"}`,
			[]post{donePost("j1", "false", `{"output":{"id":"j1","input":{"echo_job":true},"s3Config":{"bucketName":"b","accessId":"a"},"webhook":null,"batchId":"b1"}}`)}},
		{"output wins over echo_job", `{"id":"j1","input":{"echo_job":true,"output":1}}`,
			[]post{donePost("j1", "false", `{"output":1}`)}},
		{"echo_env of an unset variable", `{"id":"j1","input":{"echo_env":"EMBER_TEST_SURELY_UNSET"}}`,
			[]post{donePost("j1", "false", `{"output":{"env":"EMBER_TEST_SURELY_UNSET","set":false,"value":""}}`)}},
		{"openai_route /v1/models is a generator job", `{"id":"j1","input":{"openai_route":"/v1/models"}}`,
			[]post{
				streamPost("j1", `{"output":{"object":"list","data":[{"id":"ember-echo","object":"model"}]}}`),
				donePost("j1", "true", `{"output":[{"object":"list","data":[{"id":"ember-echo","object":"model"}]}]}`),
			}},
		{"openai error model fails without a chunk", `{"id":"j1","input":{"openai_route":"/v1/chat/completions","openai_input":{"model":"error","messages":[]}}}`,
			[]post{donePost("j1", "true", `{"error":"{'message': 'model not found', 'type': 'invalid_request_error', 'code': 404}"}`)}},
		{"block_ms then echo", `{"id":"j1","input":{"block_ms":20}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"block_ms":20}}}`)}},
		{"alloc_mb then echo", `{"id":"j1","input":{"alloc_mb":4}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"alloc_mb":4}}}`)}},
		{"wrong types and unknown keys are ignored", `{"id":"j1","input":{"sleep_ms":"x","fail":3,"stream":"2","zzz":1}}`,
			[]post{donePost("j1", "false", `{"output":{"echo":{"sleep_ms":"x","fail":3,"stream":"2","zzz":1}}}`)}},
		{"job id with URL-ish characters is substituted as is", `{"id":"a-b_c.1","input":{"output":0}}`,
			[]post{donePost("a-b_c.1", "false", `{"output":0}`)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newFakeDaemon(t)
			startWorker(t, d, nil)
			d.queue(jobAnswer(tc.job))
			jobID := decodeJSON(t, []byte(tc.job)).(map[string]any)["id"].(string)
			d.waitFor("final post", func() bool { return len(d.of("done")) >= len(tc.want)-streamCount(tc.want) })
			time.Sleep(30 * time.Millisecond) // anything extra would show up now
			checkPosts(t, d.jobPosts(jobID), tc.want)
		})
	}
}

func streamCount(ps []post) int {
	n := 0
	for _, p := range ps {
		if strings.Contains(p.url, "/job-stream/") {
			n++
		}
	}
	return n
}

// checkPosts compares posts in order: exact URL, SDK headers, and JSON-equal raw bodies.
func checkPosts(t *testing.T, got []recorded, want []post) {
	t.Helper()
	if len(got) != len(want) {
		var urls []string
		for _, g := range got {
			urls = append(urls, g.URL+" "+string(g.Body))
		}
		t.Fatalf("got %d posts, want %d:\n%s", len(got), len(want), strings.Join(urls, "\n"))
	}
	for i, w := range want {
		g := got[i]
		if g.Method != "POST" || g.URL != w.url {
			t.Errorf("post %d: %s %s, want POST %s", i, g.Method, g.URL, w.url)
		}
		checkPostHeaders(t, g)
		if gv, wv := decodeJSON(t, g.Body), decodeJSON(t, []byte(w.body)); !reflect.DeepEqual(gv, wv) {
			t.Errorf("post %d body:\n got %s\nwant %s", i, g.Body, w.body)
		}
	}
}

// checkPostHeaders asserts the SDK's result-post headers: the form label over a raw JSON
// body, the separate charset header, and the raw key.
func checkPostHeaders(t *testing.T, r recorded) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("%s: Content-Type %q", r.URL, ct)
	}
	if cs := r.Header.Get("charset"); cs != "utf-8" {
		t.Errorf("%s: charset header %q", r.URL, cs)
	}
	if a := r.Header.Get("Authorization"); a != "secret-key" {
		t.Errorf("%s: Authorization %q, want the raw key", r.URL, a)
	}
	if !json.Valid(r.Body) {
		t.Errorf("%s: body is not raw JSON: %q", r.URL, r.Body)
	}
}

// TestRawUTF8Body checks the body is json.dumps(ensure_ascii=False)-like: UTF-8 and <>&
// are sent as is, not \u-escaped.
func TestRawUTF8Body(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, nil)
	d.queue(jobAnswer(`{"id":"j1","input":{"output":"<é & 😀>"}}`))
	d.waitFor("final post", func() bool { return len(d.of("done")) == 1 })
	if got, want := string(d.of("done")[0].Body), `{"output":"<é & 😀>"}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
}

// TestRaise checks the exception report: a JSON string (Python separators) whose fields
// match runpod-python's.
func TestRaise(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, nil)
	d.queue(jobAnswer(`{"id":"j1","input":{"raise":"boom é"}}`), jobAnswer(`{"id":"j2","input":{"raise":"bad","stream":1}}`))
	d.waitFor("two finals", func() bool { return len(d.of("done")) == 2 })

	var body map[string]string
	if err := json.Unmarshal(d.jobPosts("j1")[0].Body, &body); err != nil || len(body) != 1 {
		t.Fatalf("raise body %s: want only a string error (%v)", d.jobPosts("j1")[0].Body, err)
	}
	const prefix = `{"error_type": "<class 'RuntimeError'>", "error_message": "boom \u00e9", "error_traceback": "Traceback (most recent call last):\n`
	if !strings.HasPrefix(body["error"], prefix) {
		t.Errorf("error string %q\nwant prefix %q", body["error"], prefix)
	}
	var report map[string]string
	if err := json.Unmarshal([]byte(body["error"]), &report); err != nil {
		t.Fatalf("error string is not JSON: %v", err)
	}
	want := map[string]string{"error_type": "<class 'RuntimeError'>", "error_message": "boom é",
		"hostname": "host-1", "worker_id": "w1", "runpod_version": "1.12.0"}
	for k, v := range want {
		if report[k] != v {
			t.Errorf("report[%s] = %q, want %q", k, report[k], v)
		}
	}
	if !strings.HasSuffix(report["error_traceback"], "RuntimeError: boom é\n") {
		t.Errorf("traceback %q", report["error_traceback"])
	}

	posts := d.jobPosts("j2")
	if len(posts) != 2 || !strings.Contains(posts[1].URL, "isStream=true") {
		t.Fatalf("stream raise posts: %v", posts)
	}
	var sbody map[string]string
	_ = json.Unmarshal(posts[1].Body, &sbody)
	if !strings.HasPrefix(sbody["error"], "handler: bad \ntraceback: Traceback") {
		t.Errorf("generator error %q", sbody["error"])
	}
}

// TestTakeURLs checks the exact take URLs for each need and holding state.
func TestTakeURLs(t *testing.T) {
	cases := []struct {
		name string
		held int
		need int
		want string
	}{
		{"single, idle", 0, 1, "http://d/v2/ep/job-take/w1?gpu=X&job_in_progress=0"},
		{"single, busy", 1, 1, "http://d/v2/ep/job-take/w1?gpu=X&job_in_progress=1"},
		{"batch, idle", 0, 3, "http://d/v2/ep/job-take-batch/w1?gpu=X&batch_size=3&job_in_progress=0"},
		{"batch, busy", 2, 2, "http://d/v2/ep/job-take-batch/w1?gpu=X&batch_size=2&job_in_progress=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &Worker{cfg: Config{TakeURL: "http://d/v2/ep/job-take/w1?gpu=X"}, jobs: newJobSet()}
			for i := range tc.held {
				w.jobs.add(string(rune('a'+i)), func(error) {})
			}
			if got := w.takeURL(tc.need); got != tc.want {
				t.Errorf("takeURL(%d) = %s, want %s", tc.need, got, tc.want)
			}
		})
	}
}

// TestConcurrencyTakes runs a worker with WORKER_CONCURRENCY=2 and checks it asks for a
// batch when idle, a single job when one slot is free, and runs both jobs at once.
func TestConcurrencyTakes(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, map[string]string{"WORKER_CONCURRENCY": "2", "RUNPOD_PING_INTERVAL": "20"})
	d.waitFor("a batch take", func() bool { return len(d.of("batch")) > 0 })
	if got, want := d.of("batch")[0].URL, "/v2/ep/job-take-batch/w1?gpu=X&batch_size=2&job_in_progress=0"; got != want {
		t.Errorf("first take %s, want %s", got, want)
	}
	if n := len(d.of("take")); n != 0 {
		t.Errorf("%d single takes while idle with concurrency 2", n)
	}
	// One job from a batch take: the next take wants one more, as a single take.
	d.queue(jobAnswer(`[{"id":"j1","input":{"sleep_ms":400}}]`))
	d.waitFor("a single take while busy", func() bool { return len(d.of("take")) > 0 })
	if got, want := d.of("take")[0].URL, "/v2/ep/job-take/w1?gpu=X&job_in_progress=1"; got != want {
		t.Errorf("take while holding one job: %s, want %s", got, want)
	}
	d.queue(jobAnswer(`{"id":"j2","input":{"sleep_ms":100}}`))
	d.waitFor("a ping listing both jobs", func() bool {
		return slices.ContainsFunc(d.of("ping"), func(r recorded) bool {
			return r.URL == "/v2/ep/ping/w1?gpu=X&job_id=j1%2Cj2&runpod_version=1.12.0"
		})
	})
	d.waitFor("both results", func() bool { return len(d.of("done")) == 2 })
}

// TestTakeAnswers checks the worker's reaction to each take answer: which jobs run and how
// long it waits before the next take.
func TestTakeAnswers(t *testing.T) {
	cases := []struct {
		name        string
		concurrency string
		first       answer
		wantJobs    []string // jobs that must get a final post
		minGap      time.Duration
		maxGap      time.Duration
	}{
		{"204 re-polls at once", "1", answer{status: 204}, nil, 0, 250 * time.Millisecond},
		{"400 re-polls at once", "1", answer{status: 400}, nil, 0, 250 * time.Millisecond},
		{"429 waits", "1", answer{status: 429}, nil, 300 * time.Millisecond, 0},
		{"500 pauses briefly", "1", answer{status: 500}, nil, 100 * time.Millisecond, 0},
		{"404 pauses briefly", "1", answer{status: 404}, nil, 100 * time.Millisecond, 0},
		{"non-JSON 200 is no job", "1", answer{status: 200, body: `{"id":"x","input":{}}`, contentType: "text/plain"}, nil, 0, 0},
		{"empty JSON 200 is no job", "1", answer{status: 200, contentType: "application/json"}, nil, 0, 0},
		{"object missing input", "1", jobAnswer(`{"id":"x"}`), nil, 0, 0},
		{"object missing id", "1", jobAnswer(`{"input":{}}`), nil, 0, 0},
		{"array to a single take uses one", "1", jobAnswer(`[{"id":"a","input":{}},{"id":"b","input":{}}]`), []string{"a"}, 0, 0},
		{"batch capped at batch_size", "2", jobAnswer(`[{"id":"a","input":{}},{"id":"b","input":{}},{"id":"c","input":{}}]`), []string{"a", "b"}, 0, 0},
		{"batch skips bad items", "2", jobAnswer(`[{"id":"a"},{"id":"b","input":{}}]`), []string{"b"}, 0, 0},
		{"object to a batch take", "2", jobAnswer(`{"id":"a","input":{}}`), []string{"a"}, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newFakeDaemon(t)
			d.queue(tc.first, jobAnswer(`{"id":"last","input":{}}`))
			startWorker(t, d, map[string]string{"WORKER_CONCURRENCY": tc.concurrency})
			d.waitFor("the last job's result", func() bool { return len(d.jobPosts("last")) == 1 })
			time.Sleep(30 * time.Millisecond)
			var got []string
			for _, r := range d.of("done") {
				if id := r.Path[strings.LastIndex(r.Path, "/")+1:]; id != "last" {
					got = append(got, id)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.wantJobs) {
				t.Errorf("jobs run %v, want %v", got, tc.wantJobs)
			}
			takes := d.of("take", "batch")
			gap := takes[1].At.Sub(takes[0].At)
			if gap < tc.minGap || tc.maxGap > 0 && gap > tc.maxGap {
				t.Errorf("gap between first and second take %v, want [%v, %v]", gap, tc.minGap, tc.maxGap)
			}
		})
	}
}

// TestPings checks the heartbeat: one at start without job_id, then the held job listed,
// runpod_version always, raw Authorization.
func TestPings(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, map[string]string{"RUNPOD_PING_INTERVAL": "20"})
	d.waitFor("first ping", func() bool { return len(d.of("ping")) > 0 })
	first := d.of("ping")[0]
	if first.URL != "/v2/ep/ping/w1?gpu=X&runpod_version=1.12.0" || first.Method != "GET" {
		t.Errorf("first ping %s %s", first.Method, first.URL)
	}
	if a := first.Header.Get("Authorization"); a != "secret-key" {
		t.Errorf("ping Authorization %q", a)
	}
	d.queue(jobAnswer(`{"id":"j1","input":{"sleep_ms":150}}`))
	withJob := "/v2/ep/ping/w1?gpu=X&job_id=j1&runpod_version=1.12.0"
	d.waitFor("a ping with the job", func() bool {
		return slices.ContainsFunc(d.of("ping"), func(r recorded) bool { return r.URL == withJob })
	})
	d.waitFor("the result", func() bool { return len(d.of("done")) == 1 })
	done := d.of("done")[0].At
	d.waitFor("a ping without the job after its result", func() bool {
		return slices.ContainsFunc(d.of("ping"), func(r recorded) bool { return r.At.After(done) && r.URL == first.URL })
	})
}

func TestPingURL(t *testing.T) {
	cases := []struct {
		base string
		ids  []string
		want string
	}{
		{"http://d/ping/w1?gpu=X", nil, "http://d/ping/w1?gpu=X&runpod_version=1.12.0"},
		{"http://d/ping/w1?gpu=X", []string{"a"}, "http://d/ping/w1?gpu=X&job_id=a&runpod_version=1.12.0"},
		{"http://d/ping/w1?gpu=X", []string{"a", "b"}, "http://d/ping/w1?gpu=X&job_id=a%2Cb&runpod_version=1.12.0"},
		{"http://d/ping/w1", nil, "http://d/ping/w1?runpod_version=1.12.0"},
		{"http://d/ping/w1", []string{"a b"}, "http://d/ping/w1?job_id=a+b&runpod_version=1.12.0"},
	}
	for _, tc := range cases {
		if got := pingURL(tc.base, tc.ids); got != tc.want {
			t.Errorf("pingURL(%q, %v) = %s, want %s", tc.base, tc.ids, got, tc.want)
		}
	}
}

// TestHeadersOnGets checks the SDK session headers on takes, stop polls and pings.
func TestHeadersOnGets(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, nil)
	d.waitFor("take, stop and ping", func() bool {
		return len(d.of("take")) > 0 && len(d.of("stop")) > 0 && len(d.of("ping")) > 0
	})
	for _, r := range d.of("take", "stop", "ping") {
		if r.Method != "GET" || r.Header.Get("Authorization") != "secret-key" ||
			r.Header.Get("Content-Type") != "application/json" ||
			!strings.HasPrefix(r.Header.Get("User-Agent"), "RunPod-Python-SDK/1.12.0 ") {
			t.Fatalf("%s %s headers %v", r.Method, r.URL, r.Header)
		}
	}
}

// TestStopChannel: a job named on the stop channel is cancelled mid-sleep, posts nothing,
// leaves the pings, and the worker takes the next job.
func TestStopChannel(t *testing.T) {
	d := newFakeDaemon(t)
	startWorker(t, d, map[string]string{"RUNPOD_PING_INTERVAL": "20"})
	d.queue(jobAnswer(`{"id":"j1","input":{"sleep_ms":4000,"progress":1}}`))
	d.waitFor("the job's progress post", func() bool { return len(d.jobPosts("j1")) == 1 })
	stopped := time.Now()
	d.stops <- `{"jobsToStop":["j1",7,"unknown"]}`
	d.waitFor("an idle take after the stop", func() bool {
		return slices.ContainsFunc(d.of("take"), func(r recorded) bool {
			return r.At.After(stopped) && strings.HasSuffix(r.URL, "job_in_progress=0")
		})
	})
	d.queue(jobAnswer(`{"id":"j2","input":{}}`))
	d.waitFor("the next job's result", func() bool { return len(d.jobPosts("j2")) == 1 })
	time.Sleep(30 * time.Millisecond)
	if posts := d.jobPosts("j1"); len(posts) != 1 {
		t.Errorf("stopped job posted %d times after its progress update: %s", len(posts)-1, d.dump())
	}
	if got, want := d.of("stop")[0].URL, "/v2/ep/job-stop/w1?gpu=X"; got != want {
		t.Errorf("stop URL %s, want %s", got, want)
	}
	d.waitFor("a ping without the stopped job", func() bool {
		p := d.of("ping")
		return p[len(p)-1].At.After(stopped) && !strings.Contains(p[len(p)-1].URL, "job_id=")
	})
}

// TestResultRetries: 5xx is retried up to 3 attempts in total, 1.5x apart; 4xx and
// connection failures are not retried.
func TestResultRetries(t *testing.T) {
	cases := []struct {
		name     string
		statuses []int // by attempt; past the end: 200
		attempts int
	}{
		{"200 once", nil, 1},
		{"500 always: 3 attempts", []int{500, 500, 500, 500}, 3},
		{"503 then ok", []int{503}, 2},
		{"502 twice then ok", []int{502, 502}, 3},
		{"400 not retried", []int{400}, 1},
		{"404 not retried", []int{404, 404}, 1},
		{"429 not retried", []int{429}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newFakeDaemon(t)
			d.setDoneStatus(func(n int) int {
				if n <= len(tc.statuses) {
					return tc.statuses[n-1]
				}
				return 200
			})
			startWorker(t, d, nil)
			d.queue(jobAnswer(`{"id":"j1","input":{}}`))
			d.waitFor("the attempts", func() bool { return len(d.of("done")) >= tc.attempts })
			time.Sleep(100 * time.Millisecond) // a further retry would come within 25 ms
			posts := d.of("done")
			if len(posts) != tc.attempts {
				t.Fatalf("%d attempts, want %d", len(posts), tc.attempts)
			}
			for i := 1; i < len(posts); i++ {
				want := 10 * time.Millisecond * time.Duration(2+i-1) / 2 // 10 ms, 15 ms
				if gap := posts[i].At.Sub(posts[i-1].At); gap < want {
					t.Errorf("retry %d after %v, want at least %v", i, gap, want)
				}
				if !slices.Equal(posts[i].Body, posts[0].Body) || posts[i].URL != posts[0].URL {
					t.Errorf("retry %d differs from the first attempt", i)
				}
			}
		})
	}
}

// TestStreamRefusedGoesOn: job-stream posts answered 4xx (emberd refuses chunks past a
// job's unread cap, or after it ended) are not retried and do not stop the generator or
// the worker, as in the SDK: every chunk is posted once, then the final result, and the
// worker takes the next job.
func TestStreamRefusedGoesOn(t *testing.T) {
	for _, status := range []int{http.StatusRequestEntityTooLarge, http.StatusConflict} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			d := newFakeDaemon(t)
			d.mu.Lock()
			d.streamStatus = status
			d.mu.Unlock()
			startWorker(t, d, nil)
			d.queue(jobAnswer(`{"id":"j1","input":{"stream_flood":{"chunks":3,"bytes":10}}}`), jobAnswer(`{"id":"j2","input":{"output":1}}`))
			d.waitFor("the next job's result", func() bool { return len(d.jobPosts("j2")) == 1 })
			checkPosts(t, d.jobPosts("j1"), []post{
				streamPost("j1", `{"output":"xxxxxxxx"}`), streamPost("j1", `{"output":"xxxxxxxx"}`), streamPost("j1", `{"output":"xxxxxxxx"}`),
				donePost("j1", "true", `{"output":[]}`),
			})
		})
	}
}

// TestConnectionErrorNotRetried: the daemon drops the connection on the result post; the
// SDK does not retry connection errors, and neither does this worker.
func TestConnectionErrorNotRetried(t *testing.T) {
	d := newFakeDaemon(t)
	d.setDoneStatus(func(int) int { return -1 })
	startWorker(t, d, nil)
	d.queue(jobAnswer(`{"id":"j1","input":{}}`))
	d.waitFor("the attempt", func() bool { return len(d.of("done")) >= 1 })
	time.Sleep(100 * time.Millisecond)
	if n := len(d.of("done")); n != 1 {
		t.Errorf("%d attempts after a dropped connection, want 1", n)
	}
}

// TestShutdownDrains: cancelling the worker (SIGTERM) stops taking at once but lets the
// held job finish and report; pings go on during the drain.
func TestShutdownDrains(t *testing.T) {
	d := newFakeDaemon(t)
	tw := startWorker(t, d, map[string]string{"RUNPOD_PING_INTERVAL": "20"})
	d.queue(jobAnswer(`{"id":"j1","input":{"sleep_ms":200}}`))
	d.waitFor("the job held in a ping", func() bool {
		return slices.ContainsFunc(d.of("ping"), func(r recorded) bool { return strings.Contains(r.URL, "job_id=j1") })
	})
	cancelled := time.Now()
	tw.cancel()
	select {
	case <-tw.done:
	case <-time.After(3 * time.Second):
		t.Fatal("worker did not drain")
	}
	posts := d.jobPosts("j1")
	if len(posts) != 1 || string(posts[0].Body) != `{"output":{"echo":{"sleep_ms":200}}}` {
		t.Fatalf("drained job posts %v", posts)
	}
	for _, r := range d.of("take") {
		if r.At.After(posts[0].At) {
			t.Errorf("take after the drain's final post: %s", r.URL)
		}
	}
	if !slices.ContainsFunc(d.of("ping"), func(r recorded) bool {
		return r.At.After(cancelled) && strings.Contains(r.URL, "job_id=j1")
	}) {
		t.Error("no ping listing the job during the drain")
	}
}

// TestExitInProcess: the exit instruction calls the exit hook with the code and posts
// nothing (the real process test is TestBinaryExit).
func TestExitInProcess(t *testing.T) {
	d := newFakeDaemon(t)
	tw := startWorker(t, d, nil)
	d.queue(jobAnswer(`{"id":"j1","input":{"exit":7,"output":"never"}}`))
	d.waitFor("the exit", func() bool { return len(tw.exitCodes()) == 1 })
	time.Sleep(30 * time.Millisecond)
	if got := tw.exitCodes(); got[0] != 7 {
		t.Errorf("exit code %v, want 7", got)
	}
	if n := len(d.jobPosts("j1")); n != 0 {
		t.Errorf("%d posts for a job whose handler exited", n)
	}
}
