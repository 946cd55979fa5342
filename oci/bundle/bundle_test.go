package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/emberhq/ember/oci"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"app:x:1000:1000:app user:/home/app:/bin/sh\n" +
		"svc:x:1001:1001::/srv:/bin/false\n"
	testGroup = "root:x:0:\n" +
		"app:x:1000:\n" +
		"svc:x:1001:\n" +
		"video:x:44:app\n" +
		"staff:x:50:app,svc\n"
)

// testRootfs makes a rootfs holding only /etc/passwd and /etc/group.
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"passwd": testPasswd, "group": testGroup} {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func baseOptions(t *testing.T) Options {
	return Options{
		Spec: oci.Spec{
			ID:       "w-0123456789ab",
			Endpoint: "ep1",
			Image:    "example:latest",
			Env:      []string{"RUNPOD_POD_ID=w-0123456789ab", "RUNPOD_AI_API_KEY=secret"},
			LogPath:  "/var/lib/ember/workers/w-0123456789ab.log",
			Dir:      "/var/lib/ember/workers/w-0123456789ab",
		},
		Image: oci.ImageConfig{
			Entrypoint: []string{"/usr/bin/python3", "-u"},
			Cmd:        []string{"handler.py"},
			Env:        []string{"PATH=/opt/venv/bin:/usr/bin", "LANG=C.UTF-8"},
			WorkingDir: "/app",
		},
		Rootfs: testRootfs(t),
		Limits: HostLimits(16<<30, 4194304, 524288),
		Host:   Host{Kernel: KernelVersion{6, 1}, Arch: "amd64"},
	}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		img     oci.ImageConfig
		command []string
		want    []string
		wantErr bool
	}{
		{"entrypoint and cmd", oci.ImageConfig{Entrypoint: []string{"/bin/ep", "-x"}, Cmd: []string{"a", "b"}}, nil, []string{"/bin/ep", "-x", "a", "b"}, false},
		{"cmd only", oci.ImageConfig{Cmd: []string{"python", "h.py"}}, nil, []string{"python", "h.py"}, false},
		{"entrypoint only", oci.ImageConfig{Entrypoint: []string{"/start.sh"}}, nil, []string{"/start.sh"}, false},
		{"command replaces entrypoint and cmd", oci.ImageConfig{Entrypoint: []string{"/bin/ep"}, Cmd: []string{"a"}}, []string{"/bin/other", "z"}, []string{"/bin/other", "z"}, false},
		{"nothing to run", oci.ImageConfig{}, nil, nil, true},
		{"empty argv0", oci.ImageConfig{Cmd: []string{""}}, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Args(tc.img, tc.command)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	for _, tc := range []struct {
		name          string
		image, worker []string
		want          []string
		wantErr       bool
	}{
		{"worker wins, image PATH kept",
			[]string{"PATH=/opt/bin:/bin", "A=image", "B=image"},
			[]string{"A=worker", "C=worker"},
			[]string{"PATH=/opt/bin:/bin", "A=worker", "B=image", "C=worker"}, false},
		{"worker PATH wins",
			[]string{"PATH=/opt/bin"}, []string{"PATH=/usr/bin"},
			[]string{"PATH=/usr/bin"}, false},
		{"default PATH",
			[]string{"A=1"}, []string{"B=2"},
			[]string{"A=1", "B=2", "PATH=" + DefaultPath}, false},
		{"later duplicate wins",
			nil, []string{"A=1", "A=2"},
			[]string{"A=2", "PATH=" + DefaultPath}, false},
		{"empty value kept",
			[]string{"A=x"}, []string{"A="},
			[]string{"A=", "PATH=" + DefaultPath}, false},
		{"value with =",
			nil, []string{"URL=http://h/?a=b"},
			[]string{"URL=http://h/?a=b", "PATH=" + DefaultPath}, false},
		{"not KEY=VALUE", nil, []string{"JUSTKEY"}, nil, true},
		{"empty key", []string{"=x"}, nil, nil, true},
		{"NUL byte", nil, []string{"A=x\x00y"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeEnv(tc.image, tc.worker)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestResolveUser(t *testing.T) {
	rootfs := testRootfs(t)
	for _, tc := range []struct {
		spec     string
		uid, gid int
		sgids    []int
		home     string
		wantErr  bool
	}{
		{"", 0, 0, nil, "/root", false},
		{"root", 0, 0, nil, "/root", false},
		{"app", 1000, 1000, []int{44, 50}, "/home/app", false},
		{"1000", 1000, 1000, []int{44, 50}, "/home/app", false},
		{"app:staff", 1000, 50, nil, "/home/app", false}, // a given group: no supplementary groups (runc's rule)
		{"1001:44", 1001, 44, nil, "/srv", false},
		{"4242", 4242, 0, nil, "/", false},
		{"4242:4243", 4242, 4243, nil, "/", false},
		{"svc:1234", 1001, 1234, nil, "/srv", false},
		{"svc", 1001, 1001, []int{50}, "/srv", false},
		{"nosuchuser", 0, 0, nil, "", true},
		{"app:nosuchgroup", 0, 0, nil, "", true},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			u, err := ResolveUser(rootfs, tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if u.Uid != tc.uid || u.Gid != tc.gid || u.Home != tc.home {
				t.Fatalf("got uid %d gid %d home %q, want %d %d %q", u.Uid, u.Gid, u.Home, tc.uid, tc.gid, tc.home)
			}
			got := slices.Sorted(slices.Values(u.Sgids))
			if len(got) != 0 || len(tc.sgids) != 0 {
				if !slices.Equal(got, tc.sgids) {
					t.Fatalf("sgids %v, want %v", got, tc.sgids)
				}
			}
		})
	}
}

// A rootfs whose /etc/passwd is a symlink to the host's must not be read
// through: names do not resolve, numeric ids still do.
func TestResolveUserSymlinkEscape(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostPasswd := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(hostPasswd, []byte("hostonly:x:777:777::/h:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{hostPasswd, "../../../../../../../../" + hostPasswd} {
		link := filepath.Join(dir, "etc", "passwd")
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if u, err := ResolveUser(dir, "hostonly"); err == nil {
			t.Fatalf("symlink %s: resolved a host user: %+v", target, u)
		}
		if u, err := ResolveUser(dir, "777"); err != nil || u.Uid != 777 || u.Gid != 0 {
			t.Fatalf("symlink %s: numeric user: %+v, %v", target, u, err)
		}
	}
}

func TestBuildProcess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*Options)
		check   func(*testing.T, *specs.Spec)
		wantErr string
	}{
		{"image entrypoint, env merge, cwd", nil, func(t *testing.T, s *specs.Spec) {
			p := s.Process
			if want := []string{"/usr/bin/python3", "-u", "handler.py"}; !slices.Equal(p.Args, want) {
				t.Errorf("args %q, want %q", p.Args, want)
			}
			env := envMap(p.Env)
			if env["PATH"] != "/opt/venv/bin:/usr/bin" || env["LANG"] != "C.UTF-8" || env["RUNPOD_AI_API_KEY"] != "secret" || env["HOME"] != "/root" {
				t.Errorf("env %q", p.Env)
			}
			if p.Cwd != "/app" || p.User.UID != 0 || p.User.GID != 0 || p.Terminal {
				t.Errorf("cwd %q user %+v terminal %v", p.Cwd, p.User, p.Terminal)
			}
			if !p.NoNewPrivileges {
				t.Error("no_new_privs not set")
			}
			if p.OOMScoreAdj == nil || *p.OOMScoreAdj != DefaultOOMScoreAdj {
				t.Errorf("oom_score_adj %v", p.OOMScoreAdj)
			}
			if len(p.Rlimits) != 1 || p.Rlimits[0].Type != "RLIMIT_NOFILE" || p.Rlimits[0].Hard != 524288 {
				t.Errorf("rlimits %+v", p.Rlimits)
			}
		}, ""},
		{"command overrides entrypoint and cmd", func(o *Options) { o.Spec.Command = []string{"/bin/worker", "--x"} }, func(t *testing.T, s *specs.Spec) {
			if want := []string{"/bin/worker", "--x"}; !slices.Equal(s.Process.Args, want) {
				t.Errorf("args %q, want %q", s.Process.Args, want)
			}
		}, ""},
		{"worker PATH wins over image PATH", func(o *Options) { o.Spec.Env = append(o.Spec.Env, "PATH=/w/bin") }, func(t *testing.T, s *specs.Spec) {
			if got := envMap(s.Process.Env)["PATH"]; got != "/w/bin" {
				t.Errorf("PATH %q", got)
			}
		}, ""},
		{"relative working dir", func(o *Options) { o.Image.WorkingDir = "srv/app/" }, func(t *testing.T, s *specs.Spec) {
			if s.Process.Cwd != "/srv/app" {
				t.Errorf("cwd %q", s.Process.Cwd)
			}
		}, ""},
		{"named user with groups", func(o *Options) { o.Image.User = "app" }, func(t *testing.T, s *specs.Spec) {
			u := s.Process.User
			if u.UID != 1000 || u.GID != 1000 || !slices.Equal(slices.Sorted(slices.Values(u.AdditionalGids)), []uint32{44, 50}) {
				t.Errorf("user %+v", u)
			}
			if envMap(s.Process.Env)["HOME"] != "/home/app" {
				t.Errorf("HOME %q", envMap(s.Process.Env)["HOME"])
			}
			c := s.Process.Capabilities
			if len(c.Effective) != 0 || len(c.Permitted) != 0 || len(c.Bounding) == 0 {
				t.Errorf("non-root capabilities %+v", c)
			}
		}, ""},
		{"uid:gid user", func(o *Options) { o.Image.User = "4242:4243" }, func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; u.UID != 4242 || u.GID != 4243 {
				t.Errorf("user %+v", u)
			}
		}, ""},
		{"worker HOME kept", func(o *Options) { o.Spec.Env = append(o.Spec.Env, "HOME=/data") }, func(t *testing.T, s *specs.Spec) {
			if got := envMap(s.Process.Env)["HOME"]; got != "/data" {
				t.Errorf("HOME %q", got)
			}
		}, ""},
		{"unknown user", func(o *Options) { o.Image.User = "ghost" }, nil, "ghost"},
		{"nothing to run", func(o *Options) { o.Image.Entrypoint, o.Image.Cmd = nil, nil }, nil, "nothing to run"},
		{"bad network", func(o *Options) { o.Spec.Network = "bridge" }, nil, "bridge"},
		{"relative rootfs", func(o *Options) { o.Rootfs = "rootfs" }, nil, "absolute"},
		{"no id", func(o *Options) { o.Spec.ID = "" }, nil, "no id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			if tc.edit != nil {
				tc.edit(&o)
			}
			s, err := Build(o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func nsTypes(s *specs.Spec) []specs.LinuxNamespaceType {
	var out []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			panic("namespace with a path")
		}
		out = append(out, ns.Type)
	}
	return out
}

func TestBuildNamespaces(t *testing.T) {
	for _, tc := range []struct {
		network  string
		cgroupV2 bool
		want     []specs.LinuxNamespaceType
		hostname string
	}{
		{"", false, []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace}, ""},
		{"host", false, []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace}, ""},
		{"none", false, []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace}, "w-0123456789ab"},
		{"host", true, []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.CgroupNamespace}, ""},
	} {
		t.Run(tc.network, func(t *testing.T) {
			o := baseOptions(t)
			o.Spec.Network = tc.network
			o.Host.CgroupV2 = tc.cgroupV2
			s, err := Build(o)
			if err != nil {
				t.Fatal(err)
			}
			if got := nsTypes(s); !slices.Equal(got, tc.want) {
				t.Errorf("namespaces %v, want %v", got, tc.want)
			}
			if s.Hostname != tc.hostname {
				t.Errorf("hostname %q, want %q", s.Hostname, tc.hostname)
			}
		})
	}
}

