package runc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
	"github.com/emberhq/ember/oci/logindex"
)

func TestExitCodeAndLog(t *testing.T) {
	e := newTestRuntime(t, nil)
	for _, code := range []int{0, 7} {
		spec := e.spec("exit", strconv.Itoa(code))
		st, log := e.run(t, spec, 10*time.Second)
		if st.Code != code || st.Signal != "" || st.OOMKilled || st.Err != nil {
			t.Errorf("exit %d: got %+v (%s)", code, st, st)
		}
		if !strings.Contains(log, "hello from probe") || !strings.Contains(log, "hello on stderr") {
			t.Errorf("log %q lacks stdout and stderr", log)
		}
		// Done means cleaned up: no overlay, no upper dir, no state.
		for _, p := range []string{"rootfs", "upper", "work", "etc", "config.json"} {
			if _, err := os.Stat(filepath.Join(spec.Dir, p)); !os.IsNotExist(err) {
				t.Errorf("%s left in the worker dir (%v)", p, err)
			}
		}
		if _, err := os.Stat(filepath.Join(e.state, spec.ID)); !os.IsNotExist(err) {
			t.Errorf("container state left behind (%v)", err)
		}
		assertNoMounts(t, e.work)
	}
}

func TestStartErrors(t *testing.T) {
	e := newTestRuntime(t, nil)
	for _, tc := range []struct {
		name string
		edit func(*oci.Spec)
		want string
	}{
		{"bad id", func(s *oci.Spec) { s.ID = "a/b" }, "worker id"},
		{"no image", func(s *oci.Spec) { s.Image = "" }, "no image"},
		{"unknown image", func(s *oci.Spec) { s.Image = "nope" }, "nope"},
		{"relative dir", func(s *oci.Spec) { s.Dir = "rel" }, "absolute"},
		{"bad network", func(s *oci.Spec) { s.Network = "bridge" }, "bridge"},
		{"GPUs without injector", func(s *oci.Spec) { s.GPUs = []string{"GPU-1"} }, "GPU"},
		{"missing program", func(s *oci.Spec) { s.Command = []string{"/nonexistent"} }, "nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := e.spec("true")
			tc.edit(&spec)
			w, err := e.r.Start(context.Background(), spec)
			if err == nil {
				w.Kill()
				<-w.Done()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %q does not mention %q", err, tc.want)
			}
			if w != nil {
				t.Error("non-nil worker with an error")
			}
			if filepath.IsAbs(spec.Dir) {
				for _, p := range []string{"rootfs", "upper", "work"} {
					if _, err := os.Stat(filepath.Join(spec.Dir, p)); !os.IsNotExist(err) {
						t.Errorf("%s left after a failed start", p)
					}
				}
			}
			assertNoMounts(t, e.work)
			assertNoContainers(t, e.state)
		})
	}
	// A cancelled context: nothing starts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.r.Start(ctx, e.spec("true")); err == nil {
		t.Error("started with a cancelled context")
	}
}

func TestOOMKilled(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("alloc", "512")
	spec.Resources.MemoryBytes = 64 << 20
	st, log := e.run(t, spec, 30*time.Second)
	if !st.OOMKilled || st.MemoryLimit != 64<<20 || st.Signal != "killed" {
		t.Fatalf("got %+v, want OOM-killed with limit 64 MiB\nlog: %s", st, tail(log))
	}
	if got, want := st.String(), "was killed: out of memory (limit 64 MiB)"; got != want {
		t.Errorf("status %q, want %q", got, want)
	}
	if strings.Contains(log, "allocated all") {
		t.Error("the probe allocated everything")
	}
	// Under the limit: no OOM.
	spec = e.spec("alloc", "16")
	spec.Resources.MemoryBytes = 128 << 20
	st, log = e.run(t, spec, 30*time.Second)
	if st.Code != 0 || st.OOMKilled {
		t.Errorf("under the limit: %+v\n%s", st, tail(log))
	}
}

