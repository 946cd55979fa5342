package runc

import (
	"fmt"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
)

// BarePhases are the phases of a bare libcontainer run: a prepared rootfs
// directory, the same spec (limits, seccomp, mounts) as a worker's.
type BarePhases struct {
	Create  time.Duration // libcontainer.Create
	Run     time.Duration // container.Run (init, namespaces, cgroups, exec)
	Wait    time.Duration // process.Wait: the program's run and exit
	Destroy time.Duration // container.Destroy
	Total   time.Duration // all of the above
}

// RunBare runs args in a prepared rootfs directory as a bare libcontainer
// container (Create, Run, Wait, Destroy) with the spec, cgroup, limits and
// seccomp setting a worker of r would have, and times each phase. It is
// the baseline that tests/bench measures worker starts (Runtime.Start)
// against; emberd does not call it. The binary calling it must call
// InitIfChild first thing in main (or TestMain).
func (r *Runtime) RunBare(rootfs, id string, args []string) (BarePhases, error) {
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
