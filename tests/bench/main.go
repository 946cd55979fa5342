// Command bench measures Ember's job path against a same-run baseline and
// prints the figures `make bench` reports:
//
//   - warm /runsync round trip (p50, p99) against a bare Go HTTP handler that
//     does one fsynced Badger write per request;
//   - /run -> COMPLETED throughput with 8 warm workers, taking one job at a
//     time and taking up to 8 (batch takes), with emberd's CPU per job;
//   - /run acceptance rate (durable, group-committed) against the baseline's
//     fsynced writes with the same client concurrency;
//   - emberd RSS idle and with 100,000 queued jobs.
//
// -only tls times /runsync over plain HTTP and HTTPS (keep-alive and a new
// connection per request) and the bare TLS handshake (tls.go).
//
// -only stream instead floods job-stream for 30 s (-flood) with the example
// worker while no client reads, and reports emberd's RSS then and during one
// /stream read, against another emberd build given as -stream-baseline.
//
// Everything runs on loopback; every loop is bounded in count and time.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"

	"github.com/emberhq/ember/oci/runc"
)

var (
	emberdBin = flag.String("emberd", "bin/emberd", "emberd binary")
	workerBin = flag.String("worker", "bin/example-worker", "example worker binary")
	latN      = flag.Int("latency-requests", 2000, "sequential requests for the latency figures")
	tputN     = flag.Int("throughput-jobs", 20000, "jobs for the throughput figure")
	queuedN   = flag.Int("queued-jobs", 100000, "jobs queued for the RSS figure")
	clients   = flag.Int("clients", 32, "concurrent clients for throughput runs")
	only      = flag.String("only", "", "run only one part: jobs (the job path, process runtime), containers (runc figures, scaling, FlashBoot), disk (recovery from a full disk), stream (a job-stream flood), conns (idle connections against --max-connections) or tls (/runsync over plain HTTP and HTTPS)")
)