func i64(v int64) *int64 { return &v }

func TestBuildResources(t *testing.T) {
	limits := Limits{MemoryBytes: 8 << 30, PidsLimit: 4096}
	for _, tc := range []struct {
		name        string
		res         oci.Resources
		noSwapLimit bool
		mem, swap   *int64
		quota       *int64
		pids        *int64
		shm         string
	}{
		{"defaults", oci.Resources{}, false, i64(8 << 30), i64(8 << 30), nil, i64(4096), "size=4294967296"},
		{"explicit", oci.Resources{MemoryBytes: 2 << 30, CPUs: 1.5, PidsLimit: 64}, false, i64(2 << 30), i64(2 << 30), i64(150000), i64(64), "size=1073741824"},
		{"tiny cpu share", oci.Resources{CPUs: 0.001}, false, i64(8 << 30), i64(8 << 30), i64(MinCPUQuota), i64(4096), "size=4294967296"},
		{"small memory keeps 64 MiB shm", oci.Resources{MemoryBytes: 32 << 20}, false, i64(32 << 20), i64(32 << 20), nil, i64(4096), "size=67108864"},
		{"negative means unlimited", oci.Resources{MemoryBytes: -1, CPUs: -1, PidsLimit: -1}, false, nil, nil, nil, nil, ""},
		{"no swap accounting", oci.Resources{MemoryBytes: 1 << 30}, true, i64(1 << 30), nil, nil, i64(4096), "size=536870912"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			o.Limits = limits
			o.Spec.Resources = tc.res
			o.Host.NoSwapLimit = tc.noSwapLimit
			s, err := Build(o)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Linux.Resources
			eq := func(what string, got, want *int64) {
				t.Helper()
				if (got == nil) != (want == nil) || (got != nil && *got != *want) {
					t.Errorf("%s: got %v, want %v", what, deref(got), deref(want))
				}
			}
			var mem, swap, quota, pids *int64
			if r.Memory != nil {
				mem, swap = r.Memory.Limit, r.Memory.Swap
			}
			if r.CPU != nil {
				quota = r.CPU.Quota
				if r.CPU.Period == nil || *r.CPU.Period != CPUPeriod {
					t.Errorf("period %v", r.CPU.Period)
				}
			}
			if r.Pids != nil {
				pids = r.Pids.Limit
			}
			eq("memory", mem, tc.mem)
			eq("swap", swap, tc.swap)
			eq("quota", quota, tc.quota)
			eq("pids", pids, tc.pids)
			if len(r.Devices) != 1 || r.Devices[0].Allow || r.Devices[0].Access != "rwm" {
				t.Errorf("device rules %+v, want deny all", r.Devices)
			}
			shm := mountAt(s, "/dev/shm")
			var size string
			for _, opt := range shm.Options {
				if strings.HasPrefix(opt, "size=") {
					size = opt
				}
			}
			if size != tc.shm {
				t.Errorf("/dev/shm %q, want %q", size, tc.shm)
			}
			if tc.mem != nil && s.Annotations[AnnotationMemory] == "" {
				t.Error("no memory annotation")
			}
		})
	}
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestBuildMounts(t *testing.T) {
	o := baseOptions(t)
	o.Spec.VolumeDir = "/var/lib/ember/volumes/ep1"
	o.EtcDir = t.TempDir()
	if err := WriteEtc(o.EtcDir, "host", "box", "/etc"); err != nil {
		t.Fatal(err)
	}
	s, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst, typ string
		opts     []string
	}{
		{"/proc", "proc", []string{"nosuid", "noexec", "nodev"}},
		{"/dev", "tmpfs", []string{"nosuid"}},
		{"/dev/pts", "devpts", []string{"newinstance", "ptmxmode=0666"}},
		{"/dev/shm", "tmpfs", []string{"nosuid", "noexec", "nodev"}},
		{"/dev/mqueue", "mqueue", nil},
		{"/sys", "sysfs", []string{"ro"}},
		{"/sys/fs/cgroup", "cgroup", []string{"ro"}},
		{VolumeMountPoint, "bind", []string{"rbind", "rw"}},
		{"/etc/hosts", "bind", []string{"ro"}},
		{"/etc/resolv.conf", "bind", []string{"ro"}},
		{"/etc/hostname", "bind", []string{"ro"}},
	} {
		m := mountAt(s, tc.dst)
		if m == nil {
			t.Errorf("no mount at %s", tc.dst)
			continue
		}
		if m.Type != tc.typ {
			t.Errorf("%s: type %q, want %q", tc.dst, m.Type, tc.typ)
		}
		for _, opt := range tc.opts {
			if !slices.Contains(m.Options, opt) {
				t.Errorf("%s: options %q lack %q", tc.dst, m.Options, opt)
			}
		}
	}
	if m := mountAt(s, VolumeMountPoint); m != nil && m.Source != o.Spec.VolumeDir {
		t.Errorf("volume source %q", m.Source)
	}
	if m := mountAt(s, "/etc/hosts"); m != nil && m.Source != filepath.Join(o.EtcDir, "hosts") {
		t.Errorf("hosts source %q", m.Source)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("masked %q readonly %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	for k, want := range map[string]string{AnnotationWorker: o.Spec.ID, AnnotationLogPath: o.Spec.LogPath, AnnotationDir: o.Spec.Dir, AnnotationEndpoint: "ep1"} {
		if s.Annotations[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], want)
		}
	}

	// No volume, no etc dir: no such mounts.
	o = baseOptions(t)
	s, err = Build(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{VolumeMountPoint, "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
		if mountAt(s, dst) != nil {
			t.Errorf("unexpected mount at %s", dst)
		}
	}
}

