package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
	"github.com/emberhq/ember/oci/logindex"
)

// StaticImages is an oci.Images of fixed root filesystems, by reference:
// for benchmarks and tests that have no image store.
type StaticImages map[string]oci.RootFS

// Resolve implements oci.Images.
func (im StaticImages) Resolve(ref string) (oci.RootFS, error) {
	r, ok := im[ref]
	if !ok {
		return oci.RootFS{}, fmt.Errorf("no image %q", ref)
	}
	return r, nil
}

// BenchOptions configure Bench.
type BenchOptions struct {
	// Runtime runs both halves (its state dir, cgroup parent, limits and
	// seccomp setting are used for the bare half too).
	Runtime *Runtime
	// Image is what Runtime's image store resolves to the worker image;
	// its single layer is also the bare half's rootfs (copied).
	Image string
	// Args is the program to run, a /bin/true-like static binary in the
	// image, e.g. {"/probe", "true"}.
	Args []string
	// N is the number of runs of each half. Default 20.
	N int
	// WorkDir is a scratch directory on the file system of workers' dirs.
	WorkDir string
	// RunArgs is a program in the image that runs until it is killed,
	// e.g. {"/probe", "pause"}. When set, Bench also measures freeze/thaw
	// cycles of a running worker (BenchResult.Freeze).
	RunArgs []string
	// FreezeCycles is the number of freeze/thaw cycles of each freeze
	// measurement. Default 50.
	FreezeCycles int
}

// BarePhases are the phases of a bare libcontainer run: a prepared rootfs
// directory, the same spec (limits, seccomp, mounts) as a worker's.
type BarePhases struct {
	Create  time.Duration // libcontainer.Create
	Run     time.Duration // container.Run (init, namespaces, cgroups, exec)
	Wait    time.Duration // process.Wait: the program's run and exit
	Destroy time.Duration // container.Destroy
	Total   time.Duration // all of the above
}

// WorkerPhases are the phases of a full worker start through the Runtime.
type WorkerPhases struct {
	StartTimings               // Resolve, Mount, Spec, Create, Start, Total (= Runtime.Start)
	Wait         time.Duration // from Start's return to the exit
	Cleanup      time.Duration // destroy, unmount, remove
	Lifetime     time.Duration // Runtime.Start called to Done closed
}

// FreezePhases are the medians of freeze/thaw cycles of a running worker
// (Worker.Freeze, then Worker.Thaw at once).
type FreezePhases struct {
	Cycles int
	Freeze time.Duration
	// Thaw is Worker.Thaw while no other container of the bench is
	// frozen. On cgroup v1 with kernel 6.1 or later it includes the kernel
	// turning its freezer static key on and off (code patching, about a
	// millisecond), which the first frozen cgroup of the host pays on
	// freeze and the last one on thaw.
	Thaw time.Duration
	// ThawAmongFrozen is Worker.Thaw while another worker stays frozen:
	// the usual case on a host that keeps frozen workers.
	ThawAmongFrozen time.Duration
}

// BenchResult are the medians of N runs of each half, and of the freeze
// cycles (zero without BenchOptions.RunArgs).
type BenchResult struct {
	N      int
	Bare   BarePhases
	Worker WorkerPhases
	Freeze FreezePhases
}

// Bench measures a bare libcontainer Create+Run+Wait+Destroy of a static
// program against a full worker start through the Runtime (image lookup,
// overlay mount, spec, create, start) and its exit, and returns the median
// of each phase. The binary calling it must call InitIfChild first thing in
// main (or TestMain).
func Bench(ctx context.Context, o BenchOptions) (BenchResult, error) {
	if o.Runtime == nil || o.WorkDir == "" || len(o.Args) == 0 {
		return BenchResult{}, errors.New("bench: Runtime, WorkDir and Args are required")
	}
	n := o.N
	if n <= 0 {
		n = 20
	}
	r := o.Runtime
	img, err := r.images.Resolve(o.Image)
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}
	if len(img.Layers) != 1 {
		return BenchResult{}, fmt.Errorf("bench: the image has %d layers, want 1", len(img.Layers))
	}
	bareRoot := filepath.Join(o.WorkDir, "bare-rootfs")
	if err := copyTree(img.Layers[0], bareRoot); err != nil {
		return BenchResult{}, fmt.Errorf("bench: copy the layer: %w", err)
	}
	defer os.RemoveAll(bareRoot)

	res := BenchResult{N: n}
	var bare []BarePhases
	var work []WorkerPhases
	tag := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b, err := r.benchBare(bareRoot, fmt.Sprintf("bench-bare-%s-%d", tag, i), o.Args)
		if err != nil {
			return res, fmt.Errorf("bench: bare run %d: %w", i, err)
		}
		bare = append(bare, b)
		w, err := r.benchWorker(ctx, o, fmt.Sprintf("bench-worker-%s-%d", tag, i))
		if err != nil {
			return res, fmt.Errorf("bench: worker run %d: %w", i, err)
		}
		work = append(work, w)
	}
	res.Bare = BarePhases{
		Create:  median(bare, func(p BarePhases) time.Duration { return p.Create }),
		Run:     median(bare, func(p BarePhases) time.Duration { return p.Run }),
		Wait:    median(bare, func(p BarePhases) time.Duration { return p.Wait }),
		Destroy: median(bare, func(p BarePhases) time.Duration { return p.Destroy }),
		Total:   median(bare, func(p BarePhases) time.Duration { return p.Total }),
	}
	res.Worker = WorkerPhases{
		StartTimings: StartTimings{
			Resolve: median(work, func(p WorkerPhases) time.Duration { return p.Resolve }),
			Mount:   median(work, func(p WorkerPhases) time.Duration { return p.Mount }),
			Spec:    median(work, func(p WorkerPhases) time.Duration { return p.Spec }),
			Create:  median(work, func(p WorkerPhases) time.Duration { return p.Create }),
			Start:   median(work, func(p WorkerPhases) time.Duration { return p.StartTimings.Start }),
			Total:   median(work, func(p WorkerPhases) time.Duration { return p.Total }),
		},
		Wait:     median(work, func(p WorkerPhases) time.Duration { return p.Wait }),
		Cleanup:  median(work, func(p WorkerPhases) time.Duration { return p.Cleanup }),
		Lifetime: median(work, func(p WorkerPhases) time.Duration { return p.Lifetime }),
	}
	if len(o.RunArgs) > 0 {
		f, err := r.benchFreeze(ctx, o, tag)
		if err != nil {
			return res, fmt.Errorf("bench: freeze: %w", err)
		}
		res.Freeze = f
	}
	return res, nil
}

