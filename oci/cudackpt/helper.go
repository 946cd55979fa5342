package cudackpt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// DefaultHelperPath is where the packages install ember-ckpt, the helper
// process that makes the CUDA checkpoint calls for emberd.
const DefaultHelperPath = "/usr/lib/ember/ember-ckpt"

// Default bounds on one helper call (HelperConfig's CallTimeout and
// TransferTimeout). A call still unanswered past its bound is taken for a
// hung driver: the helper is killed, and started again on the next call.
const (
	// DefaultCallTimeout bounds the quick calls: supported (whose first
	// call loads libcuda and attaches to every GPU: seconds), state and
	// unlock. Lock waits its own timeout on top.
	DefaultCallTimeout = 60 * time.Second
	// DefaultTransferTimeout bounds checkpoint and restore, which copy
	// the process's GPU memory: measured at 3.3 s for 4 GiB and 20.3 s
	// for 32 GiB (checkpoint, H200, driver 580); the 141 GiB of an H200
	// at that rate takes about 90 s.
	DefaultTransferTimeout = 10 * time.Minute
)

// HelperConfig configures a Helper.
type HelperConfig struct {
	// Path is the helper binary. When empty: DefaultHelperPath, or where
	// that is missing, ember-ckpt beside the running executable (a build
	// tree's bin/, as `make build` lays it out).
	Path string
	// Args are passed to it (ember-ckpt takes --libcuda PATH).
	Args []string
	// Env, when not nil, is its environment (else emberd's).
	Env []string
	// NVML serves GPUMemory, in emberd's process (go-nvml is loaded there
	// already); it must be initialised. Nil makes GPUMemory fail.
	NVML nvml.Interface
	// Logger receives the helper's starts, exits and stderr lines.
	Logger *slog.Logger
	// CallTimeout and TransferTimeout bound one call (defaults above).
	CallTimeout     time.Duration
	TransferTimeout time.Duration
}

// Helper is the Driver emberd uses: it makes the checkpoint calls in a
// helper process (ember-ckpt) that it starts on the first call and again
// after the helper exits, so that a driver fault or a hung call costs a
// helper, not the daemon; see the package doc. GPUMemory is answered here,
// through NVML. It is safe for concurrent use; Close stops the helper.
//
// A call whose helper died or was killed fails; the driver may have left
// its process (and any other process the helper was working on) locked or
// checkpointed: State tells, and the next call runs in a new helper.
type Helper struct {
	cfg HelperConfig
	log *slog.Logger

	mu     sync.Mutex
	proc   *helperProc
	nextID uint64
	closed bool
}

var _ Driver = (*Helper)(nil)

// NewHelper returns a Helper; the helper process starts on the first call.
func NewHelper(cfg HelperConfig) *Helper {
	if cfg.Path == "" {
		cfg.Path = defaultPath()
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.TransferTimeout <= 0 {
		cfg.TransferTimeout = DefaultTransferTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Helper{cfg: cfg, log: log.With("component", "cudackpt")}
}

// defaultPath is DefaultHelperPath, or ember-ckpt beside this executable
// when only that exists.
func defaultPath() string {
	if _, err := os.Stat(DefaultHelperPath); err == nil {
		return DefaultHelperPath
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "ember-ckpt")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return DefaultHelperPath
}

// helperProc is one run of the helper process. Its reader goroutine owns
// stdout and ends when the process's stdout closes; it then waits for the
// process and closes done.
type helperProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	wmu     sync.Mutex // serialises request lines
	mu      sync.Mutex
	pending map[uint64]chan string
	done    chan struct{}
	exitErr error // set before done is closed
}

// Supported starts the helper if need be and asks it whether the driver
// has the checkpoint API. A helper binary that is missing makes the error
// wrap ErrUnsupported too.
func (h *Helper) Supported() error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.CallTimeout)
	defer cancel()
	_, err := h.call(ctx, opSupported, 0, "", h.cfg.CallTimeout)
	return err
}

// State reports pid's checkpoint state.
func (h *Helper) State(ctx context.Context, pid int) (State, error) {
	return h.call(ctx, opState, pid, "", h.cfg.CallTimeout)
}

// GPUMemory is the GPU memory pid uses, from NVML in this process.
func (h *Helper) GPUMemory(ctx context.Context, pid int) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return GPUMemory(h.cfg.NVML, pid)
}

// Lock blocks pid's CUDA calls, waiting at most timeout (rounded up to a
// millisecond) for work in flight.
func (h *Helper) Lock(ctx context.Context, pid int, timeout time.Duration) error {
	ms := (timeout + time.Millisecond - 1) / time.Millisecond
	ms = max(1, min(ms, 1<<32-1))
	_, err := h.call(ctx, opLock, pid, strconv.FormatInt(int64(ms), 10), h.cfg.CallTimeout+time.Duration(ms)*time.Millisecond)
	return err
}

// Checkpoint moves a locked pid's GPU state to its host memory.
func (h *Helper) Checkpoint(ctx context.Context, pid int) error {
	_, err := h.call(ctx, opCheckpoint, pid, "", h.cfg.TransferTimeout)
	return err
}

// Restore moves a checkpointed pid's GPU state back to its GPU.
func (h *Helper) Restore(ctx context.Context, pid int) error {
	_, err := h.call(ctx, opRestore, pid, "", h.cfg.TransferTimeout)
	return err
}

