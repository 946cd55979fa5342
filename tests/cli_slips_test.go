package tests

// The ember CLI's first-hour slips against a real emberd: job run shows the
// job's id and state on stderr, a refused key names the key file actually
// read (the daemon's own data dir, not /var/lib/ember), and with emberd
// stopped and no key file, ember says emberd is not running.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIFirstHourSlips(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("slips", nil)
	keyFile := filepath.Join(d.DataDir, "api.key")
	addr := "--addr=http://" + d.Addr

	// job run: stderr names the job and its state from the start (not a
	// terminal: a plain line per change); the output on stdout.
	out, errOut, code := runEmber(t, nil, addr, "--api-key-file", keyFile, "job", "run", ep, `{"sleep_ms":2500}`)
	if code != 0 || !strings.Contains(out, `"sleep_ms": 2500`) {
		t.Fatalf("job run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	first, _, _ := strings.Cut(errOut, "\n")
	if !strings.HasPrefix(first, "job ") || !strings.Contains(first, ": IN_QUEUE, waiting ") {
		t.Errorf("job run: first stderr line %q, want the job's id and IN_QUEUE", first)
	}
	if !strings.Contains(errOut, ": IN_PROGRESS on worker w-") {
		t.Errorf("job run of a 2.5 s job: stderr %q lacks its IN_PROGRESS line", errOut)
	}

	// A refused key names the file it came from: here the daemon's own
	// data dir, not /var/lib/ember/api.key.
	wrong := filepath.Join(d.DataDir, "wrong.key")
	if err := os.WriteFile(wrong, []byte("ember_not-a-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runEmber(t, nil, addr, "--api-key-file", wrong, "endpoint", "list")
	if code != 1 || !strings.Contains(errOut, "the daemon refused the API key in "+wrong+":") || strings.Contains(errOut, "/var/lib/ember") {
		t.Errorf("wrong key file: exit %d, stderr %q; want it named, and no /var/lib/ember", code, errOut)
	}
	if strings.Contains(errOut, "ember_not-a-key") {
		t.Errorf("the refused key itself is in the message: %q", errOut)
	}
	_, errOut, _ = runEmber(t, []string{"EMBER_API_KEY=ember_not-a-key"}, addr, "endpoint", "list")
	if !strings.Contains(errOut, "the daemon refused the API key in EMBER_API_KEY:") {
		t.Errorf("wrong EMBER_API_KEY: stderr %q", errOut)
	}

	// Daemon up, no key file: the key error stands.
	missing := filepath.Join(t.TempDir(), "api.key")
	_, errOut, code = runEmber(t, nil, addr, "--api-key-file", missing, "status")
	if code != 1 || !strings.Contains(errOut, "cannot read API key file "+missing) {
		t.Errorf("status, daemon up, no key file: exit %d, stderr %q", code, errOut)
	}
	// Daemon stopped, no key file: it is not running.
	d.Stop()
	_, errOut, code = runEmber(t, nil, addr, "--api-key-file", missing, "status")
	if want := "ember: emberd is not running at http://" + d.Addr + " (connection refused)"; code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("status, daemon stopped, no key file: exit %d, stderr %q; want %q", code, errOut, want)
	}
}
