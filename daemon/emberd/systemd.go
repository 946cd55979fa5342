package emberd

// emberd under systemd: sd_notify readiness, status and stopping, a
// watchdog that pings only while the scheduler proves itself alive, and
// socket activation. Without NOTIFY_SOCKET (or LISTEN_FDS) all of this is
// inert and emberd behaves as a plain foreground process.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/emberhq/ember/internal/faults"
	"github.com/emberhq/ember/scheduler"
)

// statusEvery is how often the STATUS= line is refreshed (sent only when
// it changed). A variable for tests.
var statusEvery = 2 * time.Second

// liveScheduler is what the systemd session needs of the scheduler.
type liveScheduler interface {
	Check(ctx context.Context) error
	Summary() scheduler.Summary
}

// sdSession is one Run's conversation with systemd's notify socket.
type sdSession struct {
	log    *slog.Logger
	sched  liveScheduler
	notify func(state string) error

	mu      sync.Mutex
	stopped bool   // STOPPING=1 sent: nothing else is sent after it
	status  string // the last STATUS= sent

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// sdNotify sends state to NOTIFY_SOCKET; false when there is none.
func sdNotify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// startSystemd tells systemd that emberd is ready (the store is recovered
// and every listener is up: call it no earlier), then keeps STATUS= current
// and, when the unit has WatchdogSec=, pings the watchdog while the
// scheduler passes its liveness check. A no-op without NOTIFY_SOCKET.
func startSystemd(log *slog.Logger, sched liveScheduler) *sdSession {
	s := &sdSession{log: log, sched: sched, notify: sdNotify, cancel: func() {}}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		s.stopped = true // nothing to talk to
		return s
	}
	status := statusLine("ready", sched.Summary())
	if err := s.send(daemon.SdNotifyReady + "\nSTATUS=" + status); err != nil {
		log.Warn("systemd: READY=1 not delivered", "err", err)
	} else {
		log.Debug("systemd: sent READY=1", "status", status)
	}
	s.status = status
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.statusLoop(ctx)
	}()
	interval, err := daemon.SdWatchdogEnabled(false)
	switch {
	case err != nil:
		log.Warn("systemd: watchdog settings unusable: not pinging", "err", err)
	case interval > 0:
		log.Info("systemd watchdog enabled: pinging while the scheduler passes its liveness check", "interval", interval)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watchdogLoop(ctx, interval)
		}()
	}
	return s
}

// send delivers one notification unless STOPPING=1 went out already.
func (s *sdSession) send(state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	return s.notify(state)
}

