// Package gpu is Ember's GPU test suite: a real emberd with the runc
// runtime, on a machine with an NVIDIA GPU, running a CUDA test worker
// built on the spot (testdata/cudaprobe.cu with nvcc, gpuworker for the
// protocol, the libraries they need copied from the host). Run it with
// `make gpu-test`; README.md (GPUs) says how to run it on a GPU machine
// without Go.
//
// It runs only when EMBER_GPU_TEST=1 and the machine has /dev/nvidiactl,
// nvidia-smi and nvcc; otherwise it says why and passes, so `make test`
// (and CI, which has no GPU) skip it.
package gpu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bins are the programs the suite runs: from EMBER_GPU_BIN (prebuilt, for
// a GPU machine without Go) or built with go into a temporary directory.
var bins struct{ emberd, init, worker, mkimage string }

// nvcc is the CUDA compiler found by skipReason.
var nvcc string

func TestMain(m *testing.M) {
	if why := skipReason(); why != "" {
		fmt.Println("tests/gpu: skipped:", why)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "ember-gpu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := findBins(dir); err != nil {
		fmt.Fprintln(os.Stderr, "tests/gpu:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// skipReason says why the suite cannot run here ("" when it can).
func skipReason() string {
	if os.Getenv("EMBER_GPU_TEST") != "1" {
		return "set EMBER_GPU_TEST=1 (make gpu-test does) on a machine with an NVIDIA GPU"
	}
	if os.Geteuid() != 0 {
		return "the runc runtime needs root"
	}
	if _, err := os.Stat("/dev/nvidiactl"); err != nil {
		return "no NVIDIA GPU here (/dev/nvidiactl: " + err.Error() + ")"
	}
	if _, err := exec.LookPath("nvidia-smi"); err != nil {
		return "no nvidia-smi in PATH"
	}
	for _, c := range []string{"nvcc", "/usr/local/cuda/bin/nvcc"} {
		if p, err := exec.LookPath(c); err == nil {
			nvcc = p
			return ""
		}
	}
	return "no nvcc (CUDA toolkit) in PATH or /usr/local/cuda/bin"
}

func findBins(tmp string) error {
	if d := os.Getenv("EMBER_GPU_BIN"); d != "" {
		bins.emberd, bins.init = filepath.Join(d, "emberd"), filepath.Join(d, "ember-init")
		bins.worker, bins.mkimage = filepath.Join(d, "gpuworker"), filepath.Join(d, "mkimage")
		for _, p := range []string{bins.emberd, bins.init, bins.worker, bins.mkimage} {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("EMBER_GPU_BIN: %w (make gpu-test-build makes them)", err)
			}
		}
		return nil
	}
	bins.emberd, bins.init = filepath.Join(tmp, "emberd"), filepath.Join(tmp, "ember-init")
	bins.worker, bins.mkimage = filepath.Join(tmp, "gpuworker"), filepath.Join(tmp, "mkimage")
	for _, b := range []struct {
		out, pkg string
		cgo      bool
		tags     string
	}{
		{bins.emberd, "../../daemon/cmd/emberd", true, "seccomp"},
		{bins.init, "../../daemon/cmd/ember-init", false, ""},
		{bins.worker, "./gpuworker", false, ""},
		{bins.mkimage, "../../examples/worker/mkimage", false, ""},
	} {
		args := []string{"build", "-o", b.out}
		if b.tags != "" {
			args = append(args, "-tags", b.tags)
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Env = os.Environ()
		if !b.cgo {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s (without Go here, set EMBER_GPU_BIN)", b.pkg, err, out)
		}
	}
	return nil
}

// workerImage builds the CUDA test worker image and returns its archive:
// /worker (gpuworker), /cudaprobe (nvcc, CUDA runtime linked statically)
// and the host libraries they and the driver's tools need. libcuda is not
// in it: the worker gets the driver's from emberd.
func workerImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	probe := filepath.Join(root, "cudaprobe")
	for _, d := range []string{"etc", "tmp", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(nvcc, "-O2", "-o", probe, "testdata/cudaprobe.cu").CombinedOutput(); err != nil {
		t.Fatalf("nvcc: %v\n%s", err, out)
	}
	copyFile(t, bins.worker, filepath.Join(root, "worker"))
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	// What ldd lists for the probe and for the host's nvidia-smi (mounted
	// into the worker by emberd), plus libdl, libpthread and librt, which
	// libcuda opens.
	libs := map[string]bool{}
	for i, bin := range []string{probe, lookPath(t, "nvidia-smi")} {
		out, err := exec.Command("ldd", bin).Output()
		if err != nil && i > 0 {
			// The host's nvidia-smi in PATH may be a wrapper script (emberd
			// mounts the driver's ELF binary instead); the probe's libraries
			// (libc, libm, libdl, ...) are what the driver's tools need.
			t.Logf("ldd %s: %v; not a dynamic executable, its libraries are not added", bin, err)
			continue
		}
		if err != nil {
			t.Fatalf("ldd %s: %v", bin, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") && !strings.Contains(f, "libcuda") && !strings.Contains(f, "libnvidia") {
				libs[f] = true
			}
		}
	}
	var libc string
	for l := range libs {
		if strings.Contains(filepath.Base(l), "libc.so") {
			libc = l
		}
	}
	if libc != "" {
		for _, n := range []string{"libdl.so.2", "libpthread.so.0", "librt.so.1"} {
			if p := filepath.Join(filepath.Dir(libc), n); fileExists(p) {
				libs[p] = true
			}
		}
	}
	for l := range libs {
		copyFile(t, l, filepath.Join(root, l))
	}
	archive := filepath.Join(dir, "gpu-worker.tar")
	mk := exec.Command(bins.mkimage, "-rootfs", root, "-entrypoint", "/worker", "-name", testImage, "-o", archive)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	return archive
}

const testImage = "ember/gpu-test:latest"

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// copyFile copies src (following links) to dst, keeping its mode.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

// daemon is a real emberd with the runc runtime on loopback.
type daemon struct {
	t       *testing.T
	url     string
	key     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	data := t.TempDir()
	addr := freeAddr(t)
	d := &daemon{t: t, url: "http://" + addr, logPath: filepath.Join(data, "emberd.log"), exited: make(chan struct{})}
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data-dir", data, "--listen", addr, "--grpc-listen", freeAddr(t),
		"--runtime", "runc", "--worker-init", bins.init, "--take-hold", "2s", "--ping-interval", "1s",
		"--stop-grace", "5s", "--log-level", "debug"}, extra...)
	d.cmd = exec.Command(bins.emberd, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); logf.Close(); close(d.exited) }()
	t.Cleanup(d.stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(data, "api.key")); err == nil {
			if resp, err := http.Get(d.url + "/openapi.json"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					d.key = strings.TrimSpace(string(b))
					return d
				}
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("emberd exited during start:\n%s", d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("emberd did not answer within 60 s:\n%s", d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) log() string { b, _ := os.ReadFile(d.logPath); return string(b) }

// stop sends SIGTERM and waits for emberd (and so its workers) to end.
func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(90 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("emberd did not stop within 90 s of SIGTERM")
	}
}

func (d *daemon) do(method, path string, body any) (int, []byte) {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			d.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (d *daemon) json(method, path string, body any, want int) map[string]any {
	d.t.Helper()
	code, out := d.do(method, path, body)
	if code != want {
		d.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, out)
	}
	var m map[string]any
	if len(out) > 0 {
		if err := json.Unmarshal(out, &m); err != nil {
			d.t.Fatalf("%s %s: %v: %s", method, path, err, out)
		}
	}
	return m
}

// gpuMem is one GPU as nvidia-smi on the host sees it.
type gpuMem struct {
	uuid        string
	used, total uint64 // MiB
}

func hostGPUs(t *testing.T) []gpuMem {
	t.Helper()
	out, err := exec.Command("nvidia-smi", "--query-gpu=uuid,memory.used,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		t.Fatalf("nvidia-smi: %v", err)
	}
	var gs []gpuMem
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 3 {
			continue
		}
		u, _ := strconv.ParseUint(strings.TrimSpace(f[1]), 10, 64)
		tot, _ := strconv.ParseUint(strings.TrimSpace(f[2]), 10, 64)
		gs = append(gs, gpuMem{uuid: strings.TrimSpace(f[0]), used: u, total: tot})
	}
	if len(gs) == 0 {
		t.Fatalf("nvidia-smi lists no GPUs: %s", out)
	}
	return gs
}

func usedMiB(t *testing.T, uuid string) uint64 {
	t.Helper()
	for _, g := range hostGPUs(t) {
		if g.uuid == uuid {
			return g.used
		}
	}
	t.Fatalf("GPU %s not listed by nvidia-smi", uuid)
	return 0
}
