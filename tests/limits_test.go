package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/limits"
)

// paddedJSON returns prefix + padding + suffix, exactly n bytes long, the
// padding a run of 'a' inside a JSON string.
func paddedJSON(t *testing.T, prefix, suffix string, n int) []byte {
	t.Helper()
	pad := n - len(prefix) - len(suffix)
	if pad < 0 {
		t.Fatalf("%d bytes cannot hold %s...%s", n, prefix, suffix)
	}
	b := make([]byte, 0, n)
	b = append(b, prefix...)
	b = append(b, bytes.Repeat([]byte{'a'}, pad)...)
	return append(b, suffix...)
}

// jobBody is a job submission of exactly n bytes: {"input":{"s":"aaa..."}}.
func jobBody(t *testing.T, n int) []byte { return paddedJSON(t, `{"input":{"s":"`, `"}}`, n) }

// outputBody is a worker result or stream chunk of exactly n bytes.
func outputBody(t *testing.T, n int) []byte { return paddedJSON(t, `{"output":"`, `"}`, n) }

// spacePadded is v as JSON with spaces before its closing brace, exactly n
// bytes long: the whole body counts, whatever is in it.
func spacePadded(t *testing.T, v any, n int) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > n {
		t.Fatalf("%d bytes cannot hold %s", n, b)
	}
	out := make([]byte, 0, n)
	out = append(out, b[:len(b)-1]...)
	out = append(out, bytes.Repeat([]byte{' '}, n-len(b))...)
	return append(out, '}')
}

// want413 checks a 413 whose JSON names the route and the limit.
func want413(t *testing.T, what string, code int, body []byte, route string, limit int) {
	t.Helper()
	var e struct {
		Error      string `json:"error"`
		LimitBytes int    `json:"limitBytes"`
	}
	if code != http.StatusRequestEntityTooLarge || json.Unmarshal(body, &e) != nil || e.LimitBytes != limit ||
		!strings.Contains(e.Error, route) || !strings.Contains(e.Error, strconv.Itoa(limit)+" bytes") {
		t.Errorf("%s: got %d %.300s; want 413 naming %s and %d bytes", what, code, body, route, limit)
	}
}

