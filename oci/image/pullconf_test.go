package image

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer captures a pull's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogBuffer() (*logBuffer, *slog.Logger) {
	lb := &logBuffer{}
	return lb, slog.New(slog.NewTextHandler(lb, nil))
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestPullCertsDirAndAuthFile pulls from a TLS registry with its own CA,
// trusted only through a certs.d folder, that requires basic auth,
// satisfied from a docker config.json.
func TestPullCertsDirAndAuthFile(t *testing.T) {
	const user, pass = "deploy", "pa55-Secret-xyz"
	f := newPullFixture(t, true)
	f.reg.auth, f.reg.user, f.reg.pass = "basic", user, pass
	ref := f.reg.host + "/" + pullRepo + ":1"
	ctx := context.Background()
	tmp := t.TempDir()
	certsDir := filepath.Join(tmp, "certs.d")
	authFile := filepath.Join(tmp, "config.json")
	writeAuth := func(json string) { writeFile(t, authFile, []byte(json)) }
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	logs, log := newLogBuffer()
	opts := PullOptions{CertsDir: certsDir, AuthFile: authFile, Log: log}

	t.Run("untrusted without certs.d", func(t *testing.T) {
		s := openStore(t, Options{})
		writeAuth(`{"auths":{"` + f.reg.host + `":{"auth":"` + b64(user+":"+pass) + `"}}}`)
		_, err := s.Pull(ctx, ref, opts)
		want := filepath.Join(certsDir, f.reg.host, "ca.crt")
		if err == nil || !strings.Contains(err.Error(), "x509") || !strings.Contains(err.Error(), "put it (PEM) in "+want) {
			t.Errorf("error %v, want an x509 error naming %s", err, want)
		}
		if strings.Contains(err.Error(), "attempts") {
			t.Errorf("a certificate error was retried: %v", err)
		}
		checkClean(t, s)
	})

	writeFile(t, filepath.Join(certsDir, f.reg.host, "ca.crt"), certPEM(f.reg.srv.Certificate()))

	t.Run("no entry for the registry", func(t *testing.T) {
		s := openStore(t, Options{})
		writeAuth(`{"auths":{"other.lan:5000":{"auth":"` + b64(user+":"+pass) + `"}}}`)
		_, err := s.Pull(ctx, ref, opts)
		if err == nil || !strings.Contains(err.Error(), "requires a username and password (401 Unauthorized): the auth file "+authFile+" has no entry for "+f.reg.host) {
			t.Errorf("error %v", err)
		}
	})

	t.Run("wrong password in the file", func(t *testing.T) {
		s := openStore(t, Options{})
		writeAuth(`{"auths":{"https://` + f.reg.host + `/v2/":{"username":"` + user + `","password":"wr0ng-Pass-abc"}}}`)
		_, err := s.Pull(ctx, ref, opts)
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized") || !strings.Contains(err.Error(), "(from the auth file "+authFile+")") {
			t.Errorf("error %v", err)
		}
		if strings.Contains(err.Error(), "wr0ng-Pass-abc") {
			t.Errorf("the error shows the password: %v", err)
		}
		checkClean(t, s)
		// Credentials in the request win over the file's.
		o := opts
		o.Username, o.Password = user, pass
		if _, err := s.Pull(ctx, ref, o); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pulled", func(t *testing.T) {
		s := openStore(t, Options{})
		writeAuth(`{"auths":{"` + f.reg.host + `":{"auth":"` + b64(user+":"+pass) + `"}}}`)
		img, err := s.Pull(ctx, ref, opts)
		if err != nil {
			t.Fatal(err)
		}
		if img.Digest != f.manifest {
			t.Errorf("digest %s, want %s", img.Digest, f.manifest)
		}
	})

	t.Run("bad auth file", func(t *testing.T) {
		s := openStore(t, Options{})
		writeAuth(`{"auths":{"` + f.reg.host + `":{"auth":"not base64!"}}}`)
		_, err := s.Pull(ctx, ref, opts)
		if err == nil || !strings.Contains(err.Error(), "is not base64") {
			t.Errorf("error %v", err)
		}
		o := opts
		o.AuthFile = filepath.Join(tmp, "missing.json")
		_, err = s.Pull(ctx, ref, o)
		if err == nil || !strings.Contains(err.Error(), "registry auth file (emberd --registry-auth-file)") {
			t.Errorf("missing file: %v", err)
		}
	})

	for _, secret := range []string{pass, "wr0ng-Pass-abc", b64(user + ":" + pass)} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs hold the secret %q", secret)
		}
	}
}

func TestLookupAuthDockerHubAliases(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.json")
	writeFile(t, file, []byte(`{"auths":{"https://index.docker.io/v1/":{"username":"hub","password":"h"},"Registry.LAN:5000":{"username":"lan","password":"l"}}}`))
	for _, tt := range []struct{ host, user string }{
		{"registry-1.docker.io", "hub"}, {"docker.io", "hub"}, {"index.docker.io", "hub"},
		{"registry.lan:5000", "lan"}, {"registry.lan", ""}, {"quay.io", ""},
	} {
		u, _, ok, err := lookupAuth(file, tt.host)
		if err != nil || u != tt.user || ok != (tt.user != "") {
			t.Errorf("%s: %q %v %v, want %q", tt.host, u, ok, err, tt.user)
		}
	}
	writeFile(t, file, []byte(`{"auths":{"a.lan":{"username":"a","password":"p"}},"credHelpers":{"b.lan":"ecr-login"},"credsStore":"desktop"}`))
	for host, want := range map[string]string{"a.lan": "", "b.lan": `to the credential helper "ecr-login", which emberd does not run`, "c.lan": `its credsStore "desktop" is not run by emberd`} {
		_, _, _, err := lookupAuth(file, host)
		if (want == "" && err != nil) || (want != "" && (err == nil || !strings.Contains(err.Error(), want))) {
			t.Errorf("%s: %v, want %q", host, err, want)
		}
	}
}