func TestWriteEtc(t *testing.T) {
	hostEtc := t.TempDir()
	os.WriteFile(filepath.Join(hostEtc, "hosts"), []byte("127.0.0.1 localhost\n10.0.0.5 db\n"), 0o644)
	os.WriteFile(filepath.Join(hostEtc, "resolv.conf"), []byte("nameserver 10.0.0.1\n"), 0o644)
	for _, tc := range []struct {
		network                string
		hosts, resolv, hostnam string
	}{
		{"host", "10.0.0.5 db", "nameserver 10.0.0.1", "myhost\n"},
		{"none", "127.0.1.1\tmyhost", "", "myhost\n"},
	} {
		dir := filepath.Join(t.TempDir(), "etc")
		if err := WriteEtc(dir, tc.network, "myhost", hostEtc); err != nil {
			t.Fatal(err)
		}
		read := func(name string) string {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		if !strings.Contains(read("hosts"), tc.hosts) {
			t.Errorf("%s: hosts %q lacks %q", tc.network, read("hosts"), tc.hosts)
		}
		if got := read("resolv.conf"); (tc.resolv == "" && got != "") || !strings.Contains(got, tc.resolv) {
			t.Errorf("%s: resolv.conf %q, want %q", tc.network, got, tc.resolv)
		}
		if read("hostname") != tc.hostnam {
			t.Errorf("%s: hostname %q", tc.network, read("hostname"))
		}
	}
	if err := WriteEtc(t.TempDir(), "bridge", "h", hostEtc); err == nil {
		t.Error("bridge network accepted")
	}
}

// seccompAction evaluates the profile for a syscall with the given first
// argument, the way libseccomp would (first matching rule).
func seccompAction(p *specs.LinuxSeccomp, name string, arg0 uint64) (specs.LinuxSeccompAction, uint) {
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, name) {
			continue
		}
		ok := true
		for _, a := range r.Args {
			if a.Index != 0 {
				continue
			}
			switch a.Op {
			case specs.OpEqualTo:
				ok = ok && arg0 == a.Value
			case specs.OpNotEqual:
				ok = ok && arg0 != a.Value
			case specs.OpMaskedEqual:
				ok = ok && arg0&a.Value == a.ValueTwo
			default:
				panic("unhandled op " + a.Op)
			}
		}
		if !ok {
			continue
		}
		errno := uint(0)
		if r.ErrnoRet != nil {
			errno = *r.ErrnoRet
		}
		return r.Action, errno
	}
	return p.DefaultAction, *p.DefaultErrnoRet
}

