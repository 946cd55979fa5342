package gpu

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/emberhq/ember/oci"
)

// Environment variables set in a GPU worker.
const (
	// EnvNvidiaVisibleDevices lists the worker's GPUs by UUID, comma
	// separated. It names the host GPUs (for logs and for workers that
	// report what they ran on); nothing in ember reads it back, and there is
	// no NVIDIA runtime hook to act on it.
	EnvNvidiaVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	// EnvCUDAVisibleDevices holds container-relative indices 0..n-1, not
	// UUIDs: the container only has the given GPUs' device nodes, so CUDA
	// there numbers them 0..n-1, and integer indices are what frameworks
	// that parse this variable (vLLM, Ray, RunPod worker code counting
	// GPUs with split(",")) accept; several reject UUIDs. Together with
	// CUDA_DEVICE_ORDER=PCI_BUS_ID and NVIDIA_VISIBLE_DEVICES listed in host
	// index (= PCI bus) order, CUDA device i is the i-th UUID of
	// NVIDIA_VISIBLE_DEVICES.
	EnvCUDAVisibleDevices = "CUDA_VISIBLE_DEVICES"
	// EnvCUDADeviceOrder is set to PCI_BUS_ID unless the image or the
	// worker's spec already chose: CUDA's default (fastest first) could
	// number the GPUs differently from nvidia-smi and from
	// NVIDIA_VISIBLE_DEVICES.
	EnvCUDADeviceOrder = "CUDA_DEVICE_ORDER"
)

// CDIKind is the CDI kind of full NVIDIA GPUs.
const CDIKind = "nvidia.com/gpu"

// DefaultCDISpecDirs are where CDI specs live: static specs first, then
// the generated ones (nvidia-cdi-refresh writes /var/run/cdi/nvidia.yaml),
// which win on conflicts.
var DefaultCDISpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// controlNodes are the driver's nodes every GPU container needs besides
// its /dev/nvidiaN. nvidiactl is required (no CUDA or NVML call works
// without it); the others are added when the host has them. nvidia-uvm
// and nvidia-uvm-tools are created on first use (by nvidia-modprobe or the
// nvidia-persistenced unit): a host that never ran CUDA may lack them, and
// CUDA in the container then fails, so appliances should load nvidia-uvm
// at boot.
var controlNodes = []struct {
	name     string
	required bool
}{
	{"nvidiactl", true},
	{"nvidia-uvm", false},
	{"nvidia-uvm-tools", false},
	{"nvidia-modeset", false},
}

// Injector gives containers exactly the GPUs they are assigned. It
// implements oci.DeviceInjector.
//
// When CDI specs for nvidia.com/gpu exist in CDISpecDirs, the injection
// is what they say (the host's own description, with the hooks the
// NVIDIA Container Toolkit wants run). Otherwise it is derived here from
// the inventory and the host's /dev and driver files: device nodes, cgroup
// rules and read-only driver mounts, without hooks.
//
// The zero value of each field means its default. Inject only reads the
// Injector, so one Injector may serve concurrent worker starts.
type Injector struct {
	// Inventory is the host's GPUs, from Discover. Only GPUs listed here can
	// be injected, whichever way the injection goes.
	Inventory Inventory
	// DevDir is the host directory holding the device nodes ("" means
	// /dev). Inside the container the nodes are always under /dev.
	DevDir string
	// LibDirs are searched for the driver's libraries (nil means
	// DefaultLibDirs()). Libraries are mounted into one directory of the
	// container, on its loader's search path (see ContainerLibDir).
	LibDirs []string
	// LibPatterns are filepath.Match patterns of the library file names
	// (nil means DefaultLibPatterns).
	LibPatterns []string
	// BinDirs are searched, in order, for Binaries (nil means
	// DefaultBinDirs), after the bin directory beside the driver's
	// libraries. Binaries are mounted into /usr/bin of the container.
	BinDirs []string
	// Binaries are the driver tools to mount when found (nil means
	// DefaultBinaries).
	Binaries []string
	// CDISpecDirs are searched for CDI specs (nil means
	// DefaultCDISpecDirs; an empty, non-nil slice turns CDI off).
	CDISpecDirs []string
	// MIGMinors is the driver's MIG capability table ("" means
	// DefaultMIGMinors), read when a MIG instance is injected.
	MIGMinors string

	// stat reads a host device node; nil means statNode. Tests replace it
	// to fake nodes without root.
	stat func(path string) (hostNode, error)
}

var _ oci.DeviceInjector = (*Injector)(nil)

