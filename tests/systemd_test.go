package tests

// emberd under systemd, without systemd: the tests play the service
// manager's side of sd_notify (a unixgram socket in NOTIFY_SOCKET) and of
// socket activation (listening sockets as fds 3+, LISTEN_FDS, LISTEN_PID).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// notice is one datagram emberd sent to NOTIFY_SOCKET.
type notice struct {
	at  time.Time
	msg string
	// httpOK: for READY=1, whether emberd answered HTTP the moment the
	// notification was read.
	httpOK bool
}

// notifyListener is the service manager's end of NOTIFY_SOCKET.
type notifyListener struct {
	Path string
	mu   sync.Mutex
	got  []notice
}

// listenNotify listens on a unixgram socket in a short temp path (sun_path
// holds 108 bytes; t.TempDir paths can be longer). readyURL, if set, is
// fetched the moment READY=1 arrives.
func listenNotify(t *testing.T, readyURL string) *notifyListener {
	t.Helper()
	dir, err := os.MkdirTemp("", "ember-sd-")
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{Path: filepath.Join(dir, "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			nt := notice{at: time.Now(), msg: string(buf[:k])}
			if readyURL != "" && hasAssignment(nt.msg, "READY=1") {
				if resp, err := client.Get(readyURL); err == nil {
					nt.httpOK = resp.StatusCode == 200
					resp.Body.Close()
				}
			}
			n.mu.Lock()
			n.got = append(n.got, nt)
			n.mu.Unlock()
		}
	}()
	// Cleanups run last-added first: this one after the daemon's Stop.
	t.Cleanup(func() { c.Close(); <-done; os.RemoveAll(dir) })
	return n
}

func hasAssignment(msg, a string) bool {
	return slices.Contains(strings.Split(msg, "\n"), a)
}

// All returns what arrived so far.
func (n *notifyListener) All() []notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

// With returns the notices that carry assignment a ("READY=1") or, when a
// ends in "=", any value of that variable ("STATUS=").
func (n *notifyListener) With(a string) []notice {
	var out []notice
	for _, nt := range n.All() {
		for _, line := range strings.Split(nt.msg, "\n") {
			if line == a || (strings.HasSuffix(a, "=") && strings.HasPrefix(line, a)) {
				out = append(out, nt)
				break
			}
		}
	}
	return out
}