func TestDefaultSeccomp(t *testing.T) {
	const (
		eperm   = 1
		enosys  = 38
		newuser = 0x10000000
		newns   = 0x00020000
		thread  = 0x00010000 | 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 // CLONE_THREAD|VM|FS|FILES|SIGHAND
	)
	modern := DefaultSeccomp("amd64", KernelVersion{6, 1}, DefaultCapabilities)
	old := DefaultSeccomp("amd64", KernelVersion{4, 4}, DefaultCapabilities)
	if modern.DefaultAction != specs.ActErrno || *modern.DefaultErrnoRet != eperm {
		t.Fatalf("default action %s/%d", modern.DefaultAction, *modern.DefaultErrnoRet)
	}
	if want := []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}; !slices.Equal(modern.Architectures, want) {
		t.Errorf("architectures %v", modern.Architectures)
	}
	for _, tc := range []struct {
		profile *specs.LinuxSeccomp
		name    string
		arg0    uint64
		action  specs.LinuxSeccompAction
		errno   uint
	}{
		{modern, "read", 0, specs.ActAllow, 0},
		{modern, "execve", 0, specs.ActAllow, 0},
		{modern, "arch_prctl", 0, specs.ActAllow, 0},
		{modern, "chroot", 0, specs.ActAllow, 0}, // CAP_SYS_CHROOT
		{modern, "unshare", newuser, specs.ActErrno, eperm},
		{modern, "setns", 0, specs.ActErrno, eperm},
		{modern, "mount", 0, specs.ActErrno, eperm},
		{modern, "umount2", 0, specs.ActErrno, eperm},
		{modern, "pivot_root", 0, specs.ActErrno, eperm},
		{modern, "move_mount", 0, specs.ActErrno, eperm},
		{modern, "fsopen", 0, specs.ActErrno, eperm},
		{modern, "keyctl", 0, specs.ActErrno, eperm},
		{modern, "add_key", 0, specs.ActErrno, eperm},
		{modern, "bpf", 0, specs.ActErrno, eperm},
		{modern, "perf_event_open", 0, specs.ActErrno, eperm},
		{modern, "userfaultfd", 0, specs.ActErrno, eperm},
		{modern, "io_uring_setup", 0, specs.ActErrno, eperm},
		{modern, "kexec_load", 0, specs.ActErrno, eperm},
		{modern, "init_module", 0, specs.ActErrno, eperm},
		{modern, "open_by_handle_at", 0, specs.ActErrno, eperm},
		{modern, "mbind", 0, specs.ActErrno, eperm},
		{modern, "reboot", 0, specs.ActErrno, eperm},
		{modern, "ptrace", 0, specs.ActAllow, 0},
		{old, "ptrace", 0, specs.ActErrno, eperm},
		{old, "process_vm_readv", 0, specs.ActErrno, eperm},
		{modern, "clone", thread, specs.ActAllow, 0},
		{modern, "clone", thread | newns, specs.ActErrno, eperm},
		{modern, "clone", newuser, specs.ActErrno, eperm},
		{modern, "clone3", 0, specs.ActErrno, enosys},
		{modern, "socket", 2 /* AF_INET */, specs.ActAllow, 0},
		{modern, "socket", 40 /* AF_VSOCK */, specs.ActErrno, eperm},
		{modern, "personality", 0xffffffff, specs.ActAllow, 0},
		{modern, "personality", 0x0040000 /* ADDR_NO_RANDOMIZE */, specs.ActErrno, eperm},
	} {
		action, errno := seccompAction(tc.profile, tc.name, tc.arg0)
		if action != tc.action || errno != tc.errno {
			t.Errorf("%s(%#x): %s/%d, want %s/%d", tc.name, tc.arg0, action, errno, tc.action, tc.errno)
		}
	}
	// With CAP_SYS_ADMIN, clone is unrestricted (Docker's rule).
	admin := DefaultSeccomp("amd64", KernelVersion{6, 1}, []string{"CAP_SYS_ADMIN"})
	if a, _ := seccompAction(admin, "clone", newns); a != specs.ActAllow {
		t.Errorf("CAP_SYS_ADMIN clone: %s", a)
	}
	arm := DefaultSeccomp("arm64", KernelVersion{6, 1}, nil)
	if a, _ := seccompAction(arm, "arch_prctl", 0); a != specs.ActErrno {
		t.Error("arch_prctl allowed on arm64")
	}
	if a, _ := seccompAction(arm, "chroot", 0); a != specs.ActErrno {
		t.Error("chroot allowed without CAP_SYS_CHROOT")
	}
}

