// Package packaging_test checks Ember's packages: the systemd units, the
// maintainer scripts, the ember(1) man page against the CLI, and the .deb
// and .rpm that `make package` builds, installing, upgrading, removing and
// purging the .deb on this machine (as root, when nothing of Ember is
// installed here already).
package packaging_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// root is the repository root.
const root = ".."

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// run runs a command and returns its stdout, failing the test with its
// output when it fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = env
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// unitSettings reads the [Service] section of a unit: key -> values.
func unitSettings(t *testing.T, unit string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	section := ""
	for line := range strings.SplitSeq(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q", line)
			}
			m[section+k] = append(m[section+k], v)
		}
	}
	return m
}

// TestUnit checks the unit's settings and has systemd-analyze verify it:
// exit 0 and nothing on stderr (an unknown key is only a warning there).
func TestUnit(t *testing.T) {
	unit := readFile(t, filepath.Join(root, "packaging", "emberd.service"))
	got := unitSettings(t, unit)
	for k, want := range map[string]string{
		"[Unit]Documentation":       "man:emberd(8) https://github.com/emberhq/ember",
		"[Service]Type":             "notify",
		"[Service]NotifyAccess":     "main",
		"[Service]ExecStart":        "/usr/bin/emberd --config /etc/ember/ember.toml $EMBERD_OPTS",
		"[Service]EnvironmentFile":  "-/etc/default/ember",
		"[Service]OOMScoreAdjust":   "-500",
		"[Service]ExecReload":       "/bin/kill -HUP $MAINPID",
		"[Service]WatchdogSec":      "30s",
		"[Service]Restart":          "on-failure",
		"[Service]RestartSec":       "2s",
		"[Service]TimeoutStartSec":  "5min",
		"[Service]Delegate":         "yes",
		"[Service]KillMode":         "process",
		"[Service]OOMPolicy":        "continue",
		"[Service]LimitNOFILE":      "1048576",
		"[Service]TasksMax":         "infinity",
		"[Install]WantedBy":         "multi-user.target",
		"[Service]ProtectSystem":    "",
		"[Service]ProtectHome":      "",
		"[Service]PrivateTmp":       "",
		"[Service]PrivateDevices":   "",
		"[Service]ProtectClock":     "",
		"[Service]NoNewPrivileges":  "",
		"[Service]SystemCallFilter": "",
		"[Service]DeviceAllow":      "",
	} {
		if v := strings.Join(got[k], "\n"); v != want {
			t.Errorf("%s=%q, want %q", k, v, want)
		}
	}

	// TimeoutStopSec must outlast emberd's drain: --stop-grace, whose
	// default the generated ember.toml states.
	m := regexp.MustCompile(`(?m)^# stop-grace = "(.*)"$`).FindStringSubmatch(readFile(t, filepath.Join(root, "packaging", "ember.toml")))
	if m == nil {
		t.Fatal("no stop-grace in ember.toml")
	}
	grace, err1 := time.ParseDuration(m[1])
	stop, err2 := time.ParseDuration(strings.Join(got["[Service]TimeoutStopSec"], ""))
	if err1 != nil || err2 != nil || stop < grace+30*time.Second {
		t.Errorf("TimeoutStopSec %v is not well above stop-grace %v (%v, %v)", stop, grace, err1, err2)
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd; make deps installs it)")
	}
	// ExecStart must name an existing executable: this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rewritten := strings.Replace(unit, "ExecStart=/usr/bin/emberd ", "ExecStart="+self+" ", 1)
	if err := os.WriteFile(filepath.Join(dir, "emberd.service"), []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	// The man page is not installed here; TestPackages verifies the
	// installed unit with its man page.
	verify(t, []string{filepath.Join(dir, "emberd.service")}, "--man=no")
}