// TestPullClientCert pulls from a registry that requires a client
// certificate, given as client.cert + client.key in certs.d.
func TestPullClientCert(t *testing.T) {
	f := newPullFixture(t, false)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv := httptest.NewUnstartedServer(f.reg.srv.Config.Handler)
	srv.Config.ErrorLog = f.reg.srv.Config.ErrorLog
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	certsDir := t.TempDir()
	writeFile(t, filepath.Join(certsDir, host, "ca.crt"), certPEM(srv.Certificate()))
	ref := host + "/" + pullRepo + ":plain"
	s := openStore(t, Options{})
	_, err = s.Pull(context.Background(), ref, PullOptions{CertsDir: certsDir})
	if want := "put the certificate and its key (PEM) in " + filepath.Join(certsDir, host, "client.cert") + " and client.key"; err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "attempts") {
		t.Errorf("error %v, want one (not retried) containing %q", err, want)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(certsDir, host, "client.cert"), certPEM(cert))
	writeFile(t, filepath.Join(certsDir, host, "client.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	if _, err := s.Pull(context.Background(), ref, PullOptions{CertsDir: certsDir}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(certsDir, host, "client.cert"))
	_, err = s.Pull(context.Background(), ref, PullOptions{CertsDir: certsDir})
	if err == nil || !strings.Contains(err.Error(), "has no certificate client.cert beside it") {
		t.Errorf("key without certificate: %v", err)
	}
}

func TestPullRetry(t *testing.T) {
	f := newPullFixture(t, false)
	ctx := context.Background()
	manifestPath := "/v2/" + pullRepo + "/manifests/1"
	layerPath := "/v2/" + pullRepo + "/blobs/" + digestOf(f.img.layers[0])

	t.Run("503 twice, then served", func(t *testing.T) {
		s := openStore(t, Options{})
		logs, log := newLogBuffer()
		f.reg.mu.Lock()
		f.reg.failNext[manifestPath], f.reg.failNext[layerPath] = 2, 1
		f.reg.hits = map[string]int{}
		f.reg.mu.Unlock()
		if _, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, Log: log, retryBase: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		f.reg.mu.Lock()
		hm, hl := f.reg.hits[manifestPath], f.reg.hits[layerPath]
		f.reg.mu.Unlock()
		if hm != 3 || hl != 2 {
			t.Errorf("manifest asked %d times, layer %d; want 3 and 2", hm, hl)
		}
		out := logs.String()
		for _, want := range []string{"what=\"manifest acme/echo:1\" attempt=1 attempts=4", "attempt=2 attempts=4", "what=\"layer " + digestOf(f.img.layers[0]) + "\" attempt=1", "503 Service Unavailable"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("503 always", func(t *testing.T) {
		s := openStore(t, Options{})
		f.reg.mu.Lock()
		f.reg.failNext[layerPath] = 10
		f.reg.hits = map[string]int{}
		f.reg.mu.Unlock()
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, retryBase: time.Millisecond})
		want := "layer " + digestOf(f.img.layers[0]) + ": failed after 4 attempts: registry " + f.reg.host + "/" + pullRepo + ": blobs/" + digestOf(f.img.layers[0]) + ": 503 Service Unavailable: UNAVAILABLE (registry is busy)"
		if !errors.Is(err, ErrRegistryUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v", err)
		}
		f.reg.mu.Lock()
		if n := f.reg.hits[layerPath]; n != 4 {
			t.Errorf("layer asked %d times, want 4", n)
		}
		f.reg.failNext[layerPath] = 0
		f.reg.mu.Unlock()
		checkClean(t, s)
	})

	t.Run("404 not retried", func(t *testing.T) {
		s := openStore(t, Options{})
		f.reg.mu.Lock()
		f.reg.hits = map[string]int{}
		f.reg.mu.Unlock()
		_, err := s.Pull(ctx, f.reg.host+"/"+pullRepo+":nope", PullOptions{PlainHTTP: true, retryBase: time.Millisecond})
		if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrRegistryUnavailable) || strings.Contains(err.Error(), "attempts") {
			t.Errorf("error %v", err)
		}
		f.reg.mu.Lock()
		if n := f.reg.hits["/v2/"+pullRepo+"/manifests/nope"]; n != 1 {
			t.Errorf("404 asked %d times, want 1", n)
		}
		f.reg.mu.Unlock()
	})

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		s := openStore(t, Options{})
		_, err = s.Pull(ctx, addr+"/"+pullRepo+":1", PullOptions{PlainHTTP: true, retryBase: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "failed after 4 attempts") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %v", err)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	for h, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "x": 0, "-1": 0} {
		if got := parseRetryAfter(h); got != want {
			t.Errorf("%q: %v, want %v", h, got, want)
		}
	}
	if got := parseRetryAfter(time.Now().Add(-time.Minute).UTC().Format(http1123)); got != 0 {
		t.Errorf("a past date: %v", got)
	}
}

func TestRetryWait(t *testing.T) {
	for _, tt := range []struct {
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{1, 0, 500 * time.Millisecond}, {2, 0, time.Second}, {3, 0, 2 * time.Second},
		{1, 5 * time.Second, 5 * time.Second}, {3, time.Second, 2 * time.Second}, {2, time.Hour, pullRetryMax},
	} {
		if got := retryWait(pullRetryBase, tt.attempt, tt.retryAfter); got != tt.want {
			t.Errorf("attempt %d, Retry-After %v: %v, want %v", tt.attempt, tt.retryAfter, got, tt.want)
		}
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"