// TestBodyLimits: every body limit at the limit (accepted) and one byte
// over (413 naming the route and the limit), on every transport: /v2 run
// and runsync, /v1 jobs and endpoints, the worker's job-done and
// job-stream, gRPC Run.
func TestBodyLimits(t *testing.T) {
	t.Parallel()
	// Taking and posting 10 to 20 MiB bodies is slow under the race
	// detector: a long lease grace keeps the taken jobs with the worker.
	d := StartDaemon(t, "--lease-grace", "60s")
	key := "Bearer " + d.Key
	ep, dir := fakeEndpoint(t, d, "limits", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})
	f.startPinger(200 * time.Millisecond)

	for _, c := range []struct {
		what, path, route string
		limit             int
	}{
		{"/run", "/v2/" + ep + "/run", "POST /v2/{endpoint}/run", limits.RunBody},
		{"/runsync", "/v2/" + ep + "/runsync?wait=1000", "POST /v2/{endpoint}/runsync", limits.RunSyncBody},
		{"/v1 jobs", "/v1/endpoints/" + ep + "/jobs", "POST /v1/endpoints/{endpoint_id}/jobs", limits.RunBody},
	} {
		code, out := d.DoKey("POST", c.path, jobBody(t, c.limit), key)
		if code != 200 || !bytes.Contains(out, []byte(`"id"`)) {
			t.Errorf("%s at the limit (%d bytes): %d %.300s", c.what, c.limit, code, out)
		}
		code, out = d.DoKey("POST", c.path, jobBody(t, c.limit+1), key)
		want413(t, c.what+" one byte over", code, out, c.route, c.limit)
	}

	// Endpoints, create and update.
	spec := map[string]any{"name": "padded", "command": []string{workerBin}, "gpuCount": 0, "workersMax": 1}
	code, out := d.DoKey("POST", "/v1/endpoints", spacePadded(t, spec, limits.EndpointBody), key)
	if code != 200 {
		t.Fatalf("create endpoint at the limit: %d %.300s", code, out)
	}
	var created struct{ ID string }
	json.Unmarshal(out, &created)
	spec["name"] = "padded-over"
	code, out = d.DoKey("POST", "/v1/endpoints", spacePadded(t, spec, limits.EndpointBody+1), key)
	want413(t, "create endpoint one byte over", code, out, "POST /v1/endpoints", limits.EndpointBody)
	patch := map[string]any{"idleTimeout": 7}
	if code, out := d.DoKey("PATCH", "/v1/endpoints/"+created.ID, spacePadded(t, patch, limits.EndpointBody), key); code != 200 {
		t.Errorf("update endpoint at the limit: %d %.300s", code, out)
	}
	code, out = d.DoKey("PATCH", "/v1/endpoints/"+created.ID, spacePadded(t, patch, limits.EndpointBody+1), key)
	want413(t, "update endpoint one byte over", code, out, "PATCH /v1/endpoints", limits.EndpointBody)

	// The worker API: a stream chunk and a result at the limit and over.
	job := f.takeJob("")
	id := job["id"].(string)
	streamURL := d.URL + "/v2/" + ep + "/job-stream/" + f.ID + "/" + id
	code, out = f.call("POST", streamURL, string(outputBody(t, limits.ChunkBody)))
	if code != 200 {
		t.Errorf("job-stream at the limit: %d %.300s", code, out)
	}
	code, out = f.call("POST", streamURL, string(outputBody(t, limits.ChunkBody+1)))
	want413(t, "job-stream one byte over", code, out, "POST /v2/{endpoint}/job-stream", limits.ChunkBody)
	if code := f.done(id, string(outputBody(t, limits.ResultBody))); code != 200 {
		t.Errorf("job-done at the limit: %d", code)
	}
	if st := d.WaitStatus(ep, id, 20*time.Second, "COMPLETED", "FAILED"); st["status"] != "COMPLETED" {
		t.Errorf("job with a result at the limit: %v", st["status"])
	}
	// A result over the limit fails its job with the reason, with a 200:
	// the SDK drops a result answered 4xx and the job would stay stuck.
	job = f.takeJob("")
	id = job["id"].(string)
	if code := f.done(id, string(outputBody(t, limits.ResultBody+1))); code != 200 {
		t.Errorf("job-done one byte over: %d, want 200 (the job fails instead)", code)
	}
	if st := d.WaitStatus(ep, id, 20*time.Second, "COMPLETED", "FAILED"); st["status"] != "FAILED" || !strings.Contains(fmt.Sprint(st["error"]), "result limit") {
		t.Errorf("job with a result one byte over: %v %v, want FAILED naming the result limit", st["status"], st["error"])
	}

	// gRPC Run: the message at the limit, and one byte over.
	jobs := emberv1.NewJobServiceClient(grpcConn(t, d))
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", key), time.Minute)
	defer cancel()
	req := grpcJobOfSize(t, ep, limits.RunBody)
	if _, err := jobs.Run(ctx, req); err != nil {
		t.Errorf("gRPC Run at the limit (%d bytes): %v", proto.Size(req), err)
	}
	req = grpcJobOfSize(t, ep, limits.RunBody+1)
	_, err := jobs.Run(ctx, req)
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), `field "input"`) || !strings.Contains(st.Message(), strconv.Itoa(limits.RunBody)) {
		t.Errorf("gRPC Run one byte over: %v; want ResourceExhausted naming the input and the limit", err)
	}
}

// grpcJobOfSize is a RunJobRequest whose encoding is exactly n bytes.
func grpcJobOfSize(t *testing.T, ep string, n int) *emberv1.RunJobRequest {
	t.Helper()
	pad := n
	for range 8 {
		req := &emberv1.RunJobRequest{EndpointId: ep, Input: structpb.NewStringValue(strings.Repeat("a", pad))}
		size := proto.Size(req)
		if size == n {
			return req
		}
		pad += n - size
	}
	t.Fatalf("no RunJobRequest of exactly %d bytes", n)
	return nil
}

