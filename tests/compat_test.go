package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunpodSDKCompat drives the real npm runpod-sdk (tests/compat, pinned to
// 1.1.2) against a real emberd whose endpoint runs the example worker. The
// script's cases and what they check are described in compat/README.md.
func TestRunpodSDKCompat(t *testing.T) {
	node := compatNode(t)
	d := StartDaemon(t)
	runCompatScript(t, node, d)
}

// compatNode returns node's path once tests/compat/node_modules holds the
// SDK (installing it with npm ci if needed), or skips t.
func compatNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the runpod-sdk compatibility test needs Node.js 18 or later (`make deps` installs it)")
	}
	dir, err := filepath.Abs("compat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "runpod-sdk")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Skip("tests/compat/node_modules is missing and npm is not installed to create it")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}

	return node
}

// runCompatScript runs compat/runpod_sdk.mjs against d (d.URL's scheme:
// http or https) with extra environment, failing t on any failed case.
func runCompatScript(t *testing.T, node string, d *Daemon, env ...string) {
	t.Helper()
	ep := d.CreateEndpoint("compat", map[string]any{"workersMax": 3})

	const scriptLimit = 120 // seconds, the script's own overall limit
	ctx, cancel := context.WithTimeout(context.Background(), (scriptLimit+30)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("compat", "runpod_sdk.mjs"))
	cmd.Env = append(os.Environ(),
		"EMBER_BASE_URL="+d.URL+"/v2",
		"EMBER_API_KEY="+d.Key,
		"EMBER_ENDPOINT_ID="+ep,
		"EMBER_COMPAT_TIMEOUT_S="+strconv.Itoa(scriptLimit),
	)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	t.Logf("runpod_sdk.mjs output:\n%s", stdout.String())
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			t.Errorf("runpod-sdk compatibility cases failed:\n%s", compatNotOK(stdout.String()))
		} else {
			t.Errorf("node runpod_sdk.mjs: %v", err)
		}
		t.Logf("script stderr:\n%s", compatTail(stderr.String(), 8000))
		t.Logf("emberd log:\n%s", d.Log())
		return
	}
	// Exit 0 must mean every case ran and passed.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasSuffix(last, " passed, 0 failed") || strings.HasPrefix(last, "0 passed") {
		t.Errorf("script exited 0 but its summary is %q", last)
	}
}

func compatNotOK(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "not ok") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func compatTail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
