package runc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
)

// TestMain doubles as libcontainer's "init": containers started by these
// tests re-execute the test binary.
func TestMain(m *testing.M) {
	InitIfChild()
	code := m.Run()
	if testBase != "" {
		os.RemoveAll(testBase)
	}
	removeTestCgroups(testCgroupParent())
	os.Exit(code)
}

// testCgroupParent is where this test process's containers' cgroups go.
func testCgroupParent() string { return fmt.Sprintf("/ember-test-%d", os.Getpid()) }

// removeTestCgroups removes the (empty by now) parent cgroup of the tests'
// containers in every hierarchy.
func removeTestCgroups(parent string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
	more, _ := filepath.Glob("/sys/fs/cgroup" + parent)
	for _, d := range append(dirs, more...) {
		os.Remove(d)
	}
}

// testPasswd is the image's /etc/passwd (for user resolution).
const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
	testGroup  = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"
)

var (
	buildOnce sync.Once
	testBase  string // removed by TestMain
	probeDir  string // the probe image's single layer
	buildErr  error
	overlayOK bool
	idCounter atomic.Int64
)

// requireContainers skips unless containers can run here: root, overlayfs,
// and the probe image built.
func requireContainers(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runc runtime tests need root (run as root to run containers)")
	}
	buildOnce.Do(setupImage)
	if buildErr != nil {
		t.Skipf("cannot build the probe image: %v", buildErr)
	}
	if !overlayOK {
		t.Skip("overlayfs is not available here")
	}
}

// setupImage builds the probe (CGO_ENABLED=0, static) into a one-layer
// image and checks that overlayfs mounts.
func setupImage() {
	dir, err := os.MkdirTemp("", "ember-runc-test-")
	if err != nil {
		buildErr = err
		return
	}
	testBase = dir
	probeDir = filepath.Join(dir, "layer")
	for _, d := range []string{"etc", "tmp", "home/app"} {
		if err := os.MkdirAll(filepath.Join(probeDir, d), 0o755); err != nil {
			buildErr = err
			return
		}
	}
	os.Chmod(filepath.Join(probeDir, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(probeDir, "etc/passwd"), []byte(testPasswd), 0o644)
	os.WriteFile(filepath.Join(probeDir, "etc/group"), []byte(testGroup), 0o644)
	goBin, err := exec.LookPath("go")
	if err != nil {
		buildErr = fmt.Errorf("no go tool in PATH: %w", err)
		return
	}
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(probeDir, "probe"), "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build probe: %v\n%s", err, out)
		return
	}
	// overlayfs check.
	p := workerPaths(filepath.Join(dir, "overlay-check"))
	for _, d := range []string{p.rootfs, p.upper, p.work} {
		os.MkdirAll(d, 0o755)
	}
	if err := mountOverlay([]string{probeDir}, p); err == nil {
		overlayOK = true
		cleanupFiles(p)
	}
}

// images is an oci.Images of fixed images.
type images = StaticImages

func probeImages() images {
	return images{"probe": {Layers: []string{probeDir}}}
}

type testEnv struct {
	r       *Runtime
	work    string // worker dirs and logs
	state   string
	cgroups string
}

// newTestRuntime makes a Runtime with its own state dir and cgroup parent.
func newTestRuntime(t *testing.T, edit func(*Options)) *testEnv {
	t.Helper()
	requireContainers(t)
	e := &testEnv{
		work:    t.TempDir(),
		state:   t.TempDir(),
		cgroups: testCgroupParent(),
	}
	o := Options{
		Images:           probeImages(),
		StateDir:         e.state,
		CgroupDriver:     "cgroupfs",
		CgroupParent:     e.cgroups,
		LogCheckInterval: 20 * time.Millisecond,
		AllowNoSeccomp:   true, // go test without -tags seccomp
		Logger:           slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	t.Cleanup(func() {
		r.Close()
		assertNoMounts(t, e.work)
		assertNoContainers(t, e.state)
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// spec is a worker spec running the probe with args.
func (e *testEnv) spec(args ...string) oci.Spec {
	id := fmt.Sprintf("t%d-%d", os.Getpid(), idCounter.Add(1))
	return oci.Spec{
		ID:       id,
		Endpoint: "test",
		Image:    "probe",
		Command:  append([]string{"/probe"}, args...),
		Env:      []string{"GOMAXPROCS=2"},
		LogPath:  filepath.Join(e.work, id+".log"),
		Dir:      filepath.Join(e.work, id),
		Network:  "host",
	}
}

func (e *testEnv) start(t *testing.T, spec oci.Spec) *Worker {
	t.Helper()
	w, err := e.r.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	rw := w.(*Worker)
	t.Cleanup(func() {
		rw.Kill()
		select {
		case <-rw.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("worker %s did not end", rw.ID())
		}
	})
	return rw
}

// run starts a worker and waits for its exit.
func (e *testEnv) run(t *testing.T, spec oci.Spec, timeout time.Duration) (oci.ExitStatus, string) {
	t.Helper()
	w := e.start(t, spec)
	waitDone(t, w, timeout)
	return w.Exit(), readFile(t, spec.LogPath)
}

func waitDone(t *testing.T, w oci.Worker, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(timeout):
		t.Fatalf("worker still running after %v", timeout)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logHas(path, s string) func() bool {
	return func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), s)
	}
}

// assertNoMounts fails if any mount point lies under dir.
func assertNoMounts(t testing.TB, dir string) {
	t.Helper()
	for _, m := range mountsUnder(t, dir) {
		t.Errorf("mount left behind: %s", m)
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

func assertNoContainers(t testing.TB, stateDir string) {
	t.Helper()
	ents, _ := os.ReadDir(stateDir)
	for _, e := range ents {
		t.Errorf("container state left behind: %s", e.Name())
	}
}

func copyFileTo(t *testing.T, dst io.Writer, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	io.Copy(dst, f)
}