// TestSocketUnit checks the opt-in socket unit: the REST and then the gRPC
// address, at emberd's defaults, unnamed (emberd matches them by position),
// and a service that neither needs nor orders itself after it. Then
// systemd-analyze verifies it together with the service it activates.
func TestSocketUnit(t *testing.T) {
	socket := readFile(t, filepath.Join(root, "packaging", "emberd.socket"))
	got := unitSettings(t, socket)
	// emberd's defaults, as the generated ember.toml states them.
	conf := readFile(t, filepath.Join(root, "packaging", "ember.toml"))
	def := func(key string) string {
		m := regexp.MustCompile(`(?m)^# ` + regexp.QuoteMeta(key) + ` = "(.*)"$`).FindStringSubmatch(conf)
		if m == nil {
			t.Fatalf("no %s in ember.toml", key)
		}
		return m[1]
	}
	for k, want := range map[string]string{
		"[Unit]Documentation": "man:emberd(8) https://github.com/emberhq/ember",
		// REST first, gRPC second: emberd's order for unnamed sockets.
		"[Socket]ListenStream": def("listen") + "\n" + def("grpc-listen"),
		// One name would name both sockets: emberd would then match the
		// gRPC socket by name as a second REST socket and leave it unused.
		"[Socket]FileDescriptorName": "",
		"[Socket]Accept":             "",
		"[Socket]Service":            "",
		"[Install]WantedBy":          "sockets.target",
	} {
		if v := strings.Join(got[k], "\n"); v != want {
			t.Errorf("emberd.socket: %s=%q, want %q", k, v, want)
		}
	}
	if len(got["[Unit]Description"]) != 1 {
		t.Errorf("emberd.socket: Description=%q", got["[Unit]Description"])
	}
	// emberd.service must start without the socket (the default): no
	// dependency on it.
	service := readFile(t, filepath.Join(root, "packaging", "emberd.service"))
	for k, vs := range unitSettings(t, service) {
		for _, v := range vs {
			if strings.Contains(v, "emberd.socket") || strings.HasSuffix(k, "]Sockets") {
				t.Errorf("emberd.service: %s=%s: the service must not depend on the opt-in socket", k, v)
			}
		}
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd; make deps installs it)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rewritten := strings.Replace(service, "ExecStart=/usr/bin/emberd ", "ExecStart="+self+" ", 1)
	for name, text := range map[string]string{"emberd.service": rewritten, "emberd.socket": socket} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A socket unit alone fails verification: the service it activates must
	// be there.
	verify(t, []string{filepath.Join(dir, "emberd.socket"), filepath.Join(dir, "emberd.service")}, "--man=no")
}

// verify has systemd-analyze verify units: exit 0 and nothing on stderr.
func verify(t *testing.T, units []string, args ...string) {
	t.Helper()
	cmd := exec.Command("systemd-analyze", append(append([]string{"verify"}, args...), units...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze verify %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(units, " "), err, stdout.String(), stderr.String())
	}
}

// command is one ember command from its --help: its path below ember and
// its own flags (long names, and shorthands as "-x").
type command struct {
	path  string
	flags []string
	leaf  bool
}

var flagLine = regexp.MustCompile(`^\s+(?:-([a-zA-Z]), )?--([a-z0-9-]+)`)

// commands walks ember's command tree through --help.
func commands(t *testing.T, ember string, path []string) []command {
	t.Helper()
	out := run(t, nil, ember, append(slices.Clone(path), "--help")...)
	c := command{path: strings.Join(path, " "), leaf: true}
	var subs []string
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && !strings.HasPrefix(line, " ") {
			section = line
			continue
		}
		switch section {
		case "Available Commands:":
			if f := strings.Fields(line); len(f) > 0 && f[0] != "help" {
				subs = append(subs, f[0])
			}
		case "Flags:":
			if m := flagLine.FindStringSubmatch(line); m != nil && m[2] != "help" {
				if m[1] != "" {
					c.flags = append(c.flags, "-"+m[1])
				}
				c.flags = append(c.flags, m[2])
			}
		}
	}
	all := []command{c}
	for _, s := range subs {
		all[0].leaf = false
		all = append(all, commands(t, ember, append(slices.Clone(path), s))...)
	}
	return all
}