// Inject edits spec so that the container gets the GPUs named by
// gpuUUIDs and no others. Each UUID must be a healthy GPU of the
// inventory not in MIG mode, or a MIG instance, named once; a MIG
// instance must be the only one (CUDA uses one MIG instance per
// process). On any error spec is left as it was: a worker must never
// start believing it has a GPU it was not given. An empty gpuUUIDs leaves
// spec untouched.
func (in *Injector) Inject(spec *specs.Spec, gpuUUIDs []string) error {
	if spec == nil {
		return errors.New("gpu: inject: nil spec")
	}
	if len(gpuUUIDs) == 0 {
		return nil
	}
	devs, err := in.resolve(gpuUUIDs)
	if err != nil {
		return fmt.Errorf("gpu: inject: %w", err)
	}
	// Edit a copy and swap it in at the end, so that a failure halfway
	// (a missing node, a CDI edit that does not apply) leaves no partial
	// GPU in the caller's spec.
	work, err := cloneSpec(spec)
	if err != nil {
		return fmt.Errorf("gpu: inject: %w", err)
	}
	cache, err := in.loadCDI()
	if err != nil {
		return fmt.Errorf("gpu: inject: %w", err)
	}
	if cache != nil && len(gpuNames(cache)) > 0 {
		err = in.injectCDI(work, cache, devs)
	} else {
		err = in.injectHost(work, devs)
	}
	if err != nil {
		return fmt.Errorf("gpu: inject: %w", err)
	}
	setGPUEnv(work, devs)
	*spec = *work
	return nil
}

// resolve maps UUIDs to inventory devices, sorted by host index (the order
// CUDA numbers them in the container, see EnvCUDAVisibleDevices).
func (in *Injector) resolve(uuids []string) ([]Device, error) {
	have := len(in.Inventory.Devices)
	if len(uuids) > have {
		return nil, fmt.Errorf("%d GPUs requested but the host has %d", len(uuids), have)
	}
	seen := map[string]bool{}
	devs := make([]Device, 0, len(uuids))
	for _, u := range uuids {
		if seen[u] {
			return nil, fmt.Errorf("GPU %s requested twice", u)
		}
		seen[u] = true
		d, ok := in.Inventory.Lookup(u)
		switch {
		case !ok:
			return nil, fmt.Errorf("unknown GPU %q: not among the host's %d GPUs", u, have)
		case !d.Healthy():
			return nil, fmt.Errorf("GPU %s is unhealthy: %w", u, d.Err)
		case d.MIGEnabled:
			return nil, fmt.Errorf("GPU %s has MIG mode enabled: it is used through its MIG instances (%s), or disable MIG to use it whole", u, strings.Join(in.migUUIDs(u), ", "))
		case d.MIG != nil && len(uuids) > 1:
			return nil, fmt.Errorf("MIG instance %s must be a worker's only GPU (CUDA uses one MIG instance per process), not one of %d", u, len(uuids))
		case d.Minor < 0:
			return nil, fmt.Errorf("GPU %s has no known device minor number", u)
		}
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b Device) int { return a.Index - b.Index })
	return devs, nil
}

// migUUIDs lists the MIG instances of the GPU parent.
func (in *Injector) migUUIDs(parent string) []string {
	var out []string
	for _, d := range in.Inventory.MIGDevices {
		if d.MIG != nil && d.MIG.ParentUUID == parent && d.UUID != "" {
			out = append(out, d.UUID)
		}
	}
	if len(out) == 0 {
		return []string{"none made"}
	}
	return out
}

