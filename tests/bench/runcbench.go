package main

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

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/logindex"
	"github.com/emberhq/ember/oci/runc"
)

// The runc runtime's start figures: a bare libcontainer run
// (runc.Runtime.RunBare) against a worker start through the runtime, and
// freeze/thaw cycles of running workers.

// BenchOptions configure Bench.
type BenchOptions struct {
	// Runtime runs both halves (its state dir, cgroup parent, limits and
	// seccomp setting are used for the bare half too).
	Runtime *runc.Runtime
	// Images is Runtime's image store.
	Images oci.Images
	// Image is what Images resolves to the worker image; its single layer
	// is also the bare half's rootfs (copied).
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

// WorkerPhases are the phases of a full worker start through the Runtime.
type WorkerPhases struct {
	runc.StartTimings               // Resolve, Mount, Spec, Create, Start, Total (= Runtime.Start)
	Wait              time.Duration // from Start's return to the exit
	Cleanup           time.Duration // destroy, unmount, remove
	Lifetime          time.Duration // Runtime.Start called to Done closed
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
	Bare   runc.BarePhases
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
	if o.Images == nil {
		return BenchResult{}, errors.New("bench: Images is required")
	}
	r := o.Runtime
	img, err := o.Images.Resolve(o.Image)
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
	var bare []runc.BarePhases
	var work []WorkerPhases
	tag := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		b, err := r.RunBare(bareRoot, fmt.Sprintf("bench-bare-%s-%d", tag, i), o.Args)
		if err != nil {
			return res, fmt.Errorf("bench: bare run %d: %w", i, err)
		}
		bare = append(bare, b)
		w, err := benchWorker(ctx, o, fmt.Sprintf("bench-worker-%s-%d", tag, i))
		if err != nil {
			return res, fmt.Errorf("bench: worker run %d: %w", i, err)
		}
		work = append(work, w)
	}
	res.Bare = runc.BarePhases{
		Create:  medianBy(bare, func(p runc.BarePhases) time.Duration { return p.Create }),
		Run:     medianBy(bare, func(p runc.BarePhases) time.Duration { return p.Run }),
		Wait:    medianBy(bare, func(p runc.BarePhases) time.Duration { return p.Wait }),
		Destroy: medianBy(bare, func(p runc.BarePhases) time.Duration { return p.Destroy }),
		Total:   medianBy(bare, func(p runc.BarePhases) time.Duration { return p.Total }),
	}
	res.Worker = WorkerPhases{
		StartTimings: runc.StartTimings{
			Resolve: medianBy(work, func(p WorkerPhases) time.Duration { return p.Resolve }),
			Mount:   medianBy(work, func(p WorkerPhases) time.Duration { return p.Mount }),
			Spec:    medianBy(work, func(p WorkerPhases) time.Duration { return p.Spec }),
			Create:  medianBy(work, func(p WorkerPhases) time.Duration { return p.Create }),
			Start:   medianBy(work, func(p WorkerPhases) time.Duration { return p.StartTimings.Start }),
			Total:   medianBy(work, func(p WorkerPhases) time.Duration { return p.Total }),
		},
		Wait:     medianBy(work, func(p WorkerPhases) time.Duration { return p.Wait }),
		Cleanup:  medianBy(work, func(p WorkerPhases) time.Duration { return p.Cleanup }),
		Lifetime: medianBy(work, func(p WorkerPhases) time.Duration { return p.Lifetime }),
	}
	if len(o.RunArgs) > 0 {
		f, err := benchFreeze(ctx, o, tag)
		if err != nil {
			return res, fmt.Errorf("bench: freeze: %w", err)
		}
		res.Freeze = f
	}
	return res, nil
}

// benchFreeze starts two workers running o.RunArgs and times freeze/thaw
// cycles of the first: alone, then while the second is frozen.
func benchFreeze(ctx context.Context, o BenchOptions, tag string) (FreezePhases, error) {
	n := o.FreezeCycles
	if n <= 0 {
		n = 50
	}
	p := FreezePhases{Cycles: n}
	var ws []*runc.Worker
	var dirs []string
	defer func() {
		for i, w := range ws {
			w.Kill()
			<-w.Done()
			os.RemoveAll(dirs[i])
			os.Remove(dirs[i] + ".log")
			os.Remove(logindex.Path(dirs[i] + ".log"))
		}
	}()
	for i := range 2 {
		dir := filepath.Join(o.WorkDir, fmt.Sprintf("bench-freeze-%s-%d", tag, i))
		w, err := startWorker(ctx, o.Runtime, oci.Spec{ID: filepath.Base(dir), Image: o.Image, Command: o.RunArgs, LogPath: dir + ".log", Dir: dir})
		if err != nil {
			return p, err
		}
		ws, dirs = append(ws, w), append(dirs, dir)
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
		return medianBy(fs, id), medianBy(ts, id), nil
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

// startWorker starts a worker through rt.Start, as the scheduler does.
func startWorker(ctx context.Context, rt *runc.Runtime, spec oci.Spec) (*runc.Worker, error) {
	w, err := rt.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return w.(*runc.Worker), nil
}

func benchWorker(ctx context.Context, o BenchOptions, id string) (WorkerPhases, error) {
	var p WorkerPhases
	dir := filepath.Join(o.WorkDir, id)
	defer os.RemoveAll(dir)
	defer os.Remove(dir + ".log")
	defer os.Remove(logindex.Path(dir + ".log"))
	t0 := time.Now()
	w, err := startWorker(ctx, o.Runtime, oci.Spec{
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

// medianBy is the median of f over xs.
func medianBy[T any](xs []T, f func(T) time.Duration) time.Duration {
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
