package main

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runLoad runs "ember image load" in-process with stdin as its standard
// input, progress drawn if asked, against the fake at addr.
func runLoad(t *testing.T, addr string, stdin io.Reader, progress bool, args ...string) result {
	t.Helper()
	env := map[string]string{"EMBER_ADDR": addr, "EMBER_API_KEY": testKey}
	var stdout, stderr bytes.Buffer
	a := newApp(stdin, &stdout, &stderr, func(k string) string { return env[k] })
	a.defaultCAFile = filepath.Join(t.TempDir(), "no-ca.pem")
	a.now = func() time.Time { return testClock }
	a.progress = progress
	code := a.execute(context.Background(), append([]string{"image", "load"}, args...))
	return result{stdout.String(), stderr.String(), code}
}

// lastUpload is the last POST /v1/images:upload the fake received.
func lastUpload(t *testing.T, fd *fakeDaemon) fakeRequest {
	t.Helper()
	var up *fakeRequest
	for _, r := range fd.requests() {
		if r.Method == "POST" && r.Path == "/v1/images:upload" {
			up = &r
		}
	}
	if up == nil {
		t.Fatalf("no upload sent: %+v", fd.requests())
	}
	return *up
}

// TestImageLoad checks what "ember image load" sends from each kind of
// input: a pipe (unknown length: chunked, streamed), a redirected file
// (its length), -i FILE; and that the archive arrives byte for byte with
// the name and the key.
func TestImageLoad(t *testing.T) {
	dir, _ := imageFixtures(t)
	archive, err := os.ReadFile(filepath.Join(dir, "echo.tar"))
	if err != nil {
		t.Fatal(err)
	}
	openFile := func(t *testing.T) io.Reader {
		f, err := os.Open(filepath.Join(dir, "echo.tar"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	pipe := func(t *testing.T) io.Reader {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		// Written in small pieces, as docker save writes into a pipe.
		go func() {
			defer w.Close()
			for b := archive; len(b) > 0; {
				n := min(len(b), 1000)
				if _, err := w.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
		}()
		return r
	}
	tests := []struct {
		name       string
		stdin      func(t *testing.T) io.Reader
		args       []string
		wantLength int64
		wantName   string
	}{
		{name: "pipe", stdin: pipe, wantLength: -1},
		{name: "pipe with name", stdin: pipe, args: []string{"--name", "acme/echo:2"}, wantLength: -1, wantName: "acme/echo:2"},
		{name: "reader that is not a file", stdin: func(*testing.T) io.Reader { return bytes.NewReader(archive) }, wantLength: -1},
		{name: "redirected file", stdin: openFile, wantLength: int64(len(archive))},
		{name: "dash is stdin", stdin: pipe, args: []string{"-i", "-"}, wantLength: -1},
		{name: "input file", stdin: func(*testing.T) io.Reader { return strings.NewReader("") }, args: []string{"-i", filepath.Join(dir, "echo.tar")}, wantLength: int64(len(archive))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFakeDaemon(t)
			r := runLoad(t, fd.addr, tt.stdin(t), false, tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if r.stderr != "" {
				t.Errorf("stderr %q; want nothing off a terminal", r.stderr)
			}
			if !strings.Contains(r.stdout, "IMPORTED") {
				t.Errorf("stdout %q; want the image table", r.stdout)
			}
			up := lastUpload(t, fd)
			if up.Body != string(archive) || up.Length != tt.wantLength || up.Auth != "Bearer "+testKey {
				t.Errorf("upload: %d body bytes (want %d), length %d (want %d), auth %q", len(up.Body), len(archive), up.Length, tt.wantLength, up.Auth)
			}
			if q, _ := url.ParseQuery(up.Query); q.Get("name") != tt.wantName {
				t.Errorf("query %q, want name %q", up.Query, tt.wantName)
			}
		})
	}
}

// TestImageLoadOutput checks the progress bar (bytes sent of an unknown
// total), --json, and the refusals that happen before anything is sent.
func TestImageLoadOutput(t *testing.T) {
	dir, _ := imageFixtures(t)
	archive, _ := os.ReadFile(filepath.Join(dir, "echo.tar"))
	unnamed, _ := os.ReadFile(filepath.Join(dir, "unnamed.tar"))
	fd := newFakeDaemon(t)

	r := runLoad(t, fd.addr, bytes.NewReader(archive), true)
	if r.code != 0 || !strings.Contains(r.stderr, "Uploading stdin  ") || strings.Contains(r.stderr, "%") || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("terminal: exit %d, stderr %q; want a bar of bytes sent without a percentage", r.code, r.stderr)
	}

	r = runLoad(t, fd.addr, bytes.NewReader(archive), true, "--json")
	if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "{") || !strings.Contains(r.stdout, `"ghcr.io/acme/uploaded:1"`) {
		t.Errorf("--json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = runLoad(t, fd.addr, bytes.NewReader(unnamed), false)
	if r.code == 0 || !strings.Contains(r.stderr, "image name required") || !strings.Contains(r.stderr, "Give it one with: ember image load --name NAME:TAG") {
		t.Errorf("unnamed: exit %d, stderr %q", r.code, r.stderr)
	}

	before := len(fd.requests())
	for _, tt := range []struct {
		name  string
		stdin io.Reader
		args  []string
		want  string
	}{
		{"empty stdin", strings.NewReader(""), nil, "standard input is empty: pipe an image archive in (docker save IMAGE | ember image load)"},
		{"stdin is /dev/null", devNull(t), nil, "standard input is empty"},
		{"missing file", strings.NewReader(""), []string{"-i", filepath.Join(dir, "missing.tar")}, "no such file or directory"},
		{"directory", strings.NewReader(""), []string{"-i", filepath.Join(dir, "echo-layout")}, "is not a regular file (import an OCI layout directory with: ember image import"},
		{"argument", strings.NewReader(""), []string{filepath.Join(dir, "echo.tar")}, "takes 0 argument(s), got 1"},
	} {
		r := runLoad(t, fd.addr, tt.stdin, false, tt.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want %q", tt.name, r.code, r.stderr, tt.want)
		}
	}
	// A terminal (a pty's master answers the terminal ioctl too) would
	// wait for someone to type an archive.
	if tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0); err == nil {
		r := runLoad(t, fd.addr, tty, false)
		tty.Close()
		if r.code == 0 || !strings.Contains(r.stderr, "standard input is a terminal: pipe an image archive in") {
			t.Errorf("terminal stdin: exit %d, stderr %q", r.code, r.stderr)
		}
	} else {
		t.Logf("no pty to test a terminal stdin with: %v", err)
	}
	if n := len(fd.requests()) - before; n != 0 {
		t.Errorf("refused loads sent %d requests", n)
	}
}

func devNull(t *testing.T) *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