// WaitFor waits up to timeout for a notice that carries a and satisfies ok
// (nil: any), and returns it.
func (n *notifyListener) WaitFor(t *testing.T, d *Daemon, a string, timeout time.Duration, ok func(notice) bool) notice {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, nt := range n.With(a) {
			if ok == nil || ok(nt) {
				return nt
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s notification within %v; got %+v\n%s", a, timeout, n.All(), d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusOf is the STATUS= value in a notice.
func statusOf(nt notice) string {
	for _, line := range strings.Split(nt.msg, "\n") {
		if s, ok := strings.CutPrefix(line, "STATUS="); ok {
			return s
		}
	}
	return ""
}

// logIndex is where s first appears in the daemon's log, -1 if nowhere.
func logIndex(d *Daemon, s string) int {
	b, _ := os.ReadFile(d.logPath)
	return strings.Index(string(b), s)
}

var statusRE = regexp.MustCompile(`^ready: (\d+) queued, (\d+) running, workers \d+ running/\d+ idle/\d+ initializing`)

// TestSystemdNotify: READY=1 once emberd answers HTTP, after the queue is
// recovered; STATUS= lines that follow the queue; STOPPING=1 at SIGTERM,
// before the drain.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	addr := freePort(t)
	n := listenNotify(t, "http://"+addr+"/openapi.json")
	d := StartDaemonWith(t, DaemonOptions{Addr: addr, Env: []string{"NOTIFY_SOCKET=" + n.Path}})

	ready := n.WaitFor(t, d, "READY=1", 10*time.Second, nil)
	if !ready.httpOK {
		t.Errorf("READY=1 arrived before emberd answered HTTP")
	}
	if !statusRE.MatchString(statusOf(ready)) {
		t.Errorf("READY=1 came with STATUS %q", statusOf(ready))
	}
	if len(n.With("READY=1")) != 1 {
		t.Errorf("READY=1 sent %d times", len(n.With("READY=1")))
	}
	rec, sent := logIndex(d, "queue recovered"), logIndex(d, "systemd: sent READY=1")
	if rec < 0 || sent < 0 || rec > sent {
		t.Errorf(`"queue recovered" at %d, "sent READY=1" at %d in the log: want both, recovery first`, rec, sent)
	}
	if len(n.With("WATCHDOG=1")) != 0 {
		t.Errorf("WATCHDOG=1 sent without WATCHDOG_USEC")
	}

	// STATUS follows the queue: a job waiting or running shows.
	ep := d.CreateEndpoint("sd-status", map[string]any{"workersMax": 1})
	d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 4000}})
	busy := n.WaitFor(t, d, "STATUS=", 15*time.Second, func(nt notice) bool {
		m := statusRE.FindStringSubmatch(statusOf(nt))
		return m != nil && (m[1] != "0" || m[2] != "0")
	})
	t.Logf("status with the job: %s", statusOf(busy))
	n.WaitFor(t, d, "STATUS=", 20*time.Second, func(nt notice) bool {
		return nt.at.After(busy.at) && strings.HasPrefix(statusOf(nt), "ready: 0 queued, 0 running,")
	})

	// SIGTERM with a job running: STOPPING=1 comes first, then the drain.
	job := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 1500}})
	d.WaitStatus(ep, job, 20*time.Second, "IN_PROGRESS")
	sigAt := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("emberd did not exit within 30 s of SIGTERM:\n%s", d.Log())
	}
	stopping := n.WaitFor(t, d, "STOPPING=1", 5*time.Second, nil)
	if stopping.at.Before(sigAt) {
		t.Errorf("STOPPING=1 before SIGTERM")
	}
	all := n.All()
	if last := all[len(all)-1]; !hasAssignment(last.msg, "STOPPING=1") {
		t.Errorf("notified after STOPPING=1: %q", last.msg)
	}
	sentStop, drain, stopped := logIndex(d, "systemd: sent STOPPING=1"), logIndex(d, "emberd stopping: draining workers"), logIndex(d, "emberd stopped")
	if sentStop < 0 || drain < 0 || stopped < 0 || sentStop > drain || drain > stopped {
		t.Errorf("log order: sent STOPPING=1 at %d, draining at %d, stopped at %d: want them in that order\n%s", sentStop, drain, stopped, d.Log())
	}
}