func TestPidsLimitStopsForkBomb(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("forkbomb", "1000")
	spec.Resources.PidsLimit = 48
	spec.Env = append(spec.Env, "GOMAXPROCS=1")
	st, log := e.run(t, spec, 60*time.Second)
	m := regexp.MustCompile(`fork failed after (\d+): (.*)`).FindStringSubmatch(log)
	switch {
	case m != nil:
		n, _ := strconv.Atoi(m[1])
		if n >= 48 {
			t.Errorf("%d children under a pids limit of 48", n)
		}
		if !strings.Contains(m[2], "resource temporarily unavailable") {
			t.Errorf("fork failed with %q, want EAGAIN", m[2])
		}
		t.Logf("fork bomb stopped after %d children (%s); worker %s", n, m[2], st)
	case strings.Contains(log, "failed to create new OS thread"):
		// The Go runtime of the bomb itself hit the limit first.
		t.Logf("fork bomb's runtime could not create a thread; worker %s", st)
	default:
		t.Fatalf("the fork bomb was not stopped: %s\n%s", st, tail(log))
	}
	if strings.Contains(log, "spawned all") {
		t.Error("spawned all 1000")
	}
}

func TestPIDNamespaceHidesHost(t *testing.T) {
	e := newTestRuntime(t, nil)
	st, log := e.run(t, e.spec("pids"), 10*time.Second)
	if st.Code != 0 {
		t.Fatalf("%s\n%s", st, log)
	}
	if !strings.Contains(log, "pids=1 [1] self=1") {
		t.Errorf("the container sees other processes: %s", log)
	}
}

func TestRootfsWritesLandInUpperDir(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("write", "/hello.txt", "from the worker")
	w := e.start(t, spec)
	upperFile := filepath.Join(spec.Dir, "upper", "hello.txt")
	waitFor(t, 10*time.Second, "the write in the upper dir", func() bool {
		b, err := os.ReadFile(upperFile)
		return err == nil && string(b) == "from the worker"
	})
	if _, err := os.Stat(filepath.Join(probeDir, "hello.txt")); !os.IsNotExist(err) {
		t.Errorf("the write reached the image layer (%v)", err)
	}
	// The config.json is private: it holds the worker's token.
	if fi, err := os.Stat(filepath.Join(spec.Dir, "config.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json: %v %v", fi, err)
	}
	w.Kill()
	waitDone(t, w, 10*time.Second)
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("killed worker: %s", st)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, "upper")); !os.IsNotExist(err) {
		t.Errorf("upper dir left behind (%v)", err)
	}
	assertNoMounts(t, e.work)
}

func TestStopGrace(t *testing.T) {
	e := newTestRuntime(t, nil)

	// A worker that handles SIGTERM exits on its own.
	spec := e.spec("trap")
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "ready", logHas(spec.LogPath, "ready"))
	t0 := time.Now()
	w.Stop(10 * time.Second)
	waitDone(t, w, 5*time.Second)
	if st := w.Exit(); st.Code != 0 || st.Signal != "" {
		t.Errorf("trapping worker: %s", st)
	}
	if !strings.Contains(readFile(t, spec.LogPath), "got SIGTERM") {
		t.Error("no SIGTERM seen")
	}
	t.Logf("SIGTERM to done: %v", time.Since(t0))

	// One that ignores it is killed after the grace period.
	spec = e.spec("ignore")
	w = e.start(t, spec)
	waitFor(t, 10*time.Second, "ready", logHas(spec.LogPath, "ready"))
	const grace = 300 * time.Millisecond
	t0 = time.Now()
	w.Stop(grace)
	w.Stop(grace) // idempotent
	waitDone(t, w, 10*time.Second)
	took := time.Since(t0)
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("ignoring worker: %s", st)
	}
	if took < grace {
		t.Errorf("killed after %v, before the grace of %v", took, grace)
	}
	t.Logf("ignoring worker killed after %v", took)
	w.Kill() // after Done: a no-op
}