type fakeInjector struct {
	got []string
	err error
}

func (f *fakeInjector) Inject(s *specs.Spec, uuids []string) error {
	f.got = uuids
	if f.err != nil {
		return f.err
	}
	s.Process.Env = append(s.Process.Env, "NVIDIA_VISIBLE_DEVICES="+strings.Join(uuids, ","))
	s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0})
	return nil
}

func TestBuildGPUs(t *testing.T) {
	o := baseOptions(t)
	o.Spec.GPUs = []string{"GPU-aaaa", "GPU-bbbb"}
	if _, err := Build(o); err == nil || !strings.Contains(err.Error(), "GPU") {
		t.Fatalf("GPUs without injector: err = %v", err)
	}
	inj := &fakeInjector{}
	o.Devices = inj
	s, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inj.got, o.Spec.GPUs) || envMap(s.Process.Env)["NVIDIA_VISIBLE_DEVICES"] != "GPU-aaaa,GPU-bbbb" || len(s.Linux.Devices) != 1 {
		t.Errorf("injector not applied: got %v, env %q", inj.got, s.Process.Env)
	}
	inj.err = errors.New("no such GPU")
	if _, err := Build(o); err == nil || !errors.Is(err, inj.err) {
		t.Errorf("injector error not returned: %v", err)
	}
	// No GPUs: the injector is not called.
	inj2 := &fakeInjector{}
	o = baseOptions(t)
	o.Devices = inj2
	if _, err := Build(o); err != nil || inj2.got != nil {
		t.Errorf("injector called without GPUs: %v %v", inj2.got, err)
	}
}

