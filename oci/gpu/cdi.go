package gpu

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// loadCDI loads the CDI specs, or returns nil when CDI is off.
//
// The cache is built for each injection, with no file watcher: the specs
// are a few small files, a worker start is rare next to reading them, and
// this way a spec regenerated after a driver upgrade is used by the next
// worker without a restart and without a watcher goroutine to manage.
// Spec files that fail to load are in the cache's GetErrors; they only
// matter when a GPU cannot be resolved (or for UsesCDI).
func (in *Injector) loadCDI() (*cdi.Cache, error) {
	dirs := in.CDISpecDirs
	if dirs == nil {
		dirs = DefaultCDISpecDirs
	}
	if len(dirs) == 0 {
		return nil, nil
	}
	// NewCache documents its error as always nil; checked all the same.
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("CDI specs in %s: %w", strings.Join(dirs, ", "), err)
	}
	return cache, nil
}

// UsesCDI says whether Inject would use CDI specs (true) or derive the
// injection from the host, and returns the load errors of CDI spec files,
// if any, joined. It is for emberd's startup log: a broken nvidia.yaml
// makes Inject quietly take the host-derived path, which operators should
// know about.
func (in *Injector) UsesCDI() (bool, error) {
	cache, err := in.loadCDI()
	if err != nil || cache == nil {
		return false, err
	}
	uses := len(gpuNames(cache)) > 0
	if s := specErrors(cache); s != "" {
		return uses, errors.New(s)
	}
	return uses, nil
}

// gpuNames lists the qualified nvidia.com/gpu device names in the cache.
func gpuNames(cache *cdi.Cache) []string {
	var out []string
	for _, name := range cache.ListDevices() {
		if strings.HasPrefix(name, CDIKind+"=") {
			out = append(out, name)
		}
	}
	return out
}

// gpuNodeRE matches a full GPU's node, capturing its minor.
var gpuNodeRE = regexp.MustCompile(`^/dev/nvidia([0-9]+)$`)

// cdiGPUMinors lists the minors of the /dev/nvidiaN nodes a CDI device
// adds; NVIDIA's generator gives each GPU device exactly its own node.
func cdiGPUMinors(dev *cdi.Device) []int {
	var out []int
	for _, n := range dev.ContainerEdits.DeviceNodes {
		if n == nil {
			continue
		}
		if m := gpuNodeRE.FindStringSubmatch(n.Path); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// cdiName picks the CDI device for d. The UUID name is preferred; index
// names ("2", or "gpu2" from the type-index naming strategy) are accepted
// only when the device's node is d's /dev/nvidiaN, because indices are
// what a stale spec gets wrong after GPUs are added, removed or
// renumbered. A UUID-named device whose node is another GPU's is an error:
// the spec is stale.
func cdiName(cache *cdi.Cache, d Device) (string, error) {
	candidates := []string{d.UUID, strconv.Itoa(d.Index), "gpu" + strconv.Itoa(d.Index)}
	if d.MIG != nil {
		// nvidia-ctk names MIG devices "GPU:MIG"; the bare index is the
		// parent.
		candidates = []string{d.UUID, strconv.Itoa(d.Index) + ":" + strconv.Itoa(d.MIG.Index)}
	}
	var mismatches []string
	for i, c := range candidates {
		q := CDIKind + "=" + c
		dev := cache.GetDevice(q)
		if dev == nil {
			continue
		}
		minors := cdiGPUMinors(dev)
		if slices.Contains(minors, d.Minor) {
			return q, nil
		}
		if i == 0 && len(minors) == 0 {
			// A hand-written spec may not list the node; the UUID still
			// names the right GPU.
			return q, nil
		}
		mismatches = append(mismatches, fmt.Sprintf("%s in %s has minors %v", q, dev.GetSpec().GetPath(), minors))
		if i == 0 {
			return "", fmt.Errorf("GPU %s is /dev/nvidia%d but CDI device %s", d.UUID, d.Minor, mismatches[0])
		}
	}
	msg := fmt.Sprintf("GPU %s (index %d, /dev/nvidia%d) is not in the CDI specs", d.UUID, d.Index, d.Minor)
	if len(mismatches) > 0 {
		msg += " (" + strings.Join(mismatches, "; ") + ")"
	}
	return "", errors.New(msg)
}

// injectCDI applies the CDI edits of devs' devices (and of the specs they
// come from) to spec. It does not fall back to the host-derived injection
// when a GPU is missing from the specs: with CDI in use, a missing GPU
// means the specs are stale, and the operator must hear about it.
func (in *Injector) injectCDI(spec *specs.Spec, cache *cdi.Cache, devs []Device) error {
	names := make([]string, 0, len(devs))
	var errs []error
	for _, d := range devs {
		q, err := cdiName(cache, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, q)
	}
	if len(errs) > 0 {
		msg := fmt.Sprintf("CDI devices in %s: %s; the specs are stale (after a driver or hardware change?): regenerate them (nvidia-ctk cdi generate)",
			strings.Join(cache.GetSpecDirectories(), ", "), strings.Join(gpuNames(cache), ", "))
		if s := specErrors(cache); s != "" {
			msg += "; " + s
		}
		return fmt.Errorf("%w; %s", errors.Join(errs...), msg)
	}
	if err := in.checkCDINodes(cache, names); err != nil {
		return err
	}
	if _, err := cache.InjectDevices(spec, names...); err != nil {
		return fmt.Errorf("CDI: %w", err)
	}
	return nil
}

// checkCDINodes compares the major/minor numbers a CDI spec states for
// its device nodes with the host's nodes, where the host has them. The CDI
// library trusts stated numbers; after a driver upgrade changes a dynamic
// major (nvidia-uvm, nvidia-caps) a stale spec would make runc create a
// node for the wrong device and allow it in the cgroup.
func (in *Injector) checkCDINodes(cache *cdi.Cache, names []string) error {
	stat := in.stat
	if stat == nil {
		stat = statNode
	}
	var nodes []*cdispec.DeviceNode
	seenSpec := map[string]bool{}
	for _, q := range names {
		dev := cache.GetDevice(q)
		nodes = append(nodes, dev.ContainerEdits.DeviceNodes...)
		if s := dev.GetSpec(); !seenSpec[s.GetPath()] {
			seenSpec[s.GetPath()] = true
			nodes = append(nodes, s.ContainerEdits.DeviceNodes...)
		}
	}
	for _, n := range nodes {
		if n == nil || n.Major == 0 || (n.Type != "" && n.Type != "c") {
			continue
		}
		host := n.HostPath
		if host == "" {
			host = n.Path
		}
		hn, err := stat(host)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("CDI device node %s: %w", n.Path, err)
		}
		if hn.major != n.Major || hn.minor != n.Minor {
			return fmt.Errorf("CDI spec says %s is %d:%d but the host's %s is %d:%d; the spec is stale: regenerate it (nvidia-ctk cdi generate)",
				n.Path, n.Major, n.Minor, host, hn.major, hn.minor)
		}
	}
	return nil
}

// specErrors formats the cache's spec load errors (a spec with a cdiVersion
// newer than the library knows, a syntax error) for an error message,
// since a GPU missing from the specs is often in a file that did not load.
// It is "" when every file loaded.
func specErrors(cache *cdi.Cache) string {
	all := cache.GetErrors()
	if len(all) == 0 {
		return ""
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var parts []string
	for _, p := range paths {
		parts = append(parts, fmt.Sprintf("%s: %v", p, errors.Join(all[p]...)))
	}
	return "spec files that failed to load: " + strings.Join(parts, "; ")
}