func TestUserEnvNetworkVolume(t *testing.T) {
	vol := t.TempDir()
	e := newTestRuntime(t, func(o *Options) {
		o.Images = images{"probe": {
			Layers: []string{probeDir},
			Config: oci.ImageConfig{
				User:       "app",
				WorkingDir: "/home/app",
				Env:        []string{"PATH=/image/bin:/bin", "FROM_IMAGE=1", "SHARED=image"},
				Entrypoint: []string{"/probe"},
				Cmd:        []string{"id"},
			},
		}}
	})
	spec := e.spec()
	spec.Command = nil // the image's entrypoint and cmd
	spec.Env = []string{"SHARED=worker", "RUNPOD_POD_ID=" + spec.ID}
	spec.Network = "none"
	spec.VolumeDir = vol
	st, log := e.run(t, spec, 10*time.Second)
	if st.Code != 0 {
		t.Fatalf("%s\n%s", st, log)
	}
	for _, want := range []string{
		"Uid: 1000 1000 1000 1000", "Gid: 1000 1000 1000 1000", "Groups: 50",
		"CapEff: 0000000000000000", "NoNewPrivs: 1",
		"cwd=/home/app", "hostname=" + spec.ID,
		"env PATH=/image/bin:/bin", "env FROM_IMAGE=1", "env SHARED=worker", "env HOME=/home/app",
		"interfaces=lo\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	// Host network, root, the volume read-write.
	e.r.images = probeImages()
	spec = e.spec("write", "/runpod-volume/out.txt", "volume data")
	spec.VolumeDir = vol
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "the write to the volume", func() bool {
		b, err := os.ReadFile(filepath.Join(vol, "out.txt"))
		return err == nil && string(b) == "volume data"
	})
	w.Kill()
	waitDone(t, w, 10*time.Second)

	st, log = e.run(t, e.spec("id"), 10*time.Second)
	host, _ := os.Hostname()
	if st.Code != 0 || !strings.Contains(log, "hostname="+host) || !strings.Contains(log, "Uid: 0 0 0 0") {
		t.Errorf("host network worker: %s\n%s", st, log)
	}
	if strings.Contains(log, "interfaces=lo\n") {
		t.Logf("only lo on the host network? %s", log)
	}
	// Root gets the default capabilities, no more.
	for _, set := range []string{"CapEff", "CapBnd"} {
		m := regexp.MustCompile(set + `: ([0-9a-f]+)`).FindStringSubmatch(log)
		if want := capMask(bundle.DefaultCapabilities); m == nil || m[1] != want {
			t.Errorf("%s %v, want %s", set, m, want)
		}
	}
}

// capMask is /proc/PID/status's hex mask of capability names.
func capMask(names []string) string {
	bits := map[string]uint{
		"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
		"CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
		"CAP_SYS_CHROOT": 18, "CAP_SETFCAP": 31,
	}
	var m uint64
	for _, n := range names {
		b, ok := bits[n]
		if !ok {
			panic(n)
		}
		m |= 1 << b
	}
	return fmt.Sprintf("%016x", m)
}

func TestManyLayersOverlay(t *testing.T) {
	// 64 layers with long names: the absolute lowerdir is > 4 KiB, so the
	// short-symlink mount is used.
	base := t.TempDir()
	var layers []string
	for i := 63; i >= 0; i-- {
		dir := filepath.Join(base, fmt.Sprintf("layer-%02d-%s", i, strings.Repeat("x", 80)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), []byte(strconv.Itoa(i)), 0o644)
		// Later layers override earlier ones.
		os.WriteFile(filepath.Join(dir, "top"), []byte(strconv.Itoa(i)), 0o644)
		layers = append(layers, dir)
	}
	if n := len(strings.Join(layers, ":")); n < os.Getpagesize() {
		t.Fatalf("lowerdir is only %d bytes", n)
	}
	e := newTestRuntime(t, nil)
	e.r.images = images{"probe": {Layers: append(layers, probeDir)}}
	st, log := e.run(t, e.spec("cat", "/f00", "/f63", "/top"), 10*time.Second)
	if st.Code != 0 || !strings.Contains(log, "/f00=0") || !strings.Contains(log, "/f63=63") || !strings.Contains(log, "/top=63") {
		t.Errorf("%s\n%s", st, log)
	}
}

