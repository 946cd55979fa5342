package emberd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler"
)

func TestPickActivated(t *testing.T) {
	for _, tc := range []struct {
		names      []string
		rest, grpc int
		unused     []int
	}{
		{[]string{"LISTEN_FD_3"}, 0, -1, nil},
		{[]string{"LISTEN_FD_3", "LISTEN_FD_4"}, 0, 1, nil},
		{[]string{"emberd.socket", "emberd.socket", "emberd.socket"}, 0, 1, []int{2}},
		{[]string{"grpc", "rest"}, 1, 0, nil},
		{[]string{"http", "grpc"}, 0, 1, nil},
		{[]string{"grpc"}, -1, 0, nil},
		{[]string{"other", "rest"}, 1, -1, []int{0}},
		{[]string{"rest", "http", "grpc", "grpc"}, 0, 2, []int{1, 3}},
		{nil, -1, -1, nil},
	} {
		rest, grpc, unused := pickActivated(tc.names)
		if rest != tc.rest || grpc != tc.grpc || !slices.Equal(unused, tc.unused) {
			t.Errorf("pickActivated(%q) = %d, %d, %v; want %d, %d, %v", tc.names, rest, grpc, unused, tc.rest, tc.grpc, tc.unused)
		}
	}
}

func TestStatusLine(t *testing.T) {
	w := func(kv ...any) map[scheduler.WorkerState]int {
		m := map[scheduler.WorkerState]int{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(scheduler.WorkerState)] = kv[i+1].(int)
		}
		return m
	}
	for _, tc := range []struct {
		sum  scheduler.Summary
		want string
	}{
		{scheduler.Summary{Workers: w()}, "ready: 0 queued, 0 running, workers 0 running/0 idle/0 initializing"},
		{scheduler.Summary{Queued: 12, InProgress: 3, Workers: w(scheduler.WorkerRunning, 2, scheduler.WorkerIdle, 1)},
			"ready: 12 queued, 3 running, workers 2 running/1 idle/0 initializing"},
		{scheduler.Summary{Queued: 1, Throttled: 2, Workers: w(scheduler.WorkerInitializing, 1, scheduler.WorkerDraining, 1, scheduler.WorkerUnhealthy, 3)},
			"ready: 1 queued, 0 running, workers 0 running/0 idle/1 initializing/1 draining/3 unhealthy, 2 throttled"},
	} {
		if got := statusLine("ready", tc.sum); got != tc.want {
			t.Errorf("statusLine(%+v)\n got %q\nwant %q", tc.sum, got, tc.want)
		}
	}
}

// fakeSched passes its check unless wedged; Summary counts its calls as
// queued jobs so that every STATUS differs.
type fakeSched struct {
	mu     sync.Mutex
	wedged bool
	n      int
}

func (f *fakeSched) Check(ctx context.Context) error {
	f.mu.Lock()
	w := f.wedged
	f.mu.Unlock()
	if w {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *fakeSched) Summary() scheduler.Summary {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return scheduler.Summary{Queued: f.n, Workers: map[scheduler.WorkerState]int{}}
}

func (f *fakeSched) setWedged(v bool) {
	f.mu.Lock()
	f.wedged = v
	f.mu.Unlock()
}

type notice struct {
	at  time.Time
	msg string
}

// notifySocket listens on a unixgram socket, points NOTIFY_SOCKET at it,
// and collects what arrives.
func notifySocket(t *testing.T) func() []notice {
	dir, err := os.MkdirTemp("", "sdn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "n.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	var mu sync.Mutex
	var got []notice
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, notice{time.Now(), string(buf[:n])})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return func() []notice {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func TestSystemdSessionWatchdog(t *testing.T) {
	got := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	defer func(d time.Duration) { statusEvery = d }(statusEvery)
	statusEvery = 50 * time.Millisecond
	f := &fakeSched{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sd := startSystemd(log, f)

	count := func(prefix string, from, to time.Time) int {
		n := 0
		for _, m := range got() {
			if strings.HasPrefix(m.msg, prefix) && !m.at.Before(from) && m.at.Before(to) {
				n++
			}
		}
		return n
	}
	waitPings := func(from time.Time, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for count("WATCHDOG=1", from, time.Now().Add(time.Hour)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d watchdog pings within 5 s: %v", n, got())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := time.Now().Add(-time.Second)
	waitPings(start, 3)
	if m := got(); !strings.HasPrefix(m[0].msg, "READY=1\nSTATUS=ready: ") {
		t.Errorf("first notification %q, want READY=1 with a STATUS", m[0].msg)
	}

	f.setWedged(true)
	// A check in flight may still pass: skip one interval, then expect none.
	time.Sleep(200 * time.Millisecond)
	quiet := time.Now()
	time.Sleep(600 * time.Millisecond)
	if n := count("WATCHDOG=1", quiet, time.Now()); n != 0 {
		t.Errorf("%d watchdog pings while the scheduler was wedged", n)
	}
	f.setWedged(false)
	waitPings(time.Now(), 2)

	sd.stopping("draining workers")
	// Nothing follows STOPPING=1 (the loops have ended when stopping returns).
	time.Sleep(300 * time.Millisecond)
	m := got()
	if last := m[len(m)-1]; last.msg != "STOPPING=1\nSTATUS=stopping: draining workers" {
		t.Errorf("last notification %q, want STOPPING=1", last.msg)
	}
	if n := count("STOPPING=1", start, time.Now()); n != 1 {
		t.Errorf("STOPPING=1 sent %d times", n)
	}
	if n := count("STATUS=ready", start, time.Now()); n < 3 {
		t.Errorf("%d STATUS updates, want one per 50 ms: %v", n, m)
	}
	sd.stopping("again") // idempotent
}

func TestSystemdSessionInert(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	sd := startSystemd(slog.New(slog.NewTextHandler(io.Discard, nil)), &fakeSched{})
	sd.stopping("x")
}

func TestOpenListenersWithoutActivation(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, g, err := openListeners(Options{Listen: "127.0.0.1:0", GRPCListen: "127.0.0.1:0"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	defer g.Close()
	if h.Addr().String() == g.Addr().String() {
		t.Errorf("one address for both: %v", h.Addr())
	}
	// A failing second listen closes the first.
	if _, _, err := openListeners(Options{Listen: "127.0.0.1:0", GRPCListen: h.Addr().String()}, log); err == nil || !strings.Contains(err.Error(), "--grpc-listen") {
		t.Errorf("gRPC address in use: %v", err)
	}
}