// rawRequest writes a whole request on a fresh connection before reading
// anything, as Python's urllib and requests do, and returns the answer.
func rawRequest(t *testing.T, addr, head string, body []byte) (*http.Response, []byte, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("write headers: %v", err)
	}
	if _, err := c.Write(body); err != nil {
		t.Fatalf("write body: %v (emberd closed the connection while the body was sent)", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the answer after writing the whole body: %v", err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, out, c, br
}

// TestOversizedBodyWrittenBeforeReading: a client that writes its whole
// oversized body before it reads gets the 413 with its JSON, with a
// Content-Length or chunked, and the connection stays usable; a body past
// the drain bound is answered at once and the connection closed.
func TestOversizedBodyWrittenBeforeReading(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("drain", nil)
	n := limits.RunBody + 1
	body := jobBody(t, n)
	head := fmt.Sprintf("POST /v2/%s/run HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", ep, d.Key, n)
	resp, out, c, br := rawRequest(t, d.Addr, head, body)
	want413(t, "whole body first, Content-Length", resp.StatusCode, out, "POST /v2/{endpoint}/run", limits.RunBody)
	// Drained to its end: the connection goes on.
	fmt.Fprintf(c, "GET /v2/%s/health HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n", ep, d.Key)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("next request on the same connection after the 413: %v %v", resp, err)
	}

	// Chunked: the size is learnt as it arrives.
	var chunked bytes.Buffer
	for b := body; len(b) > 0; {
		k := min(len(b), 1<<20)
		fmt.Fprintf(&chunked, "%x\r\n", k)
		chunked.Write(b[:k])
		chunked.WriteString("\r\n")
		b = b[k:]
	}
	chunked.WriteString("0\r\n\r\n")
	head = fmt.Sprintf("POST /v2/%s/run HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nTransfer-Encoding: chunked\r\n\r\n", ep, d.Key)
	resp, out, _, _ = rawRequest(t, d.Addr, head, chunked.Bytes())
	want413(t, "whole body first, chunked", resp.StatusCode, out, "POST /v2/{endpoint}/run", limits.RunBody)

	// Python requests itself, where the machine has it.
	if py, err := lookPython(); err == nil {
		script := `import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=b'{"input":"' + b'a' * int(sys.argv[3]) + b'"}', headers={"Authorization": sys.argv[2]})
try:
    urllib.request.urlopen(req)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
`
		outPy, err := runCmd(py, "-c", script, d.URL+"/v2/"+ep+"/run", d.Key, strconv.Itoa(limits.RunBody))
		if err != nil || !strings.HasPrefix(outPy, "413 ") || !strings.Contains(outPy, "limitBytes") {
			t.Errorf("python urllib with a body over the limit: %v %.300s", err, outPy)
		}
	}

	// Past the drain bound, by its Content-Length: 413 at once, and close.
	big := limits.DrainBound(limits.RunBody) + 1
	c2, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c2, "POST /v2/%s/run HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n", ep, d.Key, big)
	br2 := bufio.NewReader(c2)
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatalf("body past the drain bound: %v", err)
	}
	out, _ = io.ReadAll(resp.Body)
	want413(t, "Content-Length past the drain bound", resp.StatusCode, out, "POST /v2/{endpoint}/run", limits.RunBody)
	if !resp.Close {
		t.Error("a body past the drain bound left the connection open")
	}
}