func TestLogRotationOfAWorker(t *testing.T) {
	e := newTestRuntime(t, func(o *Options) {
		o.LogMaxBytes = 256 << 10
		o.LogMaxFiles = 3
	})
	spec := e.spec("spam", "4")
	st, _ := e.run(t, spec, 30*time.Second)
	if st.Code != 0 {
		t.Fatal(st)
	}
	live, _ := os.Stat(spec.LogPath)
	one, err1 := os.Stat(spec.LogPath + ".1")
	_, err2 := os.Stat(spec.LogPath + ".2")
	_, err3 := os.Stat(spec.LogPath + ".3")
	if live == nil || err1 != nil || err2 != nil || !os.IsNotExist(err3) {
		t.Fatalf("log files: live %v, .1 %v, .2 %v, .3 %v", live, err1, err2, err3)
	}
	if live.Size() > 256<<10 || one.Size() > 4<<20 {
		t.Errorf("sizes: live %d, .1 %d", live.Size(), one.Size())
	}
	if !strings.Contains(readFile(t, spec.LogPath), "spam done") {
		t.Error("the end of the log is missing")
	}
	// The time index followed the rotations: its marks lie in the live
	// file, the last at its end (the mark made as the worker exited).
	marks, err := logindex.Load(spec.LogPath)
	if err != nil || len(marks) == 0 || marks[len(marks)-1].Off != live.Size() {
		t.Errorf("log index: %v (%v), live log %d bytes", marks, err, live.Size())
	}
	t.Logf("live %d bytes, .1 %d bytes", live.Size(), one.Size())
}

// TestLeftovers: a container whose emberd died (here: a helper process
// that starts workers and exits without a word) keeps running, or stays
// frozen; a new Runtime finds it, adopts or destroys it. ids[0] and ids[1]
// run, ids[2] and ids[3] were frozen by the helper.
func TestLeftovers(t *testing.T) {
	e := newTestRuntime(t, nil)
	ids := []string{e.spec().ID, e.spec().ID, e.spec().ID, e.spec().ID}
	frozen := map[string]bool{ids[2]: true, ids[3]: true}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashAfterStart$", "-test.v")
	cmd.Env = append(os.Environ(),
		"EMBER_RUNC_HELPER=1",
		"EMBER_RUNC_STATE="+e.state,
		"EMBER_RUNC_CGROUPS="+e.cgroups,
		"EMBER_RUNC_WORK="+e.work,
		"EMBER_RUNC_LAYER="+probeDir,
		"EMBER_RUNC_IDS="+strings.Join(ids, ","),
		"EMBER_RUNC_FREEZE="+ids[2]+","+ids[3],
	)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "STARTED") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	logPath := func(id string) string { return filepath.Join(e.work, id+".log") }
	// The helper is gone; the workers still log (the frozen ones do not).
	for _, id := range ids[:2] {
		n := len(readFile(t, logPath(id)))
		waitFor(t, 5*time.Second, "the orphaned worker to keep logging", func() bool {
			b, _ := os.ReadFile(logPath(id))
			return len(b) > n
		})
	}

	left, err := e.r.Leftovers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*Leftover{}
	for _, l := range left {
		byID[l.ID] = l
	}
	for _, id := range ids {
		l := byID[id]
		if l == nil {
			t.Fatalf("leftover %s not found among %d", id, len(left))
		}
		want := "running"
		if frozen[id] {
			want = "paused"
		}
		if l.Status != want || l.PID <= 0 || unix.Kill(l.PID, 0) != nil {
			t.Fatalf("leftover %s: status %s pid %d, want %s", id, l.Status, l.PID, want)
		}
		for k, want := range map[string]string{
			bundle.AnnotationWorker:   id,
			bundle.AnnotationEndpoint: "test",
			bundle.AnnotationLogPath:  logPath(id),
			bundle.AnnotationDir:      filepath.Join(e.work, id),
		} {
			if l.Labels[k] != want {
				t.Errorf("leftover %s: label %s = %q, want %q", id, k, l.Labels[k], want)
			}
		}
	}

	// Adopt the first, then kill it through the Worker.
	w, err := byID[ids[0]].Adopt()
	if err != nil {
		t.Fatal(err)
	}
	if w.PID() != byID[ids[0]].PID {
		t.Errorf("adopted pid %d, want %d", w.PID(), byID[ids[0]].PID)
	}
	select {
	case <-w.Done():
		t.Fatal("adopted worker done at once")
	case <-time.After(100 * time.Millisecond):
	}
	// A Go program as PID 1 that does not trap SIGTERM exits with code 2
	// (the runtime cannot die from the signal it re-raises).
	w.Stop(5 * time.Second)
	waitDone(t, w, 10*time.Second)
	st := w.Exit()
	t.Logf("adopted worker: %s", st)
	// This test process is a subreaper above the helper, so it inherited
	// the worker's init and can read its status.
	if st.Err != nil || st.Code != 2 {
		t.Errorf("adopted worker exit: %+v", st)
	}

	// A frozen one is adopted frozen, and goes on when thawed.
	w, err = byID[ids[2]].Adopt()
	if err != nil {
		t.Fatal(err)
	}
	assertNoProgress(t, logPath(ids[2]), 200*time.Millisecond)
	if err := w.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitProgress(t, logPath(ids[2]), 5*time.Second)
	if err := w.Freeze(); err != nil {
		t.Fatal(err)
	}
	w.Kill()
	waitDone(t, w, 10*time.Second)
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("adopted frozen worker: %s", st)
	}

	// Destroy the others, running and frozen.
	for _, id := range []string{ids[1], ids[3]} {
		l := byID[id]
		pid := l.PID
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := unix.Kill(pid, 0); err == nil {
			if state, _, ok := procStat(pid); ok && state != 'Z' {
				t.Errorf("destroyed leftover's init %d still alive (%c)", pid, state)
			}
		}
	}

	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(e.work, id, "upper")); !os.IsNotExist(err) {
			t.Errorf("%s: upper dir left (%v)", id, err)
		}
	}
	if left, err := e.r.Leftovers(context.Background()); err != nil || len(left) != 0 {
		t.Errorf("leftovers after clean-up: %v, %v", left, err)
	}
	assertNoMounts(t, e.work)
}