// TestSystemdWatchdog: with WATCHDOG_USEC, WATCHDOG=1 comes every half
// interval while the scheduler passes its liveness check, stops while the
// scheduler lock is held (the debug listener's wedge hook), and resumes.
func TestSystemdWatchdog(t *testing.T) {
	t.Parallel()
	n := listenNotify(t, "")
	dbg := freePort(t)
	d := StartDaemonWith(t, DaemonOptions{Env: []string{"NOTIFY_SOCKET=" + n.Path, "WATCHDOG_USEC=1000000"}}, "--debug-listen", dbg)

	pingsSince := func(from time.Time) int {
		c := 0
		for _, nt := range n.With("WATCHDOG=1") {
			if !nt.at.Before(from) {
				c++
			}
		}
		return c
	}
	waitPings := func(from time.Time, want int, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for pingsSince(from) < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d WATCHDOG=1 since %v within %v, want %d\n%s", pingsSince(from), from.Format("15:04:05.000"), timeout, want, d.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ready := n.WaitFor(t, d, "READY=1", 10*time.Second, nil)
	waitPings(ready.at, 3, 10*time.Second)

	// Wedge the scheduler for 3 s; the request returns once it let go.
	client := &http.Client{Timeout: 20 * time.Second}
	t0 := time.Now()
	resp, err := client.Post("http://"+dbg+"/debug/wedge?for=3s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t1 := time.Now()
	if resp.StatusCode != 200 || t1.Sub(t0) < 3*time.Second {
		t.Fatalf("POST /debug/wedge?for=3s: %d after %v", resp.StatusCode, t1.Sub(t0))
	}
	waitPings(t1, 2, 5*time.Second)

	// A check that began before the wedge may still ping just after t0
	// (checks time out after a quarter interval); after that, none until
	// the lock is free again.
	var pings []time.Time
	for _, nt := range n.With("WATCHDOG=1") {
		pings = append(pings, nt.at)
	}
	quietFrom, quietTo := t0.Add(750*time.Millisecond), t1.Add(-200*time.Millisecond)
	var before, after time.Time
	for _, p := range pings {
		if p.After(quietFrom) && p.Before(quietTo) {
			t.Errorf("WATCHDOG=1 at +%v into a 3 s wedge", p.Sub(t0))
		}
		if !p.After(quietFrom) {
			before = p
		} else if after.IsZero() {
			after = p
		}
	}
	if gap := after.Sub(before); gap <= 1500*time.Millisecond {
		t.Errorf("longest watchdog silence around the wedge %v, want well over the 1 s interval", gap)
	} else {
		t.Logf("watchdog silent for %v during the 3 s wedge", gap)
	}
	if logIndex(d, "liveness check failed") < 0 {
		t.Errorf("no warning about the failing liveness check in the log")
	}
	// Steady again: about two pings a second.
	from := time.Now()
	time.Sleep(2 * time.Second)
	if c := pingsSince(from); c < 2 {
		t.Errorf("%d WATCHDOG=1 in the 2 s after the wedge, want about 4", c)
	}

	// The hook exists only on the debug listener.
	if code, _ := d.Do("POST", "/debug/wedge?for=1s", nil); code == 200 {
		t.Errorf("POST /debug/wedge answered 200 on the API listener")
	}
}

// passSocket opens a listening TCP socket for emberd to inherit.
func passSocket(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the file is a duplicate that stays open
	f, err = ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}

// TestSystemdSocketActivation: one unnamed socket passed as fd 3 serves the
// REST API (and the worker API: a job runs through it); gRPC stays on
// --grpc-listen. --listen is the passed socket's own address, so emberd
// could not have opened it itself.
func TestSystemdSocketActivation(t *testing.T) {
	t.Parallel()
	addr, f := passSocket(t)
	d := StartDaemonWith(t, DaemonOptions{
		Addr: addr, ExtraFiles: []*os.File{f}, ListenPID: true,
		Env: []string{"LISTEN_FDS=1"},
	})
	f.Close() // emberd holds it now
	if logIndex(d, "socket activation: REST API on the socket systemd passed") < 0 {
		t.Errorf("no log line about the passed REST socket:\n%s", d.Log())
	}
	if logIndex(d, "no socket passed for the gRPC API: listening on --grpc-listen") < 0 {
		t.Errorf("no log line about gRPC on --grpc-listen:\n%s", d.Log())
	}
	ep := d.CreateEndpoint("sd-socket", nil)
	m := d.JSON("POST", "/v2/"+ep+"/runsync", map[string]any{"input": map[string]any{"x": 1}}, 200)
	if m["status"] != "COMPLETED" {
		t.Errorf("runsync through the passed socket: %v", m)
	}
	checkGRPC(t, d)
}

// TestSystemdSocketActivationNamed: two sockets named by
// FileDescriptorName=, in the other order: matched by name.
func TestSystemdSocketActivationNamed(t *testing.T) {
	t.Parallel()
	grpcAddr, gf := passSocket(t)
	restAddr, rf := passSocket(t)
	d := StartDaemonWith(t, DaemonOptions{
		Addr: restAddr, GRPC: grpcAddr, ExtraFiles: []*os.File{gf, rf}, ListenPID: true,
		Env: []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=grpc:rest"},
	})
	gf.Close()
	rf.Close()
	for _, want := range []string{
		fmt.Sprintf(`socket activation: REST API on the socket systemd passed" fd=4 name=rest addr=%s`, restAddr),
		fmt.Sprintf(`socket activation: gRPC API on the socket systemd passed" fd=3 name=grpc addr=%s`, grpcAddr),
	} {
		if logIndex(d, want) < 0 {
			t.Errorf("no log line %q:\n%s", want, d.Log())
		}
	}
	d.JSON("GET", "/v1/endpoints", nil, 200)
	checkGRPC(t, d)
}

// checkGRPC calls the gRPC API at d.GRPC.
func checkGRPC(t *testing.T, d *Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.Key)
	if _, err := emberv1.NewEndpointServiceClient(grpcConn(t, d)).ListEndpoints(ctx, &emberv1.ListEndpointsRequest{}); err != nil {
		t.Errorf("gRPC ListEndpoints on %s: %v", d.GRPC, err)
	}
}