// injectHost is the injection without CDI: the GPUs' and the driver's
// nodes from DevDir, and the driver's files from the library and binary
// directories.
func (in *Injector) injectHost(spec *specs.Spec, devs []Device) error {
	devDir := in.DevDir
	if devDir == "" {
		devDir = "/dev"
	}
	stat := in.stat
	if stat == nil {
		stat = statNode
	}

	type node struct {
		name string
		hostNode
	}
	var nodes []node
	for _, d := range devs {
		name := "nvidia" + strconv.Itoa(d.Minor)
		hn, err := stat(filepath.Join(devDir, name))
		if err != nil {
			return fmt.Errorf("GPU %s: device node: %w", d.UUID, err)
		}
		// A node whose minor is not the GPU's would give the worker another
		// GPU than the one the scheduler accounts for.
		if hn.minor != int64(d.Minor) {
			return fmt.Errorf("GPU %s: %s has minor %d, NVML says %d", d.UUID, name, hn.minor, d.Minor)
		}
		nodes = append(nodes, node{name, hn})
		if d.MIG == nil {
			continue
		}
		caps, err := migCaps(cmp.Or(in.MIGMinors, DefaultMIGMinors), d.Minor, d.MIG)
		if err != nil {
			return err
		}
		for _, c := range caps {
			hn, err := stat(filepath.Join(devDir, c))
			if err != nil {
				return fmt.Errorf("MIG instance %s: capability node (made by nvidia-modprobe -f /proc/driver/nvidia-caps/mig-minors): %w", d.UUID, err)
			}
			nodes = append(nodes, node{c, hn})
		}
	}
	for _, c := range controlNodes {
		hn, err := stat(filepath.Join(devDir, c.name))
		if errors.Is(err, fs.ErrNotExist) && !c.required {
			continue
		}
		if err != nil {
			return fmt.Errorf("driver device node: %w", err)
		}
		nodes = append(nodes, node{c.name, hn})
	}

	libDirs := in.LibDirs
	if libDirs == nil {
		libDirs = DefaultLibDirs()
	}
	rootfs := ""
	if spec.Root != nil {
		rootfs = spec.Root.Path
	}
	mounts, err := driverMounts(libDirs, orDefault(in.LibPatterns, DefaultLibPatterns),
		orDefault(in.BinDirs, DefaultBinDirs), orDefault(in.Binaries, DefaultBinaries),
		in.Inventory.DriverVersion, ContainerLibDir(rootfs))
	if err != nil {
		return err
	}

	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	for _, n := range nodes {
		p := path.Join("/dev", n.name)
		mode, uid, gid := n.perm, n.uid, n.gid
		major, minor := n.major, n.minor
		// The node mirrors the host's owner and mode, so the access model
		// (0666 root:root by default, or a site's 0660 with a group) is the
		// same inside as outside.
		spec.Linux.Devices = slices.DeleteFunc(spec.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == p })
		spec.Linux.Devices = append(spec.Linux.Devices, specs.LinuxDevice{
			Path: p, Type: "c", Major: major, Minor: minor,
			FileMode: &mode, UID: &uid, GID: &gid,
		})
		addAllowRule(spec.Linux.Resources, major, minor)
	}
	for _, m := range mounts {
		spec.Mounts = slices.DeleteFunc(spec.Mounts, func(x specs.Mount) bool { return x.Destination == m.Destination })
		spec.Mounts = append(spec.Mounts, m)
	}
	return nil
}

// addAllowRule appends a cgroup rule letting the container use the char
// device major:minor, unless an identical rule is there already. Rules are
// appended, so they come after the runtime's default deny-all.
func addAllowRule(r *specs.LinuxResources, major, minor int64) {
	for _, d := range r.Devices {
		if d.Allow && d.Type == "c" && d.Major != nil && *d.Major == major &&
			d.Minor != nil && *d.Minor == minor && d.Access == "rwm" {
			return
		}
	}
	r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{
		Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm",
	})
}

// setGPUEnv sets the variables described at EnvNvidiaVisibleDevices,
// EnvCUDAVisibleDevices and EnvCUDADeviceOrder. Ours replace the first two
// when the image set them (CUDA images set NVIDIA_VISIBLE_DEVICES=all, and
// a CDI spec may set it to "void" for the legacy hook, which ember does
// not run).
func setGPUEnv(spec *specs.Spec, devs []Device) {
	if spec.Process == nil {
		spec.Process = &specs.Process{}
	}
	uuids := make([]string, len(devs))
	idx := make([]string, len(devs))
	for i, d := range devs {
		uuids[i] = d.UUID
		idx[i] = strconv.Itoa(i)
	}
	env := setEnv(spec.Process.Env, EnvNvidiaVisibleDevices, strings.Join(uuids, ","))
	env = setEnv(env, EnvCUDAVisibleDevices, strings.Join(idx, ","))
	if _, ok := lookupEnv(env, EnvCUDADeviceOrder); !ok {
		env = append(env, EnvCUDADeviceOrder+"=PCI_BUS_ID")
	}
	spec.Process.Env = env
}

// setEnv sets key to value in env: in place of its first occurrence (so
// that injecting twice gives the same spec), dropping any later ones.
func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	set := false
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			if !set {
				out = append(out, key+"="+value)
				set = true
			}
			continue
		}
		out = append(out, kv)
	}
	if !set {
		out = append(out, key+"="+value)
	}
	return out
}

func lookupEnv(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

func orDefault(v, def []string) []string {
	if v == nil {
		return def
	}
	return v
}

// cloneSpec deep-copies spec. A runtime spec is plain data meant for JSON,
// so a round trip copies it exactly (up to empty slices becoming nil).
func cloneSpec(spec *specs.Spec) (*specs.Spec, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	var c specs.Spec
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	return &c, nil
}