// TestHelperCrashAfterStart is TestLeftovers' helper: it starts workers,
// freezes some, and exits without cleaning up, like a crashing emberd.
func TestHelperCrashAfterStart(t *testing.T) {
	if os.Getenv("EMBER_RUNC_HELPER") != "1" {
		t.Skip("helper of TestLeftovers")
	}
	work := os.Getenv("EMBER_RUNC_WORK")
	r, err := New(Options{
		Images:         images{"probe": {Layers: []string{os.Getenv("EMBER_RUNC_LAYER")}}},
		StateDir:       os.Getenv("EMBER_RUNC_STATE"),
		CgroupDriver:   "cgroupfs",
		CgroupParent:   os.Getenv("EMBER_RUNC_CGROUPS"),
		AllowNoSeccomp: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	freeze := strings.Split(os.Getenv("EMBER_RUNC_FREEZE"), ",")
	for _, id := range strings.Split(os.Getenv("EMBER_RUNC_IDS"), ",") {
		w, err := r.Start(context.Background(), oci.Spec{
			ID:       id,
			Endpoint: "test",
			Image:    "probe",
			Command:  []string{"/probe", "tick"},
			LogPath:  filepath.Join(work, id+".log"),
			Dir:      filepath.Join(work, id),
		})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(freeze, id) {
			// Once it has logged, so that its log is there.
			waitFor(t, 10*time.Second, "tick 0", logHas(filepath.Join(work, id+".log"), "tick 0"))
			if err := w.(oci.Freezer).Freeze(); err != nil {
				t.Fatal(err)
			}
		}
	}
	fmt.Println("STARTED")
	os.Exit(0)
}

// firstStartsEnv marks the child process of TestConcurrentStarts, in
// which its starts are the first of the process.
const firstStartsEnv = "EMBER_TEST_FIRST_STARTS"

// TestConcurrentStarts starts 8 containers at once. It runs twice: in a
// child test process of its own, where these are the process's first
// starts (libcontainer's cgroup v1 controllers find out their file names
// on the first one: runContainer), and here, after the other tests'.
// Under -race a race in either fails it.
func TestConcurrentStarts(t *testing.T) {
	if os.Getenv(firstStartsEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrentStarts$", "-test.count=1")
		cmd.Env = append(os.Environ(), firstStartsEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("concurrent first starts in a fresh process: %v\n%s", err, tail(string(out)))
		}
	}
	e := newTestRuntime(t, nil)
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		spec := e.spec("exit", strconv.Itoa(i))
		go func() {
			w, err := e.r.Start(context.Background(), spec)
			if err != nil {
				errs <- err
				return
			}
			select {
			case <-w.Done():
			case <-time.After(20 * time.Second):
				w.Kill()
				<-w.Done()
			}
			if st := w.Exit(); st.Code != i {
				errs <- fmt.Errorf("worker %d: %s", i, st)
				return
			}
			errs <- nil
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}