// stopping tells systemd that emberd is shutting down (STOPPING=1, first
// thing, before the drain), then ends the status and watchdog loops: once
// a unit is stopping, systemd no longer watches for pings and its stop
// timeout (TimeoutStopSec=) bounds the drain instead.
func (s *sdSession) stopping(why string) {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		if err := s.notify(daemon.SdNotifyStopping + "\nSTATUS=stopping: " + why); err != nil {
			s.log.Warn("systemd: STOPPING=1 not delivered", "err", err)
		} else {
			s.log.Debug("systemd: sent STOPPING=1")
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

func (s *sdSession) statusLoop(ctx context.Context) {
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		status := statusLine("ready", s.sched.Summary())
		if status == s.status {
			continue
		}
		if err := s.send("STATUS=" + status); err != nil {
			s.log.Debug("systemd: STATUS not delivered", "err", err)
			continue
		}
		s.status = status
	}
}

// watchdogLoop checks the scheduler every half interval and pings systemd
// only when the check passes, so a wedged scheduler stops the pings and
// systemd restarts emberd (WatchdogSec=, Restart=on-failure). Each check
// may take a quarter interval: a ping that is sent is never later than
// three quarters of an interval after the one before.
func (s *sdSession) watchdogLoop(ctx context.Context, interval time.Duration) {
	every, timeout := interval/2, interval/4
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := s.sched.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failing = true
			s.log.Warn("systemd watchdog: liveness check failed: not pinging", "err", err, "timeout", timeout, "interval", interval)
		} else {
			if failing {
				failing = false
				s.log.Info("systemd watchdog: liveness check passes again: pinging")
			}
			if err := s.send(daemon.SdNotifyWatchdog); err != nil {
				s.log.Warn("systemd watchdog: WATCHDOG=1 not delivered", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// statusLine is the STATUS= text: "ready: 12 queued, 3 running, workers 2
// running/1 idle/0 initializing", with draining, frozen, unhealthy and
// throttled workers added when there are any.
func statusLine(phase string, sum scheduler.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d queued, %d running, workers %d running/%d idle/%d initializing",
		phase, sum.Queued, sum.InProgress,
		sum.Workers[scheduler.WorkerRunning], sum.Workers[scheduler.WorkerIdle], sum.Workers[scheduler.WorkerInitializing])
	for _, st := range []scheduler.WorkerState{scheduler.WorkerDraining, scheduler.WorkerFrozen, scheduler.WorkerUnhealthy} {
		if n := sum.Workers[st]; n > 0 {
			fmt.Fprintf(&b, "/%d %s", n, st)
		}
	}
	if sum.Throttled > 0 {
		fmt.Fprintf(&b, ", %d throttled", sum.Throttled)
	}
	return b.String()
}

// wedgeHandler is POST /debug/wedge?for=5s on the debug listener: it holds
// the scheduler lock that long (faults.WedgeScheduler), to test the watchdog,
// and answers once it let go.
func wedgeHandler(sched *scheduler.Scheduler, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err != nil || d <= 0 || d > 5*time.Minute {
			http.Error(w, "for: a duration between 1ns and 5m, e.g. for=5s", http.StatusBadRequest)
			return
		}
		log.Warn("debug: wedging the scheduler (fault injection)", "for", d)
		faults.WedgeScheduler(sched, d)
		log.Warn("debug: scheduler released", "after", d)
		fmt.Fprintf(w, "scheduler was wedged for %v\n", d)
	}
}

// Socket activation.

// activatedSocket is one socket systemd passed (LISTEN_FDS).
type activatedSocket struct {
	fd   int
	name string // FileDescriptorName=, or systemd's default (the unit name)
	ln   net.Listener
}

// pickActivated says which passed sockets serve REST and gRPC: by name
// ("rest" or "http", and "grpc") when any socket has one of those names,
// else by position (the first REST, the second gRPC). -1: none for it.
// The rest are not used.
func pickActivated(names []string) (rest, grpc int, unused []int) {
	rest, grpc = -1, -1
	named := false
	for _, n := range names {
		if isRESTName(n) || n == "grpc" {
			named = true
			break
		}
	}
	for i, n := range names {
		switch {
		case named && isRESTName(n) && rest < 0:
			rest = i
		case named && n == "grpc" && grpc < 0:
			grpc = i
		case !named && i == 0:
			rest = i
		case !named && i == 1:
			grpc = i
		default:
			unused = append(unused, i)
		}
	}
	return rest, grpc, unused
}

func isRESTName(n string) bool { return n == "rest" || n == "http" }

// openListeners returns the REST and gRPC listeners: the sockets systemd
// passed when emberd is socket-activated (LISTEN_FDS), else new ones on
// --listen and --grpc-listen; an API with no passed socket uses its flag.
func openListeners(o Options, log *slog.Logger) (httpLn, grpcLn net.Listener, err error) {
	files := activation.Files(true) // unsets LISTEN_*; the fds are close-on-exec
	var socks []activatedSocket
	var errs []error
	for i, f := range files {
		ln, lerr := net.FileListener(f)
		f.Close() // FileListener holds its own dup
		if lerr != nil {
			errs = append(errs, fmt.Errorf("socket-activated fd %d (%s): not a listening stream socket: %w", 3+i, f.Name(), lerr))
			continue
		}
		socks = append(socks, activatedSocket{fd: 3 + i, name: f.Name(), ln: ln})
	}
	closeAll := func() {
		for _, s := range socks {
			s.ln.Close()
		}
	}
	if len(errs) > 0 {
		closeAll()
		return nil, nil, errors.Join(errs...)
	}
	if len(socks) > 0 {
		names := make([]string, len(socks))
		for i, s := range socks {
			names[i] = s.name
		}
		r, g, unused := pickActivated(names)
		for _, i := range unused {
			log.Warn("socket activation: passed socket not used (name it rest or grpc)", "fd", socks[i].fd, "name", socks[i].name, "addr", socks[i].ln.Addr().String())
			socks[i].ln.Close()
		}
		if r >= 0 {
			if _, ok := socks[r].ln.(*net.TCPListener); !ok {
				closeAll()
				return nil, nil, fmt.Errorf("socket-activated REST socket (fd %d, %s) is %s: it must be TCP (workers reach the worker API on it)", socks[r].fd, socks[r].name, socks[r].ln.Addr().Network())
			}
			httpLn = socks[r].ln
			log.Info("socket activation: REST API on the socket systemd passed", "fd", socks[r].fd, "name", socks[r].name, "addr", httpLn.Addr().String())
		}
		if g >= 0 {
			grpcLn = socks[g].ln
			log.Info("socket activation: gRPC API on the socket systemd passed", "fd", socks[g].fd, "name", socks[g].name, "addr", grpcLn.Addr().String())
		}
	}
	if httpLn == nil {
		if httpLn, err = net.Listen("tcp", o.Listen); err != nil {
			if grpcLn != nil {
				grpcLn.Close()
			}
			return nil, nil, fmt.Errorf("--listen %s: %w", o.Listen, err)
		}
		if len(socks) > 0 {
			log.Info("socket activation: no socket passed for the REST API: listening on --listen", "addr", httpLn.Addr().String())
		}
	}
	if grpcLn == nil {
		if grpcLn, err = net.Listen("tcp", o.GRPCListen); err != nil {
			httpLn.Close()
			return nil, nil, fmt.Errorf("--grpc-listen %s: %w", o.GRPCListen, err)
		}
		if len(socks) > 0 {
			log.Info("socket activation: no socket passed for the gRPC API: listening on --grpc-listen", "addr", grpcLn.Addr().String())
		}
	}
	return httpLn, grpcLn, nil
}
