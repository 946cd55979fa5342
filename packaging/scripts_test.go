package packaging_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// scriptEnv is a root for the maintainer scripts (DPKG_ROOT) and a folder
// of fake commands that log their arguments: systemctl and, unless the
// environment plays a machine without them, deb-systemd-invoke and
// deb-systemd-helper.
type scriptEnv struct {
	root, bin, log string
	env            []string
}

// Fakes. systemctl is-enabled fails when the file "disabled" is next to
// the log (a preset that disables the unit) and prints "enabled" otherwise,
// as deb-systemd-invoke expects of an enabled unit.
const (
	fakeSystemctl = `#!/bin/sh
echo "systemctl $*" >>"$FAKE_LOG"
case " $* " in *" is-enabled "*)
	if [ -e "${FAKE_LOG%/*}/disabled" ]; then echo disabled; exit 1; fi
	echo enabled ;;
esac
`
	fakeHelper = `#!/bin/sh
echo "${0##*/} $*" >>"$FAKE_LOG"
`
)

// scriptTools are the programs the scripts run besides systemctl and the
// deb-systemd-* helpers; a machine without the helpers gets only these.
var scriptTools = []string{"sh", "od", "tr", "mv", "chmod", "mkdir", "rm", "awk"}

// newScriptEnv makes a scratch root, with /run/systemd/system when systemd
// is to run it. helpers: "fake" (logging fakes of deb-systemd-invoke and
// deb-systemd-helper), "none" (PATH holds only the fake systemctl and
// scriptTools), or "real" (this machine's, which then read and write the
// scratch root through DPKG_ROOT; they need the unit there).
func newScriptEnv(t *testing.T, systemd bool, helpers string) *scriptEnv {
	t.Helper()
	dir := t.TempDir()
	e := &scriptEnv{root: filepath.Join(dir, "root"), bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "calls.log")}
	for _, d := range []string{e.root, e.bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, text string, mode fs.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(e.bin, "systemctl"), fakeSystemctl, 0o755)
	path := e.bin + ":" + os.Getenv("PATH")
	switch helpers {
	case "fake":
		write(filepath.Join(e.bin, "deb-systemd-invoke"), fakeHelper, 0o755)
		write(filepath.Join(e.bin, "deb-systemd-helper"), fakeHelper, 0o755)
	case "none":
		for _, tool := range scriptTools {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Skipf("%s is not installed", tool)
			}
			if err := os.Symlink(p, filepath.Join(e.bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
		path = e.bin
	case "real":
		for _, h := range []string{"deb-systemd-invoke", "deb-systemd-helper"} {
			if _, err := exec.LookPath(h); err != nil {
				t.Skipf("%s is not installed (Debian package init-system-helpers)", h)
			}
		}
		unit := readFile(t, filepath.Join(root, "packaging", "emberd.service"))
		write(filepath.Join(e.root, "lib/systemd/system/emberd.service"), unit, 0o644)
	default:
		t.Fatalf("helpers %q", helpers)
	}
	if systemd {
		if err := os.MkdirAll(filepath.Join(e.root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// DPKG_MAINTSCRIPT_PACKAGE: as dpkg sets it (deb-systemd-helper refuses
	// to run without it).
	e.env = append(os.Environ(), "DPKG_ROOT="+e.root, "PATH="+path, "FAKE_LOG="+e.log, "DPKG_MAINTSCRIPT_PACKAGE=ember")
	return e
}

// policy installs $DPKG_ROOT/usr/sbin/policy-rc.d exiting with code, or
// removes it when code < 0.
func (e *scriptEnv) policy(t *testing.T, code int) {
	t.Helper()
	p := e.path("usr/sbin/policy-rc.d")
	if code < 0 {
		os.Remove(p)
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit "+strconv.Itoa(code)+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// script runs a maintainer script and returns the commands it ran that
// log (systemctl, and the deb-systemd-* fakes).
func (e *scriptEnv) script(t *testing.T, name string, args ...string) []string {
	t.Helper()
	os.Remove(e.log)
	run(t, e.env, "sh", append([]string{filepath.Join(root, "packaging", "scripts", name+".sh")}, args...)...)
	b, err := os.ReadFile(e.log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (e *scriptEnv) path(p string) string { return filepath.Join(e.root, p) }

var keyPattern = regexp.MustCompile(`^[0-9a-f]{64}\n$`)

// checkMode fails unless path exists with this type and permission bits.
func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// TestMaintainerScripts runs the scripts as dpkg and rpm call them, in a
// scratch root (DPKG_ROOT) with a fake systemctl and fake deb-systemd-*
// helpers: what they create, keep and delete, and which commands they run
// with and without systemd, and on a deb machine without the helpers.
func TestMaintainerScripts(t *testing.T) {
	for _, name := range []string{"postinstall", "preremove", "postremove"} {
		p := filepath.Join(root, "packaging", "scripts", name+".sh")
		if !strings.HasPrefix(readFile(t, p), "#!/bin/sh\n") {
			t.Errorf("%s: not a #!/bin/sh script", p)
		}
		for _, sh := range []string{"sh", "dash", "bash"} {
			if _, err := exec.LookPath(sh); err == nil {
				args := []string{"-n", p}
				if sh == "bash" {
					args = []string{"--posix", "-n", p}
				}
				run(t, nil, sh, args...)
			}
		}
	}

	// calls: with systemd running, and without.
	type step struct {
		script      string
		args        []string
		calls, none []string
	}
	helperEnable := []string{"deb-systemd-helper unmask emberd.service", "deb-systemd-helper --quiet was-enabled emberd.service", "deb-systemd-helper enable emberd.service"}
	with := func(a []string, b ...string) []string { return append(slices.Clone(a), b...) }
	for _, tc := range []struct {
		name             string
		helpers          string
		install, upgrade step
		remove, upRemove []step // erase, and the old package's scripts in an upgrade
		purge            *step
	}{
		{
			name:    "deb",
			helpers: "fake",
			install: step{"postinstall", []string{"configure", ""},
				with(helperEnable, "systemctl daemon-reload", "deb-systemd-invoke start emberd.service"), helperEnable},
			upgrade: step{"postinstall", []string{"configure", "1.0.0"},
				with(helperEnable, "systemctl daemon-reload", "deb-systemd-invoke try-restart emberd.service"), helperEnable},
			upRemove: []step{{"preremove", []string{"upgrade", "1.0.1"}, nil, nil}, {"postremove", []string{"upgrade", "1.0.1"}, nil, nil}},
			remove: []step{
				{"preremove", []string{"remove"}, []string{"deb-systemd-invoke stop emberd.socket emberd.service"}, nil},
				{"postremove", []string{"remove"}, []string{"systemctl daemon-reload"}, nil},
			},
			purge: &step{"postremove", []string{"purge"},
				[]string{"deb-systemd-helper purge emberd.service", "deb-systemd-helper unmask emberd.service", "systemctl daemon-reload"},
				[]string{"deb-systemd-helper purge emberd.service", "deb-systemd-helper unmask emberd.service"}},
		},
		{
			// A dpkg machine without init-system-helpers.
			name:     "deb-no-helpers",
			helpers:  "none",
			install:  step{"postinstall", []string{"configure", ""}, []string{"systemctl daemon-reload", "systemctl enable emberd.service", "systemctl start emberd.service"}, nil},
			upgrade:  step{"postinstall", []string{"configure", "1.0.0"}, []string{"systemctl daemon-reload", "systemctl try-restart emberd.service"}, nil},
			upRemove: []step{{"preremove", []string{"upgrade", "1.0.1"}, nil, nil}, {"postremove", []string{"upgrade", "1.0.1"}, nil, nil}},
			remove: []step{
				{"preremove", []string{"remove"}, []string{"systemctl stop emberd.socket emberd.service"}, nil},
				{"postremove", []string{"remove"}, []string{"systemctl daemon-reload"}, nil},
			},
			purge: &step{"postremove", []string{"purge"}, []string{"systemctl daemon-reload"}, nil},
		},
		{
			// rpm never uses the deb helpers, even where they are.
			name:    "rpm",
			helpers: "fake",
			install: step{"postinstall", []string{"1"},
				[]string{"systemctl --no-reload preset emberd.service", "systemctl daemon-reload", "systemctl --quiet is-enabled emberd.service", "systemctl start emberd.service"},
				[]string{"systemctl --no-reload preset emberd.service"}},
			upgrade:  step{"postinstall", []string{"2"}, []string{"systemctl daemon-reload", "systemctl try-restart emberd.service"}, nil},
			upRemove: []step{{"preremove", []string{"1"}, nil, nil}, {"postremove", []string{"1"}, nil, nil}},
			remove: []step{
				{"preremove", []string{"0"}, []string{"systemctl disable --now emberd.socket emberd.service"}, nil},
				{"postremove", []string{"0"}, []string{"systemctl daemon-reload"}, nil},
			},
		},
	} {
		for _, systemd := range []bool{true, false} {
			name := tc.name + "/no-systemd"
			if systemd {
				name = tc.name + "/systemd"
			}
			t.Run(name, func(t *testing.T) {
				e := newScriptEnv(t, systemd, tc.helpers)
				do := func(s step) {
					t.Helper()
					want := s.calls
					if !systemd {
						want = s.none
					}
					if got := e.script(t, s.script, s.args...); !slices.Equal(got, want) {
						t.Errorf("%s %q: calls %q, want %q", s.script, s.args, got, want)
					}
				}
				data, key := e.path("var/lib/ember"), e.path("var/lib/ember/api.key")

				do(tc.install)
				checkMode(t, data, fs.ModeDir|0o750)
				checkMode(t, key, 0o600)
				first := readFile(t, key)
				if !keyPattern.MatchString(first) {
					t.Errorf("api.key %q is not 64 hex digits and a newline", first)
				}

				// An upgrade keeps everything in the data directory.
				job := filepath.Join(data, "queued-job")
				if err := os.WriteFile(job, []byte("job"), 0o600); err != nil {
					t.Fatal(err)
				}
				do(tc.upgrade)
				for _, s := range tc.upRemove {
					do(s)
				}
				if readFile(t, key) != first || readFile(t, job) != "job" {
					t.Error("the upgrade changed the data directory")
				}

				// A missing key is created again, an existing one kept.
				os.Remove(key)
				do(tc.upgrade)
				if k := readFile(t, key); !keyPattern.MatchString(k) || k == first {
					t.Errorf("new key %q", k)
				}

				if err := os.MkdirAll(e.path("etc/ember"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(e.path("etc/ember/ember.toml"), []byte("max-attempts = 5\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				wants := e.path("etc/systemd/system/multi-user.target.wants")
				if err := os.MkdirAll(wants, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("/lib/systemd/system/emberd.service", filepath.Join(wants, "emberd.service")); err != nil {
					t.Fatal(err)
				}
				for _, s := range tc.remove {
					do(s)
				}
				if readFile(t, job) != "job" || readFile(t, e.path("etc/ember/ember.toml")) != "max-attempts = 5\n" {
					t.Error("removal lost data or configuration")
				}
				if tc.purge == nil {
					return
				}
				do(*tc.purge)
				for _, p := range []string{data, e.path("etc/ember"), filepath.Join(wants, "emberd.service")} {
					if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("after purge %s: %v", p, err)
					}
				}
			})
		}
	}

	// rpm: a preset that disables the unit (Fedora's default for most
	// services) leaves it stopped.
	t.Run("rpm/preset-disabled", func(t *testing.T) {
		e := newScriptEnv(t, true, "fake")
		if err := os.WriteFile(filepath.Join(filepath.Dir(e.log), "disabled"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want := []string{"systemctl --no-reload preset emberd.service", "systemctl daemon-reload", "systemctl --quiet is-enabled emberd.service"}
		if got := e.script(t, "postinstall", "1"); !slices.Equal(got, want) {
			t.Errorf("postinstall 1: calls %q, want %q", got, want)
		}
	})

	// An unknown argument is ignored rather than failing the transaction.
	e := newScriptEnv(t, true, "fake")
	for _, name := range []string{"postinstall", "preremove", "postremove"} {
		if calls := e.script(t, name, "something-new"); len(calls) != 0 {
			t.Errorf("%s something-new: %q", name, calls)
		}
	}
	if calls := e.script(t, "postinstall", "abort-remove"); !slices.Equal(calls, with(helperEnable, "systemctl daemon-reload", "deb-systemd-invoke start emberd.service")) {
		t.Errorf("postinstall abort-remove: %q", calls)
	}
}

// TestPolicyRcD: with a policy-rc.d that exits 101 (an image build, a
// container), the deb's scripts start, restart and stop nothing, through
// this machine's real deb-systemd-invoke and, on a machine without it,
// by asking policy-rc.d themselves; with one that exits 0, they do.
func TestPolicyRcD(t *testing.T) {
	// Which systemctl calls change a unit's state.
	acts := func(calls []string) []string {
		var out []string
		for _, c := range calls {
			for _, verb := range []string{" start ", " stop ", " try-restart ", " restart "} {
				if strings.Contains(c+" ", verb) {
					out = append(out, c)
				}
			}
		}
		return out
	}
	for _, helpers := range []string{"real", "none"} {
		t.Run(helpers, func(t *testing.T) {
			e := newScriptEnv(t, true, helpers)
			steps := []struct {
				args []string
				verb string
			}{
				{[]string{"postinstall", "configure", ""}, "start"},
				{[]string{"postinstall", "configure", "1.0.0"}, "try-restart"},
				{[]string{"preremove", "remove"}, "stop"},
			}
			for _, code := range []int{101, 0} {
				e.policy(t, code)
				for _, s := range steps {
					got := acts(e.script(t, s.args[0], s.args[1:]...))
					if code == 101 && len(got) > 0 {
						t.Errorf("policy-rc.d exits 101, yet %q ran %q", s.args, got)
					}
					if code == 0 && (len(got) != 1 || !strings.Contains(got[0], " "+s.verb+" ")) {
						t.Errorf("policy-rc.d exits 0: %q ran %q, want one systemctl %s", s.args, got, s.verb)
					}
				}
			}
			if helpers != "real" {
				return
			}
			// The real deb-systemd-helper enabled the unit in the scratch
			// root, and a purge takes that back.
			link := e.path("etc/systemd/system/multi-user.target.wants/emberd.service")
			if target, err := os.Readlink(link); err != nil || !strings.HasSuffix(target, "/systemd/system/emberd.service") {
				t.Errorf("enable link %s: %q, %v", link, target, err)
			}
			e.script(t, "postremove", "remove")
			e.script(t, "postremove", "purge")
			if _, err := os.Lstat(link); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after purge, %s: %v", link, err)
			}
			if left, _ := filepath.Glob(e.path("var/lib/systemd/deb-systemd-helper-*/*emberd*")); len(left) > 0 {
				t.Errorf("after purge, deb-systemd-helper state left: %q", left)
			}
		})
	}
}
