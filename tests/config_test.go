package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigFileErrors: a bad config file stops emberd at start, naming
// the file, the line and the reason.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ember.toml")
	os.WriteFile(conf, []byte("# comment\nlisten = \"127.0.0.1:0\"\ntake-hold = \"2x\"\nlistn = \"x\"\n"), 0o644)
	out, err := exec.Command(emberdBin, "--config", conf, "--data-dir", dir).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("emberd with a bad config: %v, want exit 2\n%s", err, out)
	}
	for _, want := range []string{conf + `:3: key "take-hold": invalid value "2x"`, conf + `:4: unknown key "listn" (did you mean "listen"?)`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestSIGHUPReload: SIGHUP re-reads the config file: the log level and the
// scheduler's settings change at once (max-attempts 1 makes a crashing job
// fail on its first attempt), a changed listener is reported as needing a
// restart, and a broken file is refused while the daemon runs on.
func TestSIGHUPReload(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "ember.toml")
	os.WriteFile(conf, []byte("log-level = \"info\"\nmax-attempts = 3\n"), 0o644)
	d := StartDaemon(t, "--config", conf, "--log-level", "info")
	// The command line wins over the file: --log-level stays info even
	// when the file says debug; max-attempts comes from the file.
	os.WriteFile(conf, []byte("log-level = \"debug\"\nmax-attempts = 1\npreload-dir = \"/nonexistent\"\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "reload logged", func() bool { return strings.Contains(d.Log(), "reloaded: scheduler settings applied") })
	log := d.Log()
	if !strings.Contains(log, "takes effect only at the next restart") || !strings.Contains(log, "setting=preload-dir") {
		t.Errorf("the preload-dir change was not reported as needing a restart:\n%s", log)
	}
	if strings.Contains(log, "reloaded: log level") {
		t.Errorf("the log level changed although --log-level was given on the command line")
	}
	ep := d.CreateEndpoint("crashy", map[string]any{"workersMax": 1})
	id := d.Submit(ep, map[string]any{"input": map[string]any{"exit": 3}})
	final := d.WaitStatus(ep, id, 30*time.Second, "FAILED")
	if !strings.HasSuffix(final["error"].(string), "after 1 attempt") {
		t.Errorf("max-attempts 1 from the reloaded file: job failed with %q", final["error"])
	}

	os.WriteFile(conf, []byte("max-attempts = \"many\"\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "refusal logged", func() bool { return strings.Contains(d.Log(), "reload refused") })
	if !strings.Contains(d.Log(), conf+":1:") {
		t.Errorf("the refusal does not name the file and line:\n%s", d.Log())
	}
	if code, _ := d.Do("GET", "/v2/"+ep+"/health", nil); code != 200 {
		t.Fatalf("daemon not serving after a refused reload: %d", code)
	}
}
