package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/client"
)

// seedWorkers mimic emberd's GET /v1/workers: the scheduler's WorkerInfo
// in encoding/json, oldest first.
var seedWorkers = []string{
	`{"id":"w-3f2a9c1b7e04","endpointId":"ep-a1","state":"running","pid":41235,"startedAt":"2025-06-03T08:58:12.52311Z","jobs":["job-7","job-9"],"sdkVersion":"1.7.9","logPath":"/var/lib/ember/workers/w-3f2a9c1b7e04.log","generation":2,"outdated":true}`,
	`{"id":"w-b81d04e6a2c7","endpointId":"ep-b2","state":"initializing","pid":41301,"startedAt":"2025-06-03T08:59:40Z","jobs":[],"logPath":"/var/lib/ember/workers/w-b81d04e6a2c7.log","generation":1}`,
	`{"id":"w-0c9e5d3a1f66","endpointId":"ep-a1","state":"unhealthy","startedAt":"2025-06-03T08:30:00Z","jobs":[],"sdkVersion":"1.7.9","reason":"no ping for 30s","logPath":"/var/lib/ember/workers/w-0c9e5d3a1f66.log"}`,
	`{"id":"w-7e21c0b9d455","endpointId":"ep-b2","state":"parked","pid":40988,"startedAt":"2025-06-03T07:12:05Z","jobs":[],"sdkVersion":"1.7.9","logPath":"/var/lib/ember/workers/w-7e21c0b9d455.log","generation":3,"parkedBytes":4294967296,"parkedGpus":["GPU-1"]}`,
}

// seedLogs are the fake's worker logs; following one sends followLines
// after it and ends, as a worker that exits would.
var seedLogs = map[string]string{
	"w-3f2a9c1b7e04": "loading model\nworker ready\njob job-7 started\njob job-9 started\n",
}

const followLines = "job job-7 done\nexiting\n"

func (fd *fakeDaemon) listWorkers(w http.ResponseWriter, r *http.Request) {
	ep := r.URL.Query().Get("endpoint")
	out := []json.RawMessage{}
	for _, raw := range seedWorkers {
		var wk client.Worker
		json.Unmarshal([]byte(raw), &wk)
		if ep == "" || wk.EndpointID == ep {
			out = append(out, json.RawMessage(raw))
		}
	}
	b, _ := json.Marshal(map[string]any{"workers": out})
	send(w, 200, string(b))
}

func (fd *fakeDaemon) workerLogs(w http.ResponseWriter, r *http.Request) {
	text, ok := seedLogs[r.PathValue("id")]
	if !ok {
		send(w, 404, fmt.Sprintf(`{"error":"worker %s not found"}`, r.PathValue("id")))
		return
	}
	if v := r.URL.Query().Get("tail"); v != "" {
		n, _ := strconv.Atoi(v)
		lines := strings.SplitAfter(text, "\n")
		lines = lines[:len(lines)-1] // after the last newline
		text = strings.Join(lines[max(len(lines)-n, 0):], "")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, text)
	if r.URL.Query().Get("follow") == "1" {
		w.(http.Flusher).Flush()
		for _, l := range strings.SplitAfter(followLines, "\n") {
			io.WriteString(w, l)
			w.(http.Flusher).Flush()
		}
	}
}

func TestWorkerGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"worker_list", []string{"worker", "list"}},
		{"worker_list_json", []string{"workers", "ls", "--json"}},
		{"worker_list_endpoint", []string{"worker", "list", "--endpoint", "echo"}},
		{"worker_list_empty", []string{"worker", "list", "--endpoint", "llm"}},
		{"worker_list_empty_json", []string{"worker", "list", "--endpoint", "ep-c3", "--json"}},
		{"worker_list_unknown_endpoint", []string{"worker", "list", "--endpoint", "nope"}},
		{"logs", []string{"logs", "w-3f2a9c1b7e04"}},
		{"logs_tail_follow", []string{"logs", "w-3f2a9c1b7e04", "--tail", "1", "-f"}},
		{"logs_unknown", []string{"logs", "w-0000000000ff"}},
		{"logs_no_arg", []string{"logs"}},
		{"logs_endpoint", []string{"logs", "--endpoint", "echo", "-t"}},
		{"logs_endpoint_unknown", []string{"logs", "--endpoint", "nope"}},
		{"logs_endpoint_and_worker", []string{"logs", "--endpoint", "echo", "w-3f2a9c1b7e04"}},
		{"logs_endpoint_tail", []string{"logs", "--endpoint", "echo", "--tail", "5"}},
		{"logs_since_no_endpoint", []string{"logs", "w-3f2a9c1b7e04", "--since", "10m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fd := newFakeDaemon(t, seedEndpoints...)
			r := runEmber(t, fd.addr, invocation{args: tt.args})
			golden(t, tt.name, r, fd.addr, "ADDR")
		})
	}
}

// TestLogsRequest checks what "ember logs" asks for.
func TestLogsRequest(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	for _, args := range [][]string{
		{"logs", "w-3f2a9c1b7e04"},
		{"logs", "w-3f2a9c1b7e04", "-f", "--tail", "20"},
		{"logs", "w-3f2a9c1b7e04", "--tail", "0", "--follow"},
		{"logs", "--endpoint", "echo"},
		{"worker", "logs", "--endpoint", "ep-b2", "-f", "--since", "2026-12-04T10:00:00Z", "--timestamps"},
	} {
		if r := runEmber(t, fd.addr, invocation{args: args}); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	var got []string
	for _, req := range fd.requests() {
		if req.Auth != "Bearer "+testKey {
			t.Errorf("%s %s sent Authorization %q", req.Method, req.Path, req.Auth)
		}
		got = append(got, req.Method+" "+req.Path+"?"+req.Query)
	}
	want := []string{
		"GET /v1/workers/w-3f2a9c1b7e04/logs?",
		"GET /v1/workers/w-3f2a9c1b7e04/logs?follow=1&tail=20",
		"GET /v1/workers/w-3f2a9c1b7e04/logs?follow=1&tail=0",
		"GET /v1/endpoints/echo?", // a name: looked up among the endpoints
		"GET /v1/endpoints?",
		"GET /v1/endpoints/ep-a1/logs?",
		"GET /v1/endpoints/ep-b2?",
		"GET /v1/endpoints/ep-b2/logs?follow=1&since=2026-12-04T10%3A00%3A00Z&timestamps=1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestLogsFollowInterrupted: Ctrl-C ends "ember logs -f" with status 0.
func TestLogsFollowInterrupted(t *testing.T) {
	started := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/workers/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	})
	fd := newFakeDaemon(t)
	srv := httptest.NewServer(fd.authAndRecord(mux))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	var stdout, stderr strings.Builder
	env := map[string]string{"EMBER_ADDR": srv.URL, "EMBER_API_KEY": testKey}
	a := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	code := a.execute(ctx, []string{"logs", "w-3f2a9c1b7e04", "-f"})
	if code != 0 || stdout.String() != "first\n" || stderr.String() != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