func main() {
	runc.InitIfChild() // the container figures start containers in-process
	flag.Parse()
	for _, p := range []*string{emberdBin, workerBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		*p = abs
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var httpc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 120 * time.Second}

func run() error {
	tmp, err := os.MkdirTemp("", "ember-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Println("# Ember benchmark (loopback, fsync on)")
	fmt.Printf("# %s, %d CPUs\n\n", time.Now().Format(time.RFC3339), numCPU())

	if *only == "containers" {
		return containerPart(tmp)
	}
	if *only == "disk" {
		return diskPart(tmp, 5)
	}
	if *only == "stream" {
		return streamPart(tmp)
	}
	if *only == "conns" {
		return connsPart(tmp)
	}
	if *only == "tls" {
		return tlsPart(tmp)
	}
	// ---- baseline ----
	base, stopBase, err := startBaseline(filepath.Join(tmp, "baseline"))
	if err != nil {
		return err
	}
	baseLat, err := latency(func() error { return post(base+"/write", `{"input":{"output":1}}`, nil) }, *latN)
	if err != nil {
		return err
	}
	baseRate, err := rate(*tputN, *clients, func() error { return post(base+"/write", `{"input":{"output":1}}`, nil) })
	if err != nil {
		return err
	}
	stopBase()

	// ---- ember ----
	d, err := startEmberd(filepath.Join(tmp, "ember"), "process")
	if err != nil {
		return err
	}
	defer d.stop()
	ep, err := d.warmEndpoint("bench-c1", 1)
	if err != nil {
		return err
	}
	rssIdle := rssMB(d.cmd.Process.Pid)
	emberLat, err := latency(func() error {
		var v map[string]any
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, &v); err != nil {
			return err
		}
		if v["status"] != "COMPLETED" {
			return fmt.Errorf("runsync answered %v", v)
		}
		return nil
	}, *latN)
	if err != nil {
		return err
	}
	// /run -> COMPLETED with 8 warm workers, each taking one job at a time
	// (the SDK's default) and then each taking up to 8 (batch takes).
	tput1, cpu1, err := d.throughput(ep)
	if err != nil {
		return err
	}
	if err := d.do("DELETE", "/v1/endpoints/"+ep, "", nil); err != nil {
		return err
	}
	ep8, err := d.warmEndpoint("bench-c8", 8)
	if err != nil {
		return err
	}
	tput8, cpu8, err := d.throughput(ep8)
	if err != nil {
		return err
	}

	// /run acceptance with no worker taking: an endpoint whose worker never
	// asks for jobs, so everything stays queued (this is also the RSS load).
	hold, err := d.createEndpoint(map[string]any{"name": "hold", "command": []string{"/bin/sleep", "3600"}, "gpuCount": 0, "workersMax": 1})
	if err != nil {
		return err
	}
	runRate, err := rate(*queuedN, *clients, func() error {
		return d.post("/v2/"+hold+"/run", `{"input":{"prompt":"a queued job of modest size, as a client would send it"}}`, nil)
	})
	if err != nil {
		return err
	}
	burstRSS := rssMB(d.cmd.Process.Pid)
	// At rest: the burst is over, Badger has compacted it, and emberd has
	// had a few quiet seconds (daemon/emberd/rest.go returns free heap to
	// the kernel after 3).
	time.Sleep(10 * time.Second)
	rssQueued := rssMB(d.cmd.Process.Pid)
	anonQueued, fileQueued := rssSplitMB(d.cmd.Process.Pid)
	if dl := os.Getenv("BENCH_DEBUG_LISTEN"); dl != "" {
		// The heap behind the RSS figure, for digging.
		if resp, err := http.Get("http://" + dl + "/debug/pprof/heap"); err == nil {
			if f, err := os.Create("emberd-heap.pprof"); err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
			resp.Body.Close()
		}
	}
	// Start to READY with those jobs in the store, against an empty store.
	d.stop()
	readyFull, err := timeToReady(filepath.Join(tmp, "ember"), 3)
	if err != nil {
		return err
	}
	readyEmpty, err := timeToReady(filepath.Join(tmp, "empty"), 3)
	if err != nil {
		return err
	}
	if d, err = startEmberd(filepath.Join(tmp, "ember"), "process"); err != nil {
		return err
	}

	fmt.Printf("%-52s %12s %12s %8s\n", "figure", "ember", "baseline", "ratio")
	row := func(name string, e, b float64, unit string) {
		ratio := ""
		if b > 0 {
			ratio = fmt.Sprintf("%.2fx", e/b)
		}
		fmt.Printf("%-52s %12s %12s %8s\n", name, fmt.Sprintf("%.3f %s", e, unit), fmt.Sprintf("%.3f %s", b, unit), ratio)
	}
	row("/runsync round trip p50 (baseline: 1 fsync write)", ms(emberLat.p50), ms(baseLat.p50), "ms")
	row("/runsync round trip p99", ms(emberLat.p99), ms(baseLat.p99), "ms")
	row(fmt.Sprintf("/run acceptance rate, %d clients", *clients), runRate, baseRate, "req/s")
	fmt.Printf("%-52s %12s\n", "/run -> COMPLETED, 8 warm workers x 1 job", fmt.Sprintf("%.0f jobs/s", tput1))
	fmt.Printf("%-52s %12s\n", "  emberd CPU per job", fmt.Sprintf("%.0f us", cpu1))
	fmt.Printf("%-52s %12s\n", "/run -> COMPLETED, 8 warm workers x 8 jobs (batch)", fmt.Sprintf("%.0f jobs/s", tput8))
	fmt.Printf("%-52s %12s\n", "  emberd CPU per job", fmt.Sprintf("%.0f us", cpu8))
	fmt.Printf("%-52s %12s\n", "emberd RSS idle (8 workers up)", fmt.Sprintf("%.1f MB", rssIdle))
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("emberd RSS as the %d-job burst ends", *queuedN), fmt.Sprintf("%.1f MB", burstRSS))
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("emberd RSS at rest with %d queued jobs", *queuedN), fmt.Sprintf("%.1f MB", rssQueued))
	fmt.Printf("%-52s %12s\n", "  anonymous (Go heap) / file (binary, Badger)", fmt.Sprintf("%.0f / %.0f MB", anonQueued, fileQueued))
	row(fmt.Sprintf("start to READY=1, %d jobs queued (baseline: none)", *queuedN), ms(readyFull), ms(readyEmpty), "ms")
	fmt.Println("\nThe round trip includes the client, both HTTP hops of the worker (take, job-done) and the")
	fmt.Println("example worker's handler (an immediate return); it is an upper bound on Ember's added latency.")
	fmt.Println()
	if err := d.do("DELETE", "/v1/endpoints/"+ep8, "", nil); err != nil {
		return err
	}
	if err := burst(d, map[string]any{"name": "burst-process", "command": []string{*workerBin}, "gpuCount": 0}, 1000, 50, 8); err != nil {
		return fmt.Errorf("burst (process runtime): %w", err)
	}
	d.stop()
	if *only == "jobs" {
		return nil
	}
	if err := diskPart(tmp, 5); err != nil {
		// Printed, not fatal: the container figures still follow.
		fmt.Printf("disk figures: FAILED: %v\n", err)
	}
	return containerPart(tmp)
}