// TestConnectionCap: with --max-connections 64, far more idle connections
// than that, then every slot held by long-polls, leave /healthz and the
// worker API answering; a client request on a reserve connection is told
// 503. emberd was started with a low soft limit on open files and raised
// it to the hard limit.
func TestConnectionCap(t *testing.T) {
	t.Parallel()
	const capN, idle = 64, 200
	var rl struct{ soft, hard uint64 }
	{
		soft, hard := fileLimits(t, os.Getpid())
		if hard <= 1024 {
			t.Skipf("hard limit on open files is %d: nothing to raise", hard)
		}
		rl.soft, rl.hard = soft, hard
	}
	d := StartDaemonWith(t, DaemonOptions{OpenFilesSoft: 1024}, "--max-connections", strconv.Itoa(capN))
	soft, hard := fileLimits(t, d.cmd.Process.Pid)
	if soft != hard || hard != rl.hard {
		t.Errorf("emberd's open-files limit: soft %d, hard %d; want soft raised to the hard limit %d", soft, hard, rl.hard)
	}
	var live struct {
		OpenFiles   struct{ Soft, Hard uint64 }
		Connections struct{ Open, Max, Reserve, Evicted, Refused, Rejected int }
	}
	healthz := func() {
		t.Helper()
		resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(d.URL + "/healthz")
		if err != nil {
			t.Fatalf("/healthz: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&live) != nil {
			t.Fatalf("/healthz: %d", resp.StatusCode)
		}
	}
	healthz()
	if live.OpenFiles.Soft != hard || live.Connections.Max != capN || live.Connections.Reserve != 16 {
		t.Errorf("/healthz: %+v; want soft %d, max %d, reserve 16", live, hard, capN)
	}

	// A worker, busy with a job for a while: longer than the steps below take
	// on a loaded machine, so that every slot stays held while they run.
	ep := d.CreateEndpoint("cap", map[string]any{"workersMax": 1, "scalerType": "REQUEST_COUNT", "scalerValue": 1})
	busy := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 20000}})
	if st := d.WaitStatus(ep, busy, time.Minute, "IN_PROGRESS"); st["status"] != "IN_PROGRESS" {
		t.Fatalf("busy job: %v, want IN_PROGRESS", st)
	}

	// 200 idle keep-alive connections without a key: the oldest idle are
	// closed as new ones come.
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < idle; i++ {
		c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /v2/%s/health HTTP/1.1\r\nHost: x\r\n\r\n", ep)
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close() // 401: no key; the connection stays open
		}
	}
	healthz()
	if c := live.Connections; c.Open > capN+16 || c.Evicted < idle-capN {
		t.Errorf("after %d idle connections: %+v; want at most %d open, at least %d idle ones closed", idle, c, capN+16, idle-capN)
	}

	// Every slot held by long-polls on the busy job (status-sync).
	var wg sync.WaitGroup
	var mu sync.Mutex
	held, refused := 0, 0
	results := make(chan string, capN+32)
	for i := 0; i < capN+8; i++ {
		c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("long-poll %d: %v", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(150 * time.Second))
		fmt.Fprintf(c, "GET /v2/%s/status-sync/%s?wait=120000 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n", ep, busy, d.Key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	// The long-polls still held are the ones in normal slots; those past
	// the cap were answered 503 at once.
	time.Sleep(500 * time.Millisecond)
	healthz()
	if c := live.Connections; c.Rejected == 0 {
		t.Errorf("no long-poll was refused past the cap: %+v", c)
	}
	// A client route on a new connection: refused with 503 (reserve),
	// unless an idle keep-alive connection was there to close for it (the
	// worker's between two pings, the harness client's): then it takes
	// that slot, and the eviction shows in the counters.
	evicted := live.Connections.Evicted
	code := rawGet(t, d, "/v2/"+ep+"/health", d.Key)
	healthz()
	switch {
	case code == http.StatusServiceUnavailable:
	case code == http.StatusOK && live.Connections.Evicted > evicted:
	default:
		t.Errorf("client request with every slot held: %d (idle connections closed for it: %d), want 503, or 200 after an idle one was closed",
			code, live.Connections.Evicted-evicted)
	}
	// The busy job finishes while every slot is held: its worker's
	// job-done gets through, and the held long-polls answer COMPLETED.
	wg.Wait()
	close(results)
	other := ""
	for r := range results {
		mu.Lock()
		switch {
		case strings.HasPrefix(r, "200 ") && strings.Contains(r, `"COMPLETED"`):
			held++
		case strings.HasPrefix(r, "503 "):
			refused++
		default:
			other = r
		}
		mu.Unlock()
	}
	if held == 0 || held+refused != capN+8 {
		t.Errorf("long-polls: %d answered COMPLETED, %d refused 503, others like %.300s", held, refused, other)
	}
	t.Logf("%d idle connections, then %d long-polls with --max-connections %d: %d held to COMPLETED, %d answered 503; stats %+v", idle, capN+8, capN, held, refused, live.Connections)
}

// rawGet makes one GET on a new connection and returns the status (0 when
// the connection was closed without an answer).
func rawGet(t *testing.T, d *Daemon, path, key string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n", path, key)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// fileLimits reads a process's open-files limit from /proc/PID/limits.
func fileLimits(t *testing.T, pid int) (soft, hard uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(f) >= 2 {
				soft, _ = strconv.ParseUint(f[0], 10, 64)
				hard, _ = strconv.ParseUint(f[1], 10, 64)
				return soft, hard
			}
		}
	}
	t.Fatalf("no open-files line in /proc/%d/limits:\n%s", pid, b)
	return 0, 0
}

func lookPython() (string, error) { return exec.LookPath("python3") }

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
