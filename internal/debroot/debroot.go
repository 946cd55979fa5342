// Package debroot builds minimal Debian root file systems for Ember's
// tests and caches them between runs on one machine: debootstrap
// --variant=minbase with the packages a test asks for, from the Debian
// mirror this machine's apt sources name. The packaging test boots one
// under systemd-nspawn; the Python worker test packs one into a worker
// image. It is test support, not part of Ember.
//
// Each cached tree belongs to a purpose ("systemd", "python"): a build
// replaces only the older builds of its own purpose, so the trees of
// different tests stay cached side by side.
package debroot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// CacheDir holds the cached trees (rootfs-SUITE-PURPOSE-HASH) and the lock
// file that lets one build run at a time across test processes.
const CacheDir = "/var/cache/ember-test"

// Suite is the Debian release built: the one Ember's packages are built on
// here (the packaging test's emberd links against its glibc and
// libseccomp).
const Suite = "bookworm"

// ErrUnavailable is wrapped when this machine cannot build a tree (not
// root, no debootstrap, the mirror out of reach): tests skip on it rather
// than fail.
var ErrUnavailable = errors.New("cannot build a Debian rootfs on this machine")

// Spec says what to build.
type Spec struct {
	// Purpose names the tree in the cache: lowercase letters and digits.
	// A new build of a purpose removes the older ones of that purpose.
	Purpose string
	// Packages are installed on top of minbase (debootstrap --include);
	// order and duplicates do not matter.
	Packages []string
}

// Rootfs is a built or cached tree. Callers copy or pack it and leave the
// tree itself as debootstrap left it.
type Rootfs struct {
	Dir    string
	Cached bool // found in the cache, not built by this call
	// BuildTime is how long debootstrap ran (zero when cached).
	BuildTime time.Duration
	Mirror    string
	Packages  []string // sorted, without duplicates
}

var purposeRE = regexp.MustCompile(`^[a-z0-9]+$`)

// hashLen is the length of the hex hash in a cached tree's name.
const hashLen = 12

// Get returns the cached tree for spec, building it with debootstrap when
// this machine has none yet for this purpose, package list and mirror.
// One build runs at a time (a lock file, waited for within ctx); a build
// is made under a temporary name and renamed, so a failed or killed one
// leaves nothing that looks cached. A tree cached under the name used
// before purposes (rootfs-SUITE-HASH, same contents) is renamed and used.
func Get(ctx context.Context, spec Spec) (Rootfs, error) {
	return get(ctx, CacheDir, spec)
}

// get is Get with the cache in cacheDir.
func get(ctx context.Context, cacheDir string, spec Spec) (Rootfs, error) {
	if !purposeRE.MatchString(spec.Purpose) {
		return Rootfs{}, fmt.Errorf("debroot: purpose %q: want lowercase letters and digits", spec.Purpose)
	}
	pkgs := slices.Clone(spec.Packages)
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	mirror := Mirror()
	hash := treeHash(pkgs, mirror)
	prefix := "rootfs-" + Suite + "-"
	fs := Rootfs{Dir: filepath.Join(cacheDir, prefix+spec.Purpose+"-"+hash), Mirror: mirror, Packages: pkgs}

	if os.Geteuid() != 0 {
		return fs, fmt.Errorf("%w: debootstrap and the cache in %s need root", ErrUnavailable, cacheDir)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fs, fmt.Errorf("debroot: create the cache: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(cacheDir, "rootfs.lock"))
	if err != nil {
		return fs, err
	}
	defer unlock()

	if legacy := filepath.Join(cacheDir, prefix+hash); exists(legacy) && !exists(fs.Dir) {
		if err := os.Rename(legacy, fs.Dir); err != nil {
			return fs, fmt.Errorf("debroot: take over %s: %w", legacy, err)
		}
	}
	if exists(filepath.Join(fs.Dir, "var/lib/dpkg/status")) {
		fs.Cached = true
		return fs, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fs, fmt.Errorf("%w: debootstrap is not installed (Debian package debootstrap; make deps installs it)", ErrUnavailable)
	}
	if err := reachable(ctx, mirror); err != nil {
		return fs, fmt.Errorf("%w: the Debian mirror %s is out of reach: %w", ErrUnavailable, mirror, err)
	}

	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return fs, fmt.Errorf("debroot: %w", err)
	}
	defer os.RemoveAll(tmp)
	// The tree's /: MkdirTemp made it 0700, which would lock every user
	// but root out of everything (dbus-daemon, as messagebus, then never
	// comes up).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fs, fmt.Errorf("debroot: %w", err)
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	args := []string{"--variant=minbase", "--include=" + strings.Join(pkgs, ","), Suite, tmp, mirror}
	cmd := exec.CommandContext(bctx, "debootstrap", args...)
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		// debootstrap keeps its own log in the target.
		dlog, _ := os.ReadFile(filepath.Join(tmp, "debootstrap/debootstrap.log"))
		return fs, fmt.Errorf("debroot: debootstrap %s: %w\n%s\ndebootstrap.log (end):\n%s",
			strings.Join(args, " "), err, tail(out, 4000), tail(dlog, 4000))
	}
	fs.BuildTime = time.Since(start)
	if err := os.Rename(tmp, fs.Dir); err != nil {
		return fs, fmt.Errorf("debroot: %w", err)
	}
	prune(cacheDir, spec.Purpose, fs.Dir)
	return fs, nil
}

// prune removes the builds of purpose in cacheDir other than keep: they
// are for another package list or mirror and not used again. Other
// purposes' trees stay.
func prune(cacheDir, purpose, keep string) {
	prefix := "rootfs-" + Suite + "-" + purpose + "-"
	old, _ := filepath.Glob(filepath.Join(cacheDir, prefix+"*"))
	for _, o := range old {
		if o != keep && isHash(strings.TrimPrefix(filepath.Base(o), prefix)) {
			os.RemoveAll(o)
		}
	}
}

// treeHash names a tree's contents: suite, variant, packages (sorted) and
// mirror. It leaves the purpose out, as the names before purposes did
// (rootfs-SUITE-HASH), so that such a tree is taken over, not rebuilt.
func treeHash(pkgs []string, mirror string) string {
	sum := sha256.Sum256([]byte(Suite + " minbase " + strings.Join(pkgs, ",") + " " + mirror))
	return hex.EncodeToString(sum[:])[:hashLen]
}

// Mirror is the first Debian archive in this machine's apt sources (deb822
// or one-line format) that serves Suite, else deb.debian.org.
func Mirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for stanza := range strings.SplitSeq(string(b), "\n\n") {
			var uris, suites []string
			for line := range strings.SplitSeq(stanza, "\n") {
				if v, ok := strings.CutPrefix(line, "URIs:"); ok {
					uris = strings.Fields(v)
				}
				if v, ok := strings.CutPrefix(line, "Suites:"); ok {
					suites = strings.Fields(v)
				}
			}
			if len(uris) > 0 && slices.Contains(suites, Suite) {
				return uris[0]
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "deb" && f[2] == Suite && strings.HasPrefix(f[1], "http") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// lock takes an exclusive flock on path, polling until ctx ends (a build
// by another test process can take a minute).
func lock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("debroot: open the lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("debroot: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("debroot: waiting for another build's lock on %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reachable asks the mirror for the suite's Release file: debootstrap's
// first download, so a machine without the network fails here, quickly.
func reachable(ctx context.Context, mirror string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, strings.TrimSuffix(mirror, "/")+"/dists/"+Suite+"/Release", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HEAD %s: %s", req.URL, resp.Status)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func isHash(s string) bool {
	if len(s) != hashLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