// manSections splits a man page into its .SH and .SS sections. A command's
// .SS title starts with "ember" and the command's words.
func manSections(page string) map[string]string {
	m := map[string]string{}
	key := ""
	word := regexp.MustCompile(`^[a-z]+(\\-[a-z]+)*$`) // "rotate\-admin" too
	for line := range strings.SplitSeq(page, "\n") {
		switch {
		case strings.HasPrefix(line, ".SH "):
			key = "SH " + strings.Trim(strings.TrimPrefix(line, ".SH "), `"`)
		case strings.HasPrefix(line, ".SS "):
			var words []string
			for _, w := range strings.Fields(strings.Trim(strings.TrimPrefix(line, ".SS "), `"`))[1:] {
				if !word.MatchString(w) {
					break
				}
				words = append(words, strings.ReplaceAll(w, `\-`, "-"))
			}
			key = strings.Join(words, " ")
		}
		m[key] += line + "\n"
	}
	return m
}

// roff writes a flag as a man page does: hyphens escaped.
func roff(flag string) string {
	if strings.HasPrefix(flag, "-") {
		return `\` + flag // shorthand: \-e
	}
	return `\-\-` + strings.ReplaceAll(flag, "-", `\-`)
}

// TestEmberManPage checks packaging/ember.1 against a built ember: a
// section per command documenting each of its flags, the global flags
// under OPTIONS, and no flag in a section's entries that its command lacks.
func TestEmberManPage(t *testing.T) {
	ember := filepath.Join(t.TempDir(), "ember")
	run(t, nil, "go", "build", "-o", ember, "../daemon/cmd/ember")
	cmds := commands(t, ember, nil)
	sections := manSections(readFile(t, filepath.Join(root, "packaging", "ember.1")))
	entry := regexp.MustCompile(`\\-\\-((?:[a-z0-9]|\\-)+)`)
	global := cmds[0].flags
	for _, c := range cmds {
		key := c.path
		switch {
		case c.path == "":
			key = "SH OPTIONS"
		case strings.HasPrefix(c.path, "completion "):
			key = "completion"
		case !c.leaf && len(c.flags) == 0:
			continue // a group: its commands have the sections
		}
		text, ok := sections[key]
		if !ok {
			t.Errorf("ember.1 has no section for %q (.SS \"ember %s ...\")", c.path, c.path)
			continue
		}
		for _, f := range c.flags {
			// Whole flags only: \-\-flashboot is not \-\-flashboot\-window,
			// \-q is not the start of \-\-quiet.
			re := regexp.MustCompile(`(^|[^-])` + regexp.QuoteMeta(roff(f)) + `($|[^a-z0-9\\]|\\[^-])`)
			if !re.MatchString(text) {
				t.Errorf("ember.1, %q: %s is not documented", key, roff(f))
			}
		}
		// Flags named on the entries' control lines must exist.
		for line := range strings.SplitSeq(text, "\n") {
			if !strings.HasPrefix(line, ".B") {
				continue
			}
			for _, m := range entry.FindAllStringSubmatch(line, -1) {
				f := strings.ReplaceAll(m[1], `\-`, "-")
				if !slices.Contains(c.flags, f) && !slices.Contains(global, f) && f != "help" {
					t.Errorf("ember.1, %q documents --%s, which ember %s does not have", key, f, c.path)
				}
			}
		}
	}
}

// builtPackages is the folder packages builds into once per test binary,
// removed by TestMain.
var builtPackages struct {
	once sync.Once
	dir  string
	err  error
}

// packages builds the .deb and .rpm of versions 1.0.0 and 1.0.1 with
// `make package` (the same binaries under two versions, for an upgrade),
// once for all the tests that install them, and returns their folder.
func packages(t *testing.T) string {
	t.Helper()
	builtPackages.once.Do(func() {
		dir, err := os.MkdirTemp("", "ember-packages-")
		if err != nil {
			builtPackages.err = err
			return
		}
		builtPackages.dir = dir
		// A nested make must not inherit the jobserver of a make running go test.
		var env []string
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
				env = append(env, kv)
			}
		}
		for _, v := range []string{"1.0.0", "1.0.1"} {
			cmd := exec.Command("make", "-C", root, "-s", "package", "PKG_DIR="+dir, "PKG_VERSION="+v)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				builtPackages.err = fmt.Errorf("make package PKG_VERSION=%s: %w\n%s", v, err, out)
				return
			}
		}
	})
	if builtPackages.err != nil {
		t.Fatal(builtPackages.err)
	}
	return builtPackages.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtPackages.dir != "" {
		os.RemoveAll(builtPackages.dir)
	}
	os.Exit(code)
}

// TestPackages builds the .deb and .rpm with `make package`, checks the
// .rpm with rpm queries and takes the .deb through install, upgrade, remove
// and purge on this machine.
func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the packages: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: make package installs build dependencies, and the .deb is installed here")
	}
	for _, tool := range []string{"dpkg", "dpkg-query", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: not a Debian machine", tool)
		}
	}

	dist := packages(t)
	deb := func(v string) string { return filepath.Join(dist, "ember_"+v+"_amd64.deb") }
	rpm := filepath.Join(dist, "ember-1.0.0.x86_64.rpm")
	for _, p := range []string{deb("1.0.0"), deb("1.0.1"), rpm} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("rpm", func(t *testing.T) { checkRPM(t, rpm) })
	t.Run("deb", func(t *testing.T) { checkDeb(t, deb("1.0.0"), deb("1.0.1")) })
}

func checkRPM(t *testing.T, rpm string) {
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Skip("rpm is not installed (Debian package rpm; make deps installs it)")
	}
	q := func(args ...string) string {
		return run(t, nil, "rpm", append([]string{"--dbpath", t.TempDir(), "-qp"}, append(args, rpm)...)...)
	}
	files := strings.Fields(q("-l"))
	want := []string{
		"/etc/default/ember",
		"/etc/ember",
		"/etc/ember/ember.toml",
		"/usr/bin/ember",
		"/usr/bin/emberd",
		"/usr/lib/ember/ember-ckpt",
		"/usr/lib/ember/ember-init",
		"/usr/lib/systemd/system/emberd.service",
		"/usr/lib/systemd/system/emberd.socket",
		"/usr/share/bash-completion/completions/ember",
		"/usr/share/fish/vendor_completions.d/ember.fish",
		"/usr/share/man/man1/ember.1.gz",
		"/usr/share/man/man8/emberd.8.gz",
		"/usr/share/zsh/site-functions/_ember",
		"/var/lib/ember",
	}
	if !slices.Equal(files, want) {
		t.Errorf("rpm -qpl:\n got %q\nwant %q", files, want)
	}
	if got := strings.Fields(q("--configfiles")); !slices.Equal(got, []string{"/etc/default/ember", "/etc/ember/ember.toml"}) {
		t.Errorf("rpm -qp --configfiles: %q", got)
	}
	// %config(noreplace): flag bit 16 (RPMFILE_NOREPLACE) on top of config (1).
	if got := q("--qf", `[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]`); !strings.Contains(got, "/etc/ember/ember.toml cn -rw-r--r--") || !strings.Contains(got, "/etc/default/ember cn -rw-r--r--") ||
		!strings.Contains(got, "/var/lib/ember  drwxr-x---") || !strings.Contains(got, "/usr/bin/emberd  -rwxr-xr-x") ||
		!strings.Contains(got, "/usr/lib/systemd/system/emberd.socket  -rw-r--r--") {
		t.Errorf("rpm file flags and modes:\n%s", got)
	}
	scripts := q("--scripts")
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "invoke try-restart", "systemctl --no-reload preset emberd.service", "deb-systemd-invoke", "systemctl disable --now emberd.socket emberd.service", "rm -rf \"$root/var/lib/ember\""} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm -qp --scripts lacks %q", s)
		}
	}
	if got := q("-R"); !regexp.MustCompile(`(?m)^libseccomp\s*$`).MatchString(got) || !regexp.MustCompile(`(?m)^util-linux\s*$`).MatchString(got) {
		t.Errorf("rpm -qpR: %q, want libseccomp and util-linux (kill, for ExecReload)", got)
	}
	run(t, nil, "rpm", "--dbpath", t.TempDir(), "-K", rpm)
}

// dpkgStatus is the package's dpkg status, "" when dpkg knows nothing of it.
func dpkgStatus() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "ember").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// dpkg runs dpkg with no terminal: a conffile question would fail it.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("dpkg", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// emberdRunning reports whether any process runs /usr/bin/emberd.
func emberdRunning() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, "/usr/bin/emberd") {
			return true
		}
	}
	return false
}

// enableLink is what enabling emberd.service makes.
const enableLink = "/etc/systemd/system/multi-user.target.wants/emberd.service"

func checkDeb(t *testing.T, v1, v2 string) {
	// Never touch an installation that is not this test's: an installed
	// package, data or configuration would be replaced or purged below.
	if s := dpkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
		t.Skipf("package ember is on this machine (%s): not installing over it", s)
	}
	for _, p := range []string{"/usr/bin/emberd", "/usr/bin/ember", "/var/lib/ember", "/etc/ember", "/etc/default/ember", enableLink} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists: not installing the package over it (and purging it afterwards)", p)
		}
	}
	// One packaging test at a time on this machine.
	lockDir := "/run/lock"
	if _, err := os.Stat(lockDir); err != nil {
		lockDir = os.TempDir()
	}
	lock, err := os.OpenFile(filepath.Join(lockDir, "ember-packaging-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Skip("another packaging test is installing the package on this machine")
	}
	t.Cleanup(func() {
		if s := dpkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
			if out, err := exec.Command("dpkg", "-P", "ember").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P ember: %v\n%s", err, out)
			}
		}
		// Created by this test only (checked above).
		os.RemoveAll("/var/lib/ember")
		os.RemoveAll("/etc/ember")
		os.Remove("/etc/default/ember")
		os.Remove(enableLink)
	})
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Log("systemd runs this machine: the package will start emberd.service")
	}

	dpkg(t, "-i", v1)
	if s := dpkgStatus(); s != "install ok installed" {
		t.Fatalf("status after dpkg -i: %q", s)
	}
	for p, mode := range map[string]fs.FileMode{
		"/usr/bin/emberd":                                 0o755,
		"/usr/bin/ember":                                  0o755,
		"/usr/lib/ember/ember-init":                       0o755,
		"/usr/lib/ember/ember-ckpt":                       0o755,
		"/var/lib/ember":                                  fs.ModeDir | 0o750,
		"/var/lib/ember/api.key":                          0o600,
		"/etc/ember":                                      fs.ModeDir | 0o755,
		"/etc/ember/ember.toml":                           0o644,
		"/etc/default/ember":                              0o644,
		"/lib/systemd/system/emberd.service":              0o644,
		"/lib/systemd/system/emberd.socket":               0o644,
		"/usr/share/bash-completion/completions/ember":    0o644,
		"/usr/share/zsh/vendor-completions/_ember":        0o644,
		"/usr/share/fish/vendor_completions.d/ember.fish": 0o644,
		"/usr/share/man/man8/emberd.8.gz":                 0o644,
		"/usr/share/man/man1/ember.1.gz":                  0o644,
	} {
		checkMode(t, p, mode)
	}
	key := readFile(t, "/var/lib/ember/api.key")
	if !keyPattern.MatchString(key) {
		t.Errorf("api.key %q", key)
	}
	if got := readFile(t, "/etc/ember/ember.toml"); got != readFile(t, filepath.Join(root, "packaging", "ember.toml")) {
		t.Error("/etc/ember/ember.toml is not packaging/ember.toml")
	}
	conffiles := run(t, nil, "dpkg-query", "-W", "-f=${Conffiles}", "ember")
	if !regexp.MustCompile(`(?m)^ /etc/ember/ember.toml [0-9a-f]{32}$`).MatchString(conffiles) ||
		!regexp.MustCompile(`(?m)^ /etc/default/ember [0-9a-f]{32}$`).MatchString(conffiles) {
		t.Errorf("conffiles: %q", conffiles)
	}
	if out := run(t, nil, "/usr/bin/emberd", "--version"); !strings.HasPrefix(out, "emberd ") {
		t.Errorf("emberd --version: %q", out)
	}
	// The packaged config, as the unit passes it, is valid.
	run(t, nil, "/usr/bin/emberd", "--config", "/etc/ember/ember.toml", "--version")
	run(t, nil, "/usr/bin/ember", "--help")
	if _, err := os.Stat("/run/systemd/system"); err != nil && emberdRunning() {
		t.Error("the package started emberd on a machine that systemd does not run")
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		man := "--man=no"
		if _, err := exec.LookPath("man"); err == nil {
			man = "--man=yes" // the installed man page must be found
		}
		verify(t, []string{"/lib/systemd/system/emberd.service"}, man)
		verify(t, []string{"/lib/systemd/system/emberd.socket", "/lib/systemd/system/emberd.service"}, man)
	}
	// Enabled as Debian enables services, also where systemd does not run
	// (an image being built): by deb-systemd-helper, where it is.
	if _, err := exec.LookPath("deb-systemd-helper"); err == nil {
		if target, err := os.Readlink(enableLink); err != nil || target != "/lib/systemd/system/emberd.service" {
			t.Errorf("enable link %s: %q, %v", enableLink, target, err)
		}
	}
	// The socket unit is opt-in: installed, never enabled (nor started).
	if _, err := os.Lstat("/etc/systemd/system/sockets.target.wants/emberd.socket"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the package enabled emberd.socket: %v", err)
	}
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if exec.Command("systemctl", "is-active", "--quiet", "emberd.socket").Run() == nil {
			t.Error("the package started emberd.socket")
		}
	}

	// Upgrade: an edited conffile and the data directory stay as they are.
	edited := readFile(t, "/etc/ember/ember.toml") + "\n# edited\nmax-attempts = 5\n"
	if err := os.WriteFile("/etc/ember/ember.toml", []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/var/lib/ember/queued-job", []byte("job"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg(t, "-i", v2)
	if v := run(t, nil, "dpkg-query", "-W", "-f=${Version}", "ember"); v != "1.0.1" {
		t.Errorf("version after upgrade: %q", v)
	}
	if readFile(t, "/etc/ember/ember.toml") != edited {
		t.Error("the upgrade replaced the edited /etc/ember/ember.toml")
	}
	if readFile(t, "/var/lib/ember/api.key") != key || readFile(t, "/var/lib/ember/queued-job") != "job" {
		t.Error("the upgrade changed /var/lib/ember")
	}
	run(t, nil, "/usr/bin/emberd", "--config", "/etc/ember/ember.toml", "--version")

	// Remove: the programs go, data and configuration stay.
	dpkg(t, "-r", "ember")
	if s := dpkgStatus(); s != "deinstall ok config-files" {
		t.Errorf("status after dpkg -r: %q", s)
	}
	for _, p := range []string{"/usr/bin/emberd", "/usr/bin/ember", "/usr/lib/ember/ember-init", "/usr/lib/ember/ember-ckpt", "/lib/systemd/system/emberd.service", "/lib/systemd/system/emberd.socket", "/usr/share/man/man8/emberd.8.gz"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after dpkg -r, %s: %v", p, err)
		}
	}
	if readFile(t, "/var/lib/ember/api.key") != key || readFile(t, "/var/lib/ember/queued-job") != "job" || readFile(t, "/etc/ember/ember.toml") != edited {
		t.Error("dpkg -r lost data or configuration")
	}
	if _, err := os.Stat("/etc/default/ember"); err != nil {
		t.Errorf("after dpkg -r, /etc/default/ember (a conffile): %v", err)
	}

	// Purge: data and configuration go too.
	dpkg(t, "-P", "ember")
	if s := dpkgStatus(); s != "" && !strings.HasSuffix(s, "not-installed") {
		t.Errorf("status after dpkg -P: %q", s)
	}
	for _, p := range []string{"/var/lib/ember", "/etc/ember", "/etc/default/ember", enableLink} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after dpkg -P, %s: %v", p, err)
		}
	}
	if left, _ := filepath.Glob("/var/lib/systemd/deb-systemd-helper-*/*emberd*"); len(left) > 0 {
		t.Errorf("after dpkg -P, deb-systemd-helper state left: %q", left)
	}
}
