package emberd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// listenInNetns opens a TCP listener on addr inside the network namespace
// of process pid. A socket stays in the namespace it was created in, so
// after the listener exists the serving goroutines can run on any thread.
// The switch happens on a dedicated, locked OS thread; if switching back
// fails, the thread is left locked and dies with its goroutine, so no other
// goroutine ever runs in the worker's namespace.
func listenInNetns(pid int, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer own.Close()
		target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open network namespace of pid %d: %w", pid, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter network namespace of pid %d: %w", pid, err)}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread exits with this goroutine.
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("return to own network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		if lerr != nil {
			lerr = fmt.Errorf("listen on %s in the network namespace of pid %d: %w", addr, pid, lerr)
		}
		ch <- result{ln: ln, err: lerr}
	}()
	r := <-ch
	return r.ln, r.err
}

// netnsServer returns the scheduler's ServeInNetns: the worker API (the
// whole handler; auth is per request) on addr inside a worker's namespace.
func netnsServer(hs *http.Server, addr string) func(pid int) (io.Closer, error) {
	return func(pid int) (io.Closer, error) {
		ln, err := listenInNetns(pid, addr)
		if err != nil {
			return nil, err
		}
		go hs.Serve(ln) // returns when ln is closed
		return ln, nil
	}
}
