package runc

import (
	"os"
	"path/filepath"

	"github.com/opencontainers/cgroups"
)

// freezeAnchor is an empty cgroup v1 freezer cgroup kept FROZEN for the
// runtime's life. With cgroup v1 on Linux 6.1 and later, the first cgroup
// to freeze and the last to thaw switch a kernel code path on and off
// (a static key, patched into the running kernel), which costs about
// 1.5-4 ms; thawing a worker while another cgroup stays frozen takes tens
// of microseconds. The anchor holds no process, so keeping it frozen costs
// nothing else, and FlashBoot revivals (a thaw on the path of a job) never
// pay the switch. cgroup v2 freezes per cgroup without it.
type freezeAnchor struct{ dir string }

// newFreezeAnchor creates the anchor under parent in the v1 freezer
// hierarchy; it returns nil (nothing to do) on cgroup v2, with the systemd
// driver, or when the freezer cannot be written.
func newFreezeAnchor(parent string, systemd bool) *freezeAnchor {
	if systemd || cgroups.IsCgroup2UnifiedMode() {
		return nil
	}
	dir := filepath.Join("/sys/fs/cgroup/freezer", parent, ".ember-freeze-anchor")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("FROZEN"), 0); err != nil {
		os.Remove(dir)
		return nil
	}
	return &freezeAnchor{dir: dir}
}

// release thaws and removes the anchor.
func (a *freezeAnchor) release() {
	if a == nil {
		return
	}
	os.WriteFile(filepath.Join(a.dir, "freezer.state"), []byte("THAWED"), 0)
	os.Remove(a.dir)
}