// Unlock lets a locked pid's CUDA calls go on.
func (h *Helper) Unlock(ctx context.Context, pid int) error {
	_, err := h.call(ctx, opUnlock, pid, "", h.cfg.CallTimeout)
	return err
}

// Close stops the helper: its stdin is closed, so that it exits once the
// calls under way are done; Close waits for that at most wait, then kills
// it. Calls after Close fail.
func (h *Helper) Close(wait time.Duration) error {
	h.mu.Lock()
	h.closed = true
	p := h.proc
	h.proc = nil
	h.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.stdin.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("cudackpt: the helper's calls did not end within %s: killed it", wait)
	}
}

// call sends one request and waits for its answer, for ctx, for the
// helper's exit, or for limit; past limit the helper is killed.
func (h *Helper) call(ctx context.Context, op string, pid int, arg string, limit time.Duration) (State, error) {
	if err := ctx.Err(); err != nil {
		return NotCUDA, fmt.Errorf("cudackpt: %s(pid %d): %w", op, pid, err)
	}
	p, id, err := h.running()
	if err != nil {
		return NotCUDA, err
	}
	ch := make(chan string, 1)
	p.mu.Lock()
	p.pending[id] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
	}()
	line := fmt.Sprintf("%d %s %d", id, op, pid)
	if arg != "" {
		line += " " + arg
	}
	p.wmu.Lock()
	_, err = io.WriteString(p.stdin, line+"\n")
	p.wmu.Unlock()
	if err != nil {
		return NotCUDA, fmt.Errorf("cudackpt: %s(pid %d): write to helper: %w", op, pid, err)
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case a := <-ch:
		return decodeAnswer(a)
	case <-p.done:
		// The answer may have come just before the exit.
		select {
		case a := <-ch:
			return decodeAnswer(a)
		default:
		}
		return NotCUDA, fmt.Errorf("cudackpt: %s(pid %d): the helper exited before answering: %w", op, pid, p.exitErr)
	case <-ctx.Done():
		// The call goes on in the helper (a driver call cannot be
		// stopped); its answer is dropped.
		return NotCUDA, fmt.Errorf("cudackpt: %s(pid %d): %w", op, pid, ctx.Err())
	case <-t.C:
		h.log.Error("CUDA checkpoint helper hung: killing it", "op", op, "pid", pid, "limit", limit, "helper_pid", p.cmd.Process.Pid)
		h.kill(p)
		return NotCUDA, fmt.Errorf("cudackpt: %s(pid %d): no answer from the helper in %s: killed it (a hung driver call)", op, pid, limit)
	}
}

// running returns the live helper, starting one if there is none, and the
// next request number.
func (h *Helper) running() (*helperProc, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, errors.New("cudackpt: helper closed")
	}
	h.nextID++
	if h.proc != nil {
		select {
		case <-h.proc.done:
			h.proc = nil
		default:
			return h.proc, h.nextID, nil
		}
	}
	p, err := h.start()
	if err != nil {
		return nil, 0, err
	}
	h.proc = p
	return p, h.nextID, nil
}

// kill ends p (a hung helper) and forgets it, so that the next call starts
// another.
func (h *Helper) kill(p *helperProc) {
	_ = p.cmd.Process.Kill()
	h.mu.Lock()
	if h.proc == p {
		h.proc = nil
	}
	h.mu.Unlock()
}

// start runs the helper process. h.mu is held.
func (h *Helper) start() (*helperProc, error) {
	if _, err := os.Stat(h.cfg.Path); err != nil {
		return nil, fmt.Errorf("%w: the helper %s: %w", ErrUnsupported, h.cfg.Path, err)
	}
	cmd := exec.Command(h.cfg.Path, h.cfg.Args...)
	cmd.Env = h.cfg.Env
	// A process group of its own: a Ctrl-C to emberd in a terminal must
	// not reach the helper in the middle of a checkpoint. It stops when
	// its stdin closes, at Close or when emberd exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("cudackpt: helper stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("cudackpt: helper stdout: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("cudackpt: helper stderr: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cudackpt: start helper %s: %w", h.cfg.Path, err)
	}
	log := h.log.With("helper_pid", cmd.Process.Pid)
	log.Info("CUDA checkpoint helper started", "path", h.cfg.Path)
	p := &helperProc{cmd: cmd, stdin: stdin, pending: map[uint64]chan string{}, done: make(chan struct{})}
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 4096), maxLine)
		for sc.Scan() {
			log.Warn("CUDA checkpoint helper", "stderr", sc.Text())
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 4096), maxLine)
		for sc.Scan() {
			idText, answer, _ := strings.Cut(sc.Text(), " ")
			id, err := strconv.ParseUint(idText, 10, 64)
			if err != nil {
				log.Warn("CUDA checkpoint helper: stray output", "line", sc.Text())
				continue
			}
			p.mu.Lock()
			ch := p.pending[id]
			p.mu.Unlock()
			if ch != nil {
				ch <- answer
			}
		}
		<-stderrDone
		p.exitErr = cmd.Wait()
		if p.exitErr == nil {
			p.exitErr = errors.New("exit status 0")
		}
		log.Info("CUDA checkpoint helper exited", "status", p.exitErr)
		close(p.done)
	}()
	return p, nil
}