// containerPart prints the figures that need the runc runtime (root).
func containerPart(tmp string) error {
	if err := containerFigures(tmp); err != nil {
		return fmt.Errorf("container figures: %w", err)
	}
	if os.Geteuid() == 0 {
		img, err := workerImage(tmp)
		if err != nil {
			return err
		}
		dc, err := startEmberd(filepath.Join(tmp, "ember-runc"), "runc")
		if err != nil {
			return err
		}
		defer dc.stop()
		if err := coldStarts(dc, img, 10); err != nil {
			return fmt.Errorf("cold starts: %w", err)
		}
		if err := revivals(dc, "bench/worker:latest", 20); err != nil {
			return fmt.Errorf("revivals: %w", err)
		}
		if err := burst(dc, map[string]any{"name": "burst", "image": "bench/worker:latest", "gpuCount": 0}, 1000, 50, 8); err != nil {
			return fmt.Errorf("burst: %w", err)
		}
	}
	return nil
}

// workerImage builds the example worker statically and packs it as an OCI
// archive, as make run does.
func workerImage(tmp string) (string, error) {
	bin := filepath.Join(tmp, "worker-static")
	build := exec.Command("go", "build", "-o", bin, "./examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the static worker: %v\n%s", err, out)
	}
	out := filepath.Join(tmp, "worker.tar")
	if b, err := exec.Command("go", "run", "./examples/worker/mkimage", "-binary", bin, "-o", out).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkimage: %v\n%s", err, b)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type lat struct{ p50, p99 time.Duration }

func latency(f func() error, n int) (lat, error) {
	ds := make([]time.Duration, 0, n)
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		t := time.Now()
		if err := f(); err != nil {
			return lat{}, err
		}
		ds = append(ds, time.Since(t))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return lat{p50: ds[len(ds)/2], p99: ds[len(ds)*99/100]}, nil
}

