package tests

// The ember CLI against a real emberd with --tls auto: it verifies the
// server with the CA file emberd wrote, or with a pinned fingerprint from
// another machine, refuses a wrong CA or pin with a message that says what
// to do, and ember status says which certificate the connection reached.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runEmber runs the ember CLI with only the variables given (never the
// test machine's EMBER_*), and returns its output and exit code.
func runEmber(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(emberBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("ember %s: still running after 60 s", strings.Join(args, " "))
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// pemFingerprint is the SHA-256 of the first certificate in a PEM file.
func pemFingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:])
}

func TestCLIOverTLS(t *testing.T) {
	t.Parallel()
	d := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls", "auto")
	caFile := filepath.Join(d.DataDir, "tls", "ca.pem")
	caFP := pemFingerprint(t, caFile)
	// Another emberd's CA: a certificate the server's does not chain to.
	other := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls", "auto")
	otherCA := filepath.Join(other.DataDir, "tls", "ca.pem")
	otherFP := pemFingerprint(t, otherCA)
	env := []string{"EMBER_API_KEY=" + d.Key}

	t.Run("ca file", func(t *testing.T) {
		out, errOut, code := runEmber(t, env, "status", "--addr", d.Addr, "--ca-file", caFile)
		if code != 0 {
			t.Fatalf("ember status --ca-file: exit %d\n%s%s", code, out, errOut)
		}
		for _, want := range []string{"https://" + d.Addr, "Connection:", "TLS 1.", caFP, "auto"} {
			if !strings.Contains(out, want) {
				t.Errorf("ember status does not say %q:\n%s", want, out)
			}
		}
	})
	t.Run("ca file from the environment", func(t *testing.T) {
		out, errOut, code := runEmber(t, append(env, "EMBER_CA_FILE="+caFile, "EMBER_ADDR=https://"+d.Addr), "status")
		if code != 0 || !strings.Contains(out, caFP) {
			t.Fatalf("ember status with EMBER_CA_FILE: exit %d\n%s%s", code, out, errOut)
		}
	})
	t.Run("pinned fingerprint", func(t *testing.T) {
		// The openssl form (colons, upper case) is accepted.
		var colons []string
		for i := 0; i < len(caFP); i += 2 {
			colons = append(colons, strings.ToUpper(caFP[i:i+2]))
		}
		out, errOut, code := runEmber(t, env, "status", "--addr", d.Addr, "--tls-fingerprint", strings.Join(colons, ":"))
		if code != 0 || !strings.Contains(out, caFP) {
			t.Fatalf("ember status --tls-fingerprint: exit %d\n%s%s", code, out, errOut)
		}
	})
	t.Run("wrong ca", func(t *testing.T) {
		out, errOut, code := runEmber(t, env, "status", "--addr", d.Addr, "--ca-file", otherCA)
		if code == 0 {
			t.Fatalf("ember status trusted a server whose CA is not in %s:\n%s", otherCA, out)
		}
		if !strings.Contains(errOut, "not signed by the CA in "+otherCA) || !strings.Contains(errOut, "--tls-fingerprint") {
			t.Errorf("wrong-CA message does not name the file and the fix:\n%s", errOut)
		}
	})
	t.Run("wrong pin", func(t *testing.T) {
		out, errOut, code := runEmber(t, env, "status", "--addr", d.Addr, "--tls-fingerprint", otherFP)
		if code == 0 {
			t.Fatalf("ember status accepted a server that does not match the pinned fingerprint:\n%s", out)
		}
		if !strings.Contains(errOut, otherFP) || !strings.Contains(errOut, caFP) {
			t.Errorf("wrong-pin message does not name the pinned and the presented fingerprints:\n%s", errOut)
		}
	})
	t.Run("plain http to a TLS server", func(t *testing.T) {
		_, errOut, code := runEmber(t, env, "status", "--addr", "http://"+d.Addr)
		if code == 0 || !strings.Contains(errOut, "https://") {
			t.Fatalf("plain HTTP to a TLS daemon: exit %d, want a message naming https://:\n%s", code, errOut)
		}
	})
	for _, s := range []string{d.Key, other.Key} {
		for _, o := range []*Daemon{d, other} {
			if b, _ := os.ReadFile(o.logPath); bytes.Contains(b, []byte(s)) {
				t.Errorf("an API key appears in emberd's log %s", o.logPath)
			}
		}
	}
}

func TestCLIWithoutTLS(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	out, errOut, code := runEmber(t, []string{"EMBER_API_KEY=" + d.Key}, "status", "--addr", "http://"+d.Addr)
	if code != 0 {
		t.Fatalf("ember status: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "http://"+d.Addr) || !strings.Contains(out, "TLS:") || !strings.Contains(out, "off") {
		t.Errorf("ember status against a plain daemon does not say TLS is off:\n%s", out)
	}
	// Asking for TLS from a daemon that serves plain HTTP fails clearly.
	_, errOut, code = runEmber(t, []string{"EMBER_API_KEY=" + d.Key}, "status", "--addr", "https://"+d.Addr, "--ca-file", "")
	if code == 0 || errOut == "" {
		t.Fatalf("https:// to a plain daemon: exit %d, stderr %q", code, errOut)
	}
}