// The spec must be one that runc's own converter accepts.
func TestBuildConvertsToLibcontainerConfig(t *testing.T) {
	for _, network := range []string{"host", "none"} {
		o := baseOptions(t)
		o.Spec.Network = network
		o.Spec.VolumeDir = t.TempDir()
		o.Spec.Resources = oci.Resources{MemoryBytes: 1 << 30, CPUs: 2, PidsLimit: 100}
		o.CgroupsPath = "/ember/" + o.Spec.ID
		s, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: o.Spec.ID, Spec: s})
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if cfg.Cgroups.Resources.Memory != 1<<30 || cfg.Cgroups.Resources.CpuQuota != 200000 || cfg.Cgroups.Resources.PidsLimit == nil || *cfg.Cgroups.Resources.PidsLimit != 100 {
			t.Errorf("%s: cgroup resources %+v", network, cfg.Cgroups.Resources)
		}
		if !cfg.NoNewPrivileges || cfg.Seccomp == nil || cfg.Rootfs != o.Rootfs {
			t.Errorf("%s: nnp %v seccomp %v rootfs %q", network, cfg.NoNewPrivileges, cfg.Seccomp != nil, cfg.Rootfs)
		}
		if network == "none" && len(cfg.Networks) != 1 {
			t.Errorf("none: networks %+v, want loopback only", cfg.Networks)
		}
	}
}