// rate runs n calls over c goroutines and returns calls per second.
func rate(n, c int, f func() error) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && time.Now().Before(deadline) {
				if err := f(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func post(url, body string, out any) error {
	resp, err := httpc.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// startBaseline serves POST /write: decode the body, one Badger transaction
// with SyncWrites (the same options emberd uses), answer 200 JSON.
func startBaseline(dir string) (string, func(), error) {
	db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(true).WithLogger(nil).
		WithMemTableSize(8 << 20).WithNumMemtables(2).WithBlockCacheSize(8 << 20).WithIndexCacheSize(4 << 20).
		WithNumLevelZeroTables(2).WithNumLevelZeroTablesStall(4).WithValueLogFileSize(64 << 20).WithNumCompactors(2))
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var v map[string]json.RawMessage
		if err := json.Unmarshal(body, &v); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		id := uuid.NewString()
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("j/"+id), body) }); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"status":"IN_QUEUE"}`, id)
	})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close(); db.Close() }, nil
}

type daemon struct {
	cmd     *exec.Cmd
	url     string
	key     string
	runtime string
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startEmberd starts the emberd under test with --rate-limits off: the
// figures are emberd's own throughput, and RunPod's per-key limits (1000
// /run per 10 s) would cap them at the limit.
// (An older build given with -emberd, for a baseline, has no such flag and
// no limits.)
func startEmberd(dir, runtime string, extra ...string) (*daemon, error) {
	if help, _ := exec.Command(*emberdBin, "-h").CombinedOutput(); bytes.Contains(help, []byte("-rate-limits")) {
		extra = append([]string{"--rate-limits", "off"}, extra...)
	}
	return startEmberdBin(*emberdBin, dir, runtime, extra...)
}

// startEmberdBin starts the emberd binary bin (the stream part also runs a
// baseline build) with extra flags.
func startEmberdBin(bin, dir, runtime string, extra ...string) (*daemon, error) {
	addr := freeAddr()
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	args := []string{"--data-dir", dir, "--listen", addr, "--grpc-listen", freeAddr(), "--runtime", runtime, "--log-level", "warn", "--debug-listen", os.Getenv("BENCH_DEBUG_LISTEN")}
	if runtime == "runc" {
		// make build puts ember-init next to emberd.
		initBin, err := filepath.Abs(filepath.Join(filepath.Dir(bin), "ember-init"))
		if err != nil {
			return nil, err
		}
		args = append(args, "--worker-init", initBin)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, url: "http://" + addr, runtime: runtime}
	for i := 0; i < 300; i++ {
		if b, err := os.ReadFile(filepath.Join(dir, "api.key")); err == nil {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				d.key = strings.TrimSpace(string(b))
				return d, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	return nil, fmt.Errorf("emberd did not start; see %s.log", dir)
}

func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
	}
}

func (d *daemon) do(method, path, body string, out any) error {
	req, err := http.NewRequest(method, d.url+path, bytes.NewReader([]byte(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (d *daemon) post(path, body string, out any) error { return d.do("POST", path, body, out) }

func (d *daemon) createEndpoint(spec map[string]any) (string, error) {
	b, _ := json.Marshal(spec)
	var out struct{ ID string }
	if err := d.post("/v1/endpoints", string(b), &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

type health struct {
	Jobs    struct{ Completed, InQueue, InProgress int }
	Workers struct{ Idle, Running int }
}

func (d *daemon) health(ep string) (health, error) {
	var h health
	err := d.do("GET", "/v2/"+ep+"/health", "", &h)
	return h, err
}

func (d *daemon) completed(ep string) (int, error) {
	h, err := d.health(ep)
	return h.Jobs.Completed, err
}

// warmEndpoint creates an endpoint of 8 always-on example workers, each
// holding up to concurrency jobs, and waits until they are idle and warm.
func (d *daemon) warmEndpoint(name string, concurrency int) (string, error) {
	ep, err := d.createEndpoint(map[string]any{"name": name, "command": []string{*workerBin}, "gpuCount": 0,
		"workersMin": 8, "workersMax": 8, "idleTimeout": 3600,
		"env": map[string]string{"WORKER_CONCURRENCY": strconv.Itoa(concurrency)}})
	if err != nil {
		return "", err
	}
	if err := d.waitIdleWorkers(ep, 8, 60*time.Second); err != nil {
		return "", err
	}
	for i := 0; i < 200; i++ {
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, nil); err != nil {
			return "", err
		}
	}
	return ep, nil
}

// throughput submits -throughput-jobs jobs with -clients clients and
// returns completed jobs per second until the last one is done, and
// emberd's CPU time per job meanwhile.
func (d *daemon) throughput(ep string) (jobsPerSec, cpuMicrosPerJob float64, err error) {
	before, err := d.completed(ep)
	if err != nil {
		return 0, 0, err
	}
	cpuBefore := cpuSeconds(d.cmd.Process.Pid)
	start := time.Now()
	profDone := make(chan struct{})
	if dl := os.Getenv("BENCH_DEBUG_LISTEN"); dl != "" {
		// A CPU profile of emberd during the run, for digging.
		go func() {
			defer close(profDone)
			resp, err := http.Get("http://" + dl + "/debug/pprof/profile?seconds=5")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if f, err := os.Create("emberd-cpu-" + ep + ".pprof"); err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
		}()
	} else {
		close(profDone)
	}
	defer func() { <-profDone }()
	if _, err := rate(*tputN, *clients, func() error { return d.post("/v2/"+ep+"/run", `{"input":{"output":1}}`, nil) }); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n, err := d.completed(ep)
		if err != nil {
			return 0, 0, err
		}
		if n-before >= *tputN {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("only %d of %d jobs completed in 5 min", n-before, *tputN)
		}
		time.Sleep(20 * time.Millisecond)
	}
	jobsPerSec = float64(*tputN) / time.Since(start).Seconds()
	cpuMicrosPerJob = (cpuSeconds(d.cmd.Process.Pid) - cpuBefore) / float64(*tputN) * 1e6
	return jobsPerSec, cpuMicrosPerJob, nil
}

func (d *daemon) waitIdleWorkers(ep string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h, err := d.health(ep)
		if err != nil {
			return err
		}
		if h.Workers.Idle >= n {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%d workers not idle within %v", n, timeout)
}

// rssMB reads VmRSS of a process.
func rssMB(pid int) float64 { return statusMB(pid, "VmRSS:") }

// statusMB reads a kB field of /proc/PID/status in MB.
func statusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// rssSplitMB reads RssAnon and RssFile of a process: the Go heap against
// mapped files (emberd's binary, Badger's tables).
func rssSplitMB(pid int) (anon, file float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return anon, file
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

// cpuSeconds reads a process's user+system CPU time from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}