// benchFreeze starts two workers running o.RunArgs and times freeze/thaw
// cycles of the first: alone, then while the second is frozen.
func (r *Runtime) benchFreeze(ctx context.Context, o BenchOptions, tag string) (FreezePhases, error) {
	n := o.FreezeCycles
	if n <= 0 {
		n = 50
	}
	p := FreezePhases{Cycles: n}
	var ws []*Worker
	defer func() {
		for _, w := range ws {
			w.Kill()
			<-w.Done()
			os.RemoveAll(w.paths.dir)
			os.Remove(w.logPath)
			os.Remove(logindex.Path(w.logPath))
		}
	}()
	for i := range 2 {
		dir := filepath.Join(o.WorkDir, fmt.Sprintf("bench-freeze-%s-%d", tag, i))
		w, err := r.start(ctx, oci.Spec{ID: filepath.Base(dir), Image: o.Image, Command: o.RunArgs, LogPath: dir + ".log", Dir: dir})
		if err != nil {
			return p, err
		}
		ws = append(ws, w)
	}
	cycles := func() (freeze, thaw time.Duration, err error) {
		var fs, ts []time.Duration
		for range n {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			t := time.Now()
			if err := ws[0].Freeze(); err != nil {
				return 0, 0, err
			}
			fs = append(fs, time.Since(t))
			t = time.Now()
			if err := ws[0].Thaw(); err != nil {
				return 0, 0, err
			}
			ts = append(ts, time.Since(t))
		}
		id := func(d time.Duration) time.Duration { return d }
		return median(fs, id), median(ts, id), nil
	}
	var err error
	if p.Freeze, p.Thaw, err = cycles(); err != nil {
		return p, err
	}
	if err := ws[1].Freeze(); err != nil {
		return p, err
	}
	if _, p.ThawAmongFrozen, err = cycles(); err != nil {
		return p, err
	}
	for _, w := range ws {
		select {
		case <-w.Done():
			return p, fmt.Errorf("worker %s %s", w.ID(), w.Exit())
		default:
		}
	}
	return p, nil
}

func (r *Runtime) benchBare(rootfs, id string, args []string) (BarePhases, error) {
	var p BarePhases
	s, err := bundle.Build(bundle.Options{
		Spec:        oci.Spec{ID: id, Command: args},
		Rootfs:      rootfs,
		CgroupsPath: r.cgroupsPath(id),
		Limits:      r.limits,
		Host:        r.host,
	})
	if err != nil {
		return p, err
	}
	if !SeccompEnabled() {
		s.Linux.Seccomp = nil
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, UseSystemdCgroup: r.systemd, Spec: s})
	if err != nil {
		return p, err
	}
	proc, err := newProcess(s.Process)
	if err != nil {
		return p, err
	}
	proc.Init = true
	t0 := time.Now()
	c, err := libcontainer.Create(r.stateDir, id, cfg)
	if err != nil {
		return p, err
	}
	p.Create = time.Since(t0)
	t := time.Now()
	if err := c.Run(proc); err != nil {
		_ = c.Destroy()
		return p, err
	}
	p.Run = time.Since(t)
	t = time.Now()
	ps, err := proc.Wait()
	p.Wait = time.Since(t)
	if st := exitStatus(ps, err); st.Code != 0 {
		_ = c.Destroy()
		return p, fmt.Errorf("the program %s", st)
	}
	t = time.Now()
	if err := c.Destroy(); err != nil {
		return p, err
	}
	p.Destroy = time.Since(t)
	p.Total = time.Since(t0)
	return p, nil
}

func (r *Runtime) benchWorker(ctx context.Context, o BenchOptions, id string) (WorkerPhases, error) {
	var p WorkerPhases
	dir := filepath.Join(o.WorkDir, id)
	defer os.RemoveAll(dir)
	defer os.Remove(dir + ".log")
	defer os.Remove(logindex.Path(dir + ".log"))
	t0 := time.Now()
	w, err := r.start(ctx, oci.Spec{
		ID:      id,
		Image:   o.Image,
		Command: o.Args,
		LogPath: dir + ".log",
		Dir:     dir,
	})
	if err != nil {
		return p, err
	}
	started := time.Now()
	p.StartTimings = w.Timings()
	select {
	case <-w.Done():
	case <-ctx.Done():
		w.Kill()
		<-w.Done()
		return p, ctx.Err()
	}
	p.Lifetime = time.Since(t0)
	p.Cleanup = w.CleanupTime()
	p.Wait = time.Since(started) - p.Cleanup
	if st := w.Exit(); st.Code != 0 || st.Err != nil {
		return p, fmt.Errorf("the worker %s", st)
	}
	return p, nil
}

func median[T any](xs []T, f func(T) time.Duration) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	d := make([]time.Duration, len(xs))
	for i, x := range xs {
		d[i] = f(x)
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// copyTree copies a directory of regular files, directories and symlinks.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return nil
	})
}