func TestHostLimits(t *testing.T) {
	for _, tc := range []struct {
		mem, pidMax int64
		wantMem     int64
		wantPids    int64
	}{
		{24 << 30, 32768, (24<<30 - 24<<30/10) &^ (1<<20 - 1), 8192},
		{512 << 30, 4194304, 508 << 30, MaxDefaultPids},
		{2 << 30, 0, 1536 << 20, MaxDefaultPids},
		{512 << 20, 1000, 256 << 20, MinDefaultPids},
		{0, 0, 0, MaxDefaultPids},
	} {
		l := HostLimits(tc.mem, tc.pidMax, 0)
		if l.MemoryBytes != tc.wantMem || l.PidsLimit != tc.wantPids || l.CPUs != 0 || l.OOMScoreAdj != DefaultOOMScoreAdj {
			t.Errorf("HostLimits(%d, %d) = %+v, want memory %d pids %d", tc.mem, tc.pidMax, l, tc.wantMem, tc.wantPids)
		}
	}
}

func TestParseKernelVersion(t *testing.T) {
	for in, want := range map[string]KernelVersion{
		"6.18.44-fc-v782":   {6, 18},
		"4.8.0":             {4, 8},
		"5.15.0-91-generic": {5, 15},
		"3.10":              {3, 10},
		"6.1-rc3":           {6, 1},
		"6.9+":              {6, 9},
	} {
		got, err := ParseKernelVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseKernelVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "6", "x.y"} {
		if _, err := ParseKernelVersion(in); err == nil {
			t.Errorf("ParseKernelVersion(%q) accepted", in)
		}
	}
	if !(KernelVersion{4, 8}).AtLeast(4, 8) || (KernelVersion{4, 7}).AtLeast(4, 8) || !(KernelVersion{5, 0}).AtLeast(4, 8) {
		t.Error("AtLeast")
	}
}
