package main

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUpdateSendsOnlySetFlags checks the PATCH body: the gateway derives the
// update mask from its keys, so a flag left alone must not be sent.
func TestUpdateSendsOnlySetFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // JSON body; "" when no PATCH may be sent
		err  string
	}{
		{name: "one flag", args: []string{"echo", "--workers-max", "0"}, want: `{"workersMax":0}`},
		{
			name: "new fields",
			args: []string{"ep-b2", "--init-timeout", "10m", "--flashboot=false", "--flashboot-window", "1h", "--max-attempts", "1", "--gpu-memory-mb", "0"},
			want: `{"initTimeout":600,"flashboot":false,"flashbootWindow":3600,"maxAttempts":1,"gpuMemoryMb":0}`,
		},
		{name: "env merges", args: []string{"echo", "-e", "A=1", "-e", "LOG_LEVEL=info"}, want: `{"env":{"A":"1","LOG_LEVEL":"info"}}`},
		{name: "command", args: []string{"echo", "--", "python", "-m", "w"}, want: `{"command":["python","-m","w"]}`},
		{name: "nothing", args: []string{"echo"}, err: "nothing to change"},
		{name: "no endpoint", args: []string{"--workers-max", "1"}, err: "takes one ENDPOINT, got 0 arguments"},
		{name: "empty command", args: []string{"echo", "--"}, err: `nothing after "--"`},
		{name: "bad window", args: []string{"echo", "--flashboot-window", "-5"}, err: "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fd := newFakeDaemon(t, seedEndpoints...)
			r := runEmber(t, fd.addr, invocation{args: append([]string{"endpoint", "update"}, tt.args...)})
			var patches []fakeRequest
			for _, req := range fd.requests() {
				if req.Method == "PATCH" {
					patches = append(patches, req)
				}
			}
			if tt.err != "" {
				if r.code != 1 || !strings.Contains(r.stderr, tt.err) || len(patches) != 0 {
					t.Fatalf("exit %d, stderr %q, %d PATCHes; want exit 1 and %q without one", r.code, r.stderr, len(patches), tt.err)
				}
				return
			}
			if r.code != 0 || len(patches) != 1 {
				t.Fatalf("exit %d, stderr %q, %d PATCHes", r.code, r.stderr, len(patches))
			}
			if !strings.HasPrefix(patches[0].Path, "/v1/endpoints/ep-") {
				t.Errorf("PATCH %s: want the endpoint's ID, not its name", patches[0].Path)
			}
			var got, want any
			if err := json.Unmarshal([]byte(patches[0].Body), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("body = %s\nwant   %s", patches[0].Body, tt.want)
			}
		})
	}
}

// TestStatsRequests checks what "ember endpoint stats" asks for: names are
// resolved once, repeats dropped, and no argument means every endpoint in
// the daemon's order.
func TestStatsRequests(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"/v1/endpoints", "/v1/endpoints/ep-b2/stats", "/v1/endpoints/ep-a1/stats", "/v1/endpoints/ep-c3/stats"}},
		{[]string{"llm", "ep-c3"}, []string{"/v1/endpoints/llm", "/v1/endpoints", "/v1/endpoints/ep-c3", "/v1/endpoints/ep-c3/stats"}},
	} {
		fd := newFakeDaemon(t, seedEndpoints...)
		r := runEmber(t, fd.addr, invocation{args: append([]string{"endpoint", "stats"}, tt.args...)})
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.stderr)
		}
		var got []string
		for _, req := range fd.requests() {
			got = append(got, req.Path)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v: requests\n%s\nwant\n%s", tt.args, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
}

// TestStatsWatch: --watch redraws until Ctrl-C, which ends it with status
// 0; off a terminal each table comes under a timestamp line.
func TestStatsWatch(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}
	var stdout, stderr lockedBuffer
	a := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	a.now = func() time.Time { return testClock }
	done := make(chan int)
	go func() { done <- a.execute(ctx, []string{"endpoint", "stats", "echo", "--watch", "100ms"}) }()
	const row = "\nep-a1  echo "
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(stdout.String(), row) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 || stderr.String() != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	tables := strings.Count(out, row)
	if tables < 3 {
		t.Fatalf("%d refreshes in 10s, want 3:\n%s", tables, out)
	}
	// Ctrl-C may land between a timestamp and its table.
	header := testClock.UTC().Format("2006-01-02 15:04:05") + "  every 100ms\n\n"
	if n := strings.Count(out, header); n != tables && n != tables+1 {
		t.Errorf("%d timestamps for %d tables:\n%s", n, tables, out)
	}
	// The name was resolved once, not on every refresh.
	resolves := 0
	for _, req := range fd.requests() {
		if !strings.HasSuffix(req.Path, "/stats") {
			resolves++
		}
	}
	if resolves != 2 {
		t.Errorf("%d requests to resolve the name, want 2 (GET by ID, then the list): %+v", resolves, fd.requests())
	}
}

// lockedBuffer is a strings.Builder safe to read while ember writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
