package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWebConsole drives the web console (daemon/console) in Debian's
// headless Chromium with playwright-core (tests/console/e2e.mjs) against
// a real emberd with the runc runtime: it logs in, deploys an endpoint
// from the built-in basic template, sends requests from the form (one of
// them streamed), watches a worker appear, go idle and leave, sees a
// chart drawn from the history, uploads an image with a progress bar,
// manages keys, and checks that a read-only key cannot change anything
// and that a missing or ended session is sent back to the login page.
// Screenshots of every page are left in SCREENSHOT_DIR (default
// tests/console/artifacts/).
//
// Without /usr/bin/chromium or tests/console/node_modules the test skips,
// saying that `make deps` installs them; with EMBER_REQUIRE_BROWSER=1
// (make test) it fails instead.
func TestWebConsole(t *testing.T) {
	browser := os.Getenv("CHROMIUM")
	if browser == "" {
		browser = "/usr/bin/chromium"
	}
	missing := func(what string) {
		msg := what + ": the web console test needs Debian's chromium and tests/console's npm packages (`make deps` installs them)"
		if os.Getenv("EMBER_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + "; EMBER_REQUIRE_BROWSER=1 makes that a failure")
		}
		t.Skip(msg)
	}
	if _, err := os.Stat(browser); err != nil {
		missing(browser + " is missing")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	dir, err := filepath.Abs("console")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		missing("tests/console/node_modules/playwright-core is missing")
	}
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}

	// The basic template runs ember/example-worker:latest (mkimage's
	// default name); the docker-save archive is the one uploaded through
	// the Images page.
	dockerTar, ociDir := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")
	d.JSON("POST", "/v1/images:import", map[string]any{"path": ociDir, "name": "ember/example-worker:latest"}, 200)
	read := d.JSON("POST", "/v1/keys", map[string]any{"name": "console-read", "scope": "read"}, 200)

	shots := os.Getenv("SCREENSHOT_DIR")
	if shots == "" {
		shots = filepath.Join(dir, "artifacts")
	}
	if shots, err = filepath.Abs(shots); err != nil {
		t.Fatal(err)
	}
	// Last run's screenshots would pass for this one's.
	if old, _ := filepath.Glob(filepath.Join(shots, "*.png")); len(old) > 0 {
		for _, f := range old {
			os.Remove(f)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"URL="+d.URL,
		"ADMIN_KEY="+d.Key,
		"READ_KEY="+read["key"].(string),
		"IMAGE_ARCHIVE="+dockerTar,
		"SCREENSHOT_DIR="+shots,
		"CHROMIUM="+browser,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	t.Logf("screenshots: %s", shots)
	if err != nil {
		log := d.Log()
		if len(log) > 20000 {
			log = "...\n" + log[len(log)-20000:]
		}
		t.Fatalf("node e2e.mjs: %v\n%s\nemberd log:\n%s", err, out.String(), log)
	}
	if !strings.Contains(out.String(), "e2e: PASS") {
		t.Fatalf("e2e.mjs exited 0 without passing:\n%s", out.String())
	}
	t.Logf("e2e.mjs:\n%s", out.String())
}
