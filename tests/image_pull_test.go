package tests

// `ember image pull` against a real emberd and a registry on loopback that
// speaks TLS with its own CA (trusted through emberd's certs.d), requires
// basic auth (satisfied from emberd's docker config.json) and answers its
// first two manifest requests 503.

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// layoutRegistry serves the OCI layout in an archive as repository repo,
// its one image under tag, to user:pass only; the first fails manifest
// requests are answered 503.
func layoutRegistry(t *testing.T, archive []byte, repo, tag, user, pass string, fails int) http.Handler {
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = b
	}
	var index struct {
		Manifests []struct {
			MediaType, Digest string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json of the archive: %v %s", err, files["index.json"])
	}
	md := index.Manifests[0]
	blob := func(d string) []byte { return files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/v2/"+repo+"/")
		switch {
		case !ok:
			http.NotFound(w, r)
		case rest == "manifests/"+tag || rest == "manifests/"+md.Digest:
			mu.Lock()
			fail := fails > 0
			fails--
			mu.Unlock()
			if fail {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", md.MediaType)
			w.Header().Set("Docker-Content-Digest", md.Digest)
			w.Write(blob(md.Digest))
		case strings.HasPrefix(rest, "blobs/") && blob(strings.TrimPrefix(rest, "blobs/")) != nil:
			w.Write(blob(strings.TrimPrefix(rest, "blobs/")))
		default:
			http.NotFound(w, r)
		}
	})
}

func TestImagePullCertsDirAuthFileRetry(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image store needs --runtime runc, which needs root (CI runs as root)")
	}
	const user, pass = "puller", "Reg1stry-S3cret-e2e"
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "../examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static worker: %v\n%s", err, out)
	}
	ociTar := filepath.Join(dir, "worker-oci.tar")
	if b, err := exec.Command("go", "run", "../examples/worker/mkimage", "-binary", bin, "-o", ociTar).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, b)
	}
	archive, err := os.ReadFile(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewUnstartedServer(layoutRegistry(t, archive, "acme/worker", "1", user, pass, 2))
	reg.StartTLS()
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "https://")

	certsDir := filepath.Join(dir, "certs.d")
	os.MkdirAll(filepath.Join(certsDir, host), 0o700)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(certsDir, host, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(dir, "registry-auth.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if err := os.WriteFile(authFile, []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	d := StartDaemon(t, "--runtime", "runc", "--registry-certs-dir", certsDir, "--registry-auth-file", authFile)
	pull := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(emberBin, append([]string{"image", "pull"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "EMBER_ADDR=" + d.URL, "EMBER_API_KEY=" + d.Key}
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
		defer timer.Stop()
		err := cmd.Wait()
		return stdout.String(), stderr.String(), err
	}

	// Credentials given with the pull win over the file's.
	_, stderr, err := pull("wr0ng-Pa55-e2e\n", host+"/acme/worker:1", "--username", user, "--password-stdin")
	if err == nil || !strings.Contains(stderr, "401 Unauthorized") {
		t.Fatalf("pull with a wrong password: %v\n%s", err, stderr)
	}
	if strings.Contains(stderr, "wr0ng-Pa55-e2e") {
		t.Errorf("the error shows the password: %s", stderr)
	}

	stdout, stderr, err := pull("", host+"/acme/worker:1", "--json")
	if err != nil {
		t.Fatalf("ember image pull: %v\n%s\n%s", err, stderr, d.Log())
	}
	var img struct {
		Names []string `json:"names"`
	}
	if err := json.Unmarshal([]byte(stdout), &img); err != nil || len(img.Names) != 1 || img.Names[0] != host+"/acme/worker:1" {
		t.Fatalf("ember image pull printed %q (%v)", stdout, err)
	}
	log := d.Log()
	for _, want := range []string{"registry request failed, retrying", "attempt=1 attempts=4", "attempt=2 attempts=4", "503 Service Unavailable"} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon's log lacks %q", want)
		}
	}
	for _, secret := range []string{pass, auth, "wr0ng-Pa55-e2e"} {
		if strings.Contains(log, secret) {
			t.Errorf("the daemon's log holds the secret %q", secret)
		}
	}
}
