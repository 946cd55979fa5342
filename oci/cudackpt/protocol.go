package cudackpt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The helper protocol, between Helper (in emberd) and Serve (in
// ember-ckpt): one request a line on the helper's stdin, one answer a line
// on its stdout, matched by a request number, so that calls for several
// processes run at once.
//
//	request:  <id> <op> <pid> [<lock timeout ms>]
//	answers:  <id> ok [<state>]
//	          <id> cuda <call> <pid> <CUresult>
//	          <id> unsupported <text>
//	          <id> error <text>
//
// op is one of supported, state, lock, checkpoint, restore, unlock; pid is
// 0 for supported. <state> is a State's String. Text is one line.
const (
	opSupported  = "supported"
	opState      = "state"
	opLock       = "lock"
	opCheckpoint = "checkpoint"
	opRestore    = "restore"
	opUnlock     = "unlock"
)

// maxLine bounds a protocol line; answers carry at most an error's text.
const maxLine = 64 << 10

// Serve answers the helper protocol's requests read from r with d's calls,
// writing the answers to w, each request in its own goroutine, until r
// ends; then it waits for the calls under way and returns. It is the
// helper binary's main loop (daemon/cmd/ember-ckpt).
func Serve(r io.Reader, w io.Writer, d Driver) error {
	var (
		wmu sync.Mutex
		wg  sync.WaitGroup
	)
	reply := func(line string) {
		wmu.Lock()
		defer wmu.Unlock()
		// A failed write means emberd is gone; the calls still finish.
		_, _ = io.WriteString(w, line+"\n")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		id := f[0]
		if len(f) < 3 {
			reply(id + " error malformed request " + strconv.Quote(sc.Text()))
			continue
		}
		wg.Go(func() { reply(id + " " + serveOne(d, f[1], f[2], f[3:])) })
	}
	wg.Wait()
	return sc.Err()
}

// serveOne makes one call and writes its answer, less the request number.
func serveOne(d Driver, op, pidText string, rest []string) string {
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid < 0 {
		return "error bad pid " + strconv.Quote(pidText)
	}
	ctx := context.Background()
	switch op {
	case opSupported:
		err = d.Supported()
	case opState:
		var s State
		if s, err = d.State(ctx, pid); err == nil {
			return "ok " + s.String()
		}
	case opLock:
		if len(rest) != 1 {
			return "error lock needs a timeout"
		}
		ms, perr := strconv.ParseUint(rest[0], 10, 32)
		if perr != nil {
			return "error bad lock timeout " + strconv.Quote(rest[0])
		}
		err = d.Lock(ctx, pid, time.Duration(ms)*time.Millisecond)
	case opCheckpoint:
		err = d.Checkpoint(ctx, pid)
	case opRestore:
		err = d.Restore(ctx, pid)
	case opUnlock:
		err = d.Unlock(ctx, pid)
	default:
		return "error unknown op " + strconv.Quote(op)
	}
	return encodeErr(err)
}

func encodeErr(err error) string {
	if err == nil {
		return "ok"
	}
	var ce *Error
	if errors.As(err, &ce) && !errors.Is(err, ErrUnsupported) {
		return fmt.Sprintf("cuda %s %d %d", ce.Call, ce.PID, ce.Result)
	}
	text := strings.ReplaceAll(err.Error(), "\n", " ")
	if errors.Is(err, ErrUnsupported) {
		return "unsupported " + text
	}
	return "error " + text
}

// remoteError is an error the helper reported as text.
type remoteError struct {
	msg         string
	unsupported bool
}

func (e *remoteError) Error() string { return e.msg }

func (e *remoteError) Is(target error) bool { return e.unsupported && target == ErrUnsupported }

// decodeAnswer turns an answer (less its request number) into a State and
// an error.
func decodeAnswer(a string) (State, error) {
	kind, rest, _ := strings.Cut(a, " ")
	switch kind {
	case "ok":
		if rest == "" {
			return NotCUDA, nil
		}
		for s := NotCUDA; s <= Failed; s++ {
			if s.String() == rest {
				return s, nil
			}
		}
		return NotCUDA, fmt.Errorf("cudackpt: helper answered an unknown state %q", rest)
	case "cuda":
		f := strings.Fields(rest)
		if len(f) == 3 {
			pid, err1 := strconv.Atoi(f[1])
			res, err2 := strconv.Atoi(f[2])
			if err1 == nil && err2 == nil {
				return NotCUDA, &Error{Call: f[0], PID: pid, Result: res}
			}
		}
	case "unsupported":
		return NotCUDA, &remoteError{msg: rest, unsupported: true}
	case "error":
		return NotCUDA, &remoteError{msg: rest}
	}
	return NotCUDA, fmt.Errorf("cudackpt: malformed helper answer %q", a)
}
