package tests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binaries built once for the whole package.
var (
	emberdBin string
	workerBin string
	emberBin  string
	// initBin is ember-init, every test daemon's --worker-init.
	initBin string
)

func TestMain(m *testing.M) {
	flag.Parse() // testing.Short panics before the flags are parsed
	if testing.Short() {
		fmt.Println("tests: end-to-end tests skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "ember-e2e-bin-")
	if err != nil {
		panic(err)
	}
	emberdBin = filepath.Join(dir, "emberd")
	workerBin = filepath.Join(dir, "example-worker")
	emberBin = filepath.Join(dir, "ember")
	initBin = filepath.Join(dir, "ember-init")
	for pkg, out := range map[string]string{
		"../daemon/cmd/emberd":     emberdBin,
		"../examples/worker":       workerBin,
		"../daemon/cmd/ember":      emberBin,
		"../daemon/cmd/ember-init": initBin,
	} {
		args := []string{"build", "-o", out, pkg}
		if pkg == "../daemon/cmd/emberd" {
			// The daemon runs under the race detector in every end-to-end
			// test, and dies on the first race (GORACE below), which fails
			// the test that provoked it.
			args = []string{"build", "-race", "-tags", "seccomp", "-o", out, pkg}
		}
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Daemon is a real emberd process on loopback.
type Daemon struct {
	t   testing.TB
	URL string // http://127.0.0.1:PORT (https:// with DaemonOptions.HTTPS)
	// Client sends Do's requests (http.DefaultClient when nil). With
	// HTTPS it trusts DATA-DIR/tls/ca.pem when emberd made one.
	Client  *http.Client
	Addr    string
	GRPC    string
	Key     string
	DataDir string
	Args    []string
	cmd     *exec.Cmd
	logPath string
	logDir  string
	exited  chan struct{}
	opts    DaemonOptions
}

// DaemonOptions adjust how StartDaemonWith runs emberd.
type DaemonOptions struct {
	// Env is added to emberd's environment (which never inherits the
	// test's systemd variables: NOTIFY_SOCKET, LISTEN_FDS, ...).
	Env []string
	// ExtraFiles are passed to emberd as fds 3, 4, ...
	ExtraFiles []*os.File
	// ListenPID runs emberd as `sh -c 'LISTEN_PID=$$ exec emberd ...'`:
	// socket activation needs LISTEN_PID to be emberd's own pid.
	ListenPID bool
	// OpenFilesSoft, when set, starts emberd with that soft limit on open
	// files (ulimit -Sn), below the hard limit it should raise it to.
	OpenFilesSoft uint64
	// Addr and GRPC preset the addresses (--listen, --grpc-listen), e.g.
	// those of sockets passed in ExtraFiles; empty: free ports.
	Addr, GRPC string
	// DataDir is emberd's --data-dir (e.g. on a small file system the test
	// mounted); empty: a fresh temporary directory. emberd's log is then
	// kept outside it, so that a full data disk does not lose the log.
	DataDir string
	// StartProbe is the path polled until it answers 200 before a start
	// counts as done; empty: /openapi.json (the API is being served).
	StartProbe string
	// HTTPS: emberd serves TLS (the test passes --tls auto or
	// --tls-cert/--tls-key); the start probe does not verify the
	// certificate, which the test itself checks.
	HTTPS bool
}

// systemdVars are the variables through which systemd talks to a service;
// emberd started by a test gets only those the test sets.
var systemdVars = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM", "INVOCATION_ID"}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// StartDaemon runs emberd with a fresh data dir and fast test timings; extra
// flags override them.
func StartDaemon(t testing.TB, extra ...string) *Daemon {
	t.Helper()
	return StartDaemonWith(t, DaemonOptions{}, extra...)
}

// StartDaemonWith is StartDaemon with options (environment, passed fds).
func StartDaemonWith(t testing.TB, opts DaemonOptions, extra ...string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, DataDir: opts.DataDir, opts: opts, Addr: opts.Addr, GRPC: opts.GRPC}
	d.logDir = t.TempDir()
	if d.DataDir == "" {
		d.DataDir = d.logDir
	}
	d.Args = append([]string{
		"--take-hold", "2s",
		"--stop-hold", "2s",
		"--ping-interval", "500ms",
		"--webhook-retry-delay", "300ms",
		"--stop-grace", "3s",
		"--log-level", "debug",
	}, extra...)
	d.start()
	t.Cleanup(d.Stop)
	return d
}

func (d *Daemon) start() {
	t := d.t
	t.Helper()
	// A restart keeps its ports: workers that outlived the daemon
	// (containers) still call the address they were given.
	if d.Addr == "" {
		d.Addr = freePort(t)
	}
	if d.GRPC == "" {
		d.GRPC = freePort(t)
	}
	d.URL = "http://" + d.Addr
	probeClient := http.DefaultClient
	if d.opts.HTTPS {
		d.URL = "https://" + d.Addr
		probeClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	args := []string{"--data-dir", d.DataDir, "--listen", d.Addr, "--grpc-listen", d.GRPC, "--runtime", "process"}
	if slices.Contains(d.Args, "runc") {
		// Only then: a baseline emberd from before --worker-init (the
		// stop benchmark's) runs the process runtime.
		args = append(args, "--worker-init", initBin)
	}
	args = append(args, d.Args...)
	d.logPath = filepath.Join(d.logDir, fmt.Sprintf("emberd-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if d.opts.ListenPID || d.opts.OpenFilesSoft > 0 {
		script := `exec "$0" "$@"`
		if d.opts.ListenPID {
			script = `LISTEN_PID=$$; export LISTEN_PID; ` + script
		}
		if d.opts.OpenFilesSoft > 0 {
			script = fmt.Sprintf("ulimit -Sn %d && ", d.opts.OpenFilesSoft) + script
		}
		d.cmd = exec.Command("/bin/sh", append([]string{"-c", script, emberdBin}, args...)...)
	} else {
		d.cmd = exec.Command(emberdBin, args...)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(systemdVars, k) {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Env = append(d.cmd.Env, "GORACE=halt_on_error=1 exitcode=66")
	d.cmd.Env = append(d.cmd.Env, d.opts.Env...)
	d.cmd.ExtraFiles = d.opts.ExtraFiles
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The goroutine gets this start's command and channel: a Restart
	// replaces d's fields while it may not have run yet.
	cmd, exited := d.cmd, make(chan struct{})
	d.exited = exited
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	// Ready means: the key file exists and emberd itself answers. A bare TCP
	// connect is not enough: a dial to a free ephemeral port can connect to
	// itself.
	keyPath := filepath.Join(d.DataDir, "api.key")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(keyPath); err == nil {
			probe := d.opts.StartProbe
			if probe == "" {
				probe = "/openapi.json"
			}
			if resp, err := probeClient.Get(d.URL + probe); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("emberd exited during start:\n%s", d.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("emberd did not listen within 30 s:\n%s", d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	d.Key = strings.TrimSpace(string(b))
	if d.opts.HTTPS {
		if pem, err := os.ReadFile(filepath.Join(d.DataDir, "tls", "ca.pem")); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			d.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		}
	}
}

// Log returns what emberd has logged so far (for failure messages).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}

// Stop sends SIGTERM and waits. A daemon that died of a data race fails the
// test.
func (d *Daemon) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(15 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.cmd.ProcessState != nil && d.cmd.ProcessState.ExitCode() == 66 {
		d.t.Errorf("emberd stopped on a data race:\n%s", d.Log())
	}
}

// Kill9 kills emberd with SIGKILL, as a crash would.
func (d *Daemon) Kill9() {
	d.cmd.Process.Kill()
	<-d.exited
}

// Restart starts emberd again on the same data dir.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.start()
}

// Do sends a request with the admin key and returns status and body.
func (d *Daemon) Do(method, path string, body any) (int, []byte) {
	d.t.Helper()
	return d.DoKey(method, path, body, "Bearer "+d.Key)
}

// DoKey sends a request with the given Authorization header value.
func (d *Daemon) DoKey(method, path string, body any, auth string) (int, []byte) {
	d.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			d.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, d.URL+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := d.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// JSON sends a request, requires want, and decodes the body into a map.
func (d *Daemon) JSON(method, path string, body any, want int) map[string]any {
	d.t.Helper()
	code, out := d.Do(method, path, body)
	if code != want {
		d.t.Fatalf("%s %s: got %d, want %d: %s", method, path, code, want, out)
	}
	var m map[string]any
	if len(out) > 0 {
		if err := json.Unmarshal(out, &m); err != nil {
			d.t.Fatalf("%s %s: body is not a JSON object: %v: %s", method, path, err, out)
		}
	}
	return m
}

// CreateEndpoint creates an endpoint running the example worker; fields
// override the defaults (gpuCount 0, workersMax 2, idleTimeout 5).
func (d *Daemon) CreateEndpoint(name string, fields map[string]any) string {
	d.t.Helper()
	spec := map[string]any{"name": name, "command": []string{workerBin}, "gpuCount": 0, "workersMax": 2, "idleTimeout": 5}
	for k, v := range fields {
		spec[k] = v
	}
	m := d.JSON("POST", "/v1/endpoints", spec, 200)
	id, _ := m["id"].(string)
	if id == "" {
		d.t.Fatalf("no id in %v", m)
	}
	return id
}

// WaitStatus polls /status until the job has one of the states or the
// deadline passes; it returns the last status object.
func (d *Daemon) WaitStatus(ep, id string, timeout time.Duration, states ...string) map[string]any {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, out := d.Do("GET", "/v2/"+ep+"/status/"+id, nil)
		if code == 200 {
			last = nil
			json.Unmarshal(out, &last)
			for _, s := range states {
				if last["status"] == s {
					return last
				}
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	d.t.Fatalf("job %s did not reach %v within %v; last %v\n%s", id, states, timeout, last, d.Log())
	return nil
}

// Submit posts /run and returns the job id.
func (d *Daemon) Submit(ep string, body any) string {
	d.t.Helper()
	m := d.JSON("POST", "/v2/"+ep+"/run", body, 200)
	if m["status"] != "IN_QUEUE" {
		d.t.Fatalf("/run answered %v", m)
	}
	return m["id"].(string)
}
