package tests

// End-to-end tests of TLS on emberd's listeners (daemon/tlsconf): --tls
// auto and --tls-cert/--tls-key, REST and gRPC, rotation on SIGHUP, the
// plain loopback worker listener, and the refusal to listen beyond
// loopback without TLS.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// caPool reads a PEM file into a pool.
func caPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", path)
	}
	return pool
}

// peerChain does a TLS handshake with addr and returns the chain served.
func peerChain(t *testing.T, addr string, cfg *tls.Config) ([]*x509.Certificate, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

type healthTLS struct {
	TLS struct {
		Enabled       bool   `json:"enabled"`
		Mode          string `json:"mode"`
		CAFingerprint string `json:"caFingerprint"`
		CertNotAfter  string `json:"certNotAfter"`
	} `json:"tls"`
	InsecureListen *bool `json:"insecureListen"`
}

func readHealth(t *testing.T, d *Daemon) healthTLS {
	t.Helper()
	code, body := d.Do("GET", "/healthz", nil)
	var h healthTLS
	if code != 200 || json.Unmarshal(body, &h) != nil || h.InsecureListen == nil {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	return h
}

func fingerprint(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// TestTLSAuto: --tls auto makes the CA and a certificate naming this
// machine; REST and gRPC serve it; a client trusting ca.pem connects, a
// client trusting another CA or speaking plain HTTP does not; a job runs
// end to end while its worker uses the plain loopback worker listener,
// which serves nothing else.
func TestTLSAuto(t *testing.T) {
	t.Parallel()
	d := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls", "auto")
	dir := filepath.Join(d.DataDir, "tls")
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	if d.Client == nil {
		t.Fatal("the harness found no tls/ca.pem")
	}
	pool := caPool(t, filepath.Join(dir, "ca.pem"))
	chain, err := peerChain(t, d.Addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("REST handshake trusting ca.pem: %v", err)
	}
	if len(chain) != 2 {
		t.Fatalf("served chain has %d certificates, want the server certificate and the CA", len(chain))
	}
	leaf, ca := chain[0], chain[1]
	host, _ := os.Hostname()
	for _, name := range []string{"localhost", "127.0.0.1", "::1", host} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("served certificate: %v", err)
		}
	}
	// Every non-loopback, non-link-local address of this machine.
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			if err := leaf.VerifyHostname(ipn.IP.String()); err != nil {
				t.Errorf("served certificate: %v", err)
			}
		}
	}

	h := readHealth(t, d)
	fp := fingerprint(ca.Raw)
	if !h.TLS.Enabled || h.TLS.Mode != "auto" || h.TLS.CAFingerprint != fp || *h.InsecureListen {
		t.Errorf("/healthz: %+v, want auto with fingerprint %s", h, fp)
	}
	if na, err := time.Parse(time.RFC3339, h.TLS.CertNotAfter); err != nil || !na.Equal(leaf.NotAfter.Truncate(time.Second)) {
		t.Errorf("/healthz certNotAfter %q, served certificate's %v", h.TLS.CertNotAfter, leaf.NotAfter)
	}
	if !strings.Contains(d.Log(), "ca_fingerprint_sha256="+fp) {
		t.Errorf("the CA fingerprint %s is not logged:\n%s", fp, d.Log())
	}

	// A client trusting another CA is refused; so is plain HTTP.
	other := x509.NewCertPool()
	other.AddCert(newCA(t).cert)
	wrong := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: other}}}
	if resp, err := wrong.Get(d.URL + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		if err == nil {
			resp.Body.Close()
		}
		t.Errorf("a client trusting another CA: %v", err)
	}
	resp, err := http.Get("http://" + d.Addr + "/v1/endpoints")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("plain HTTP to the TLS listener: %d %s", resp.StatusCode, body)
		}
	}

	// gRPC over TLS with the CA; without TLS, or trusting another CA, no.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(d.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if hc, err := emberv1.NewHealthServiceClient(cc).Check(ctx, &emberv1.HealthCheckRequest{}); err != nil || hc.GetStatus() != "SERVING" {
		t.Errorf("gRPC health over TLS: %v %v", hc, err)
	}
	keyed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.Key)
	if _, err := emberv1.NewEndpointServiceClient(cc).ListEndpoints(keyed, &emberv1.ListEndpointsRequest{}); err != nil {
		t.Errorf("gRPC ListEndpoints over TLS: %v", err)
	}
	for name, creds := range map[string]grpc.DialOption{
		"plaintext":    grpc.WithTransportCredentials(insecure.NewCredentials()),
		"another CA":   grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: other})),
		"TLS 1.1 only": grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})),
	} {
		bad, err := grpc.NewClient(d.GRPC, creds)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = emberv1.NewHealthServiceClient(bad).Check(short, &emberv1.HealthCheckRequest{})
		cancel()
		bad.Close()
		grpcCode(t, "gRPC health, "+name, err, codes.Unavailable)
	}

	// A job end to end: the worker reaches the worker API over plain HTTP
	// on its own loopback listener.
	ep := d.CreateEndpoint("tls-echo", nil)
	m := d.JSON("POST", "/v2/"+ep+"/runsync", map[string]any{"input": map[string]any{"prompt": "over tls"}}, 200)
	if m["status"] != "COMPLETED" {
		t.Fatalf("/runsync over https: %v", m)
	}
	out, _ := json.Marshal(m["output"])
	if !strings.Contains(string(out), "over tls") {
		t.Errorf("/runsync output %s", out)
	}
	wm := regexp.MustCompile(`worker_api=http://(127\.0\.0\.1:\d+)`).FindStringSubmatch(d.Log())
	if wm == nil || wm[1] == d.Addr {
		t.Fatalf("no separate worker API listener in the log:\n%s", d.Log())
	}
	for _, path := range []string{"/v2/" + ep + "/runsync", "/v1/endpoints", "/metrics", "/healthz"} {
		req, _ := http.NewRequest("GET", "http://"+wm[1]+path, nil)
		req.Header.Set("Authorization", "Bearer "+d.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("worker listener %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "only the worker API") {
			t.Errorf("worker listener serves %s: %d %s", path, resp.StatusCode, body)
		}
	}
	// The worker API there checks the worker's token like anywhere else.
	if resp, err := http.Get("http://" + wm[1] + "/v2/" + ep + "/job-take/w-nobody"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("job-take without a worker token on the worker listener: %d", resp.StatusCode)
	}
	if strings.Contains(d.Log(), d.Key) {
		t.Error("the admin key reached the log")
	}
}

// testCA signs server certificates, as an operator's own PKI would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue writes a certificate for 127.0.0.1 (chain: it, then the CA) and
// its key; it returns the certificate's DER.
func (ca *testCA) issue(t *testing.T, certPath, keyPath string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "emberd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(12 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	// Key first, then the certificate, each replaced whole (rename), as a
	// certificate tool would.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, {certPath, chain}} {
		if err := os.WriteFile(f.path+".new", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".new", f.path); err != nil {
			t.Fatal(err)
		}
	}
	return der
}

// TestTLSFilesRotation: --tls-cert/--tls-key are served on REST and gRPC
// and re-read on SIGHUP; a bad new pair is refused and the served one
// stays.
func TestTLSFilesRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca := newCA(t)
	first := ca.issue(t, certPath, keyPath)
	d := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls-cert", certPath, "--tls-key", keyPath)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	d.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	served := func(addr string) []byte {
		t.Helper()
		cfg := &tls.Config{RootCAs: pool}
		if addr == d.GRPC {
			cfg.NextProtos = []string{"h2"} // gRPC needs it
		}
		chain, err := peerChain(t, addr, cfg)
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		return chain[0].Raw
	}
	for _, addr := range []string{d.Addr, d.GRPC} {
		if !bytes.Equal(served(addr), first) {
			t.Fatalf("%s does not serve --tls-cert", addr)
		}
	}
	if h := readHealth(t, d); h.TLS.Mode != "files" || h.TLS.CAFingerprint != fingerprint(ca.cert.Raw) {
		t.Errorf("/healthz: %+v, want files with the CA's fingerprint %s", h, fingerprint(ca.cert.Raw))
	}

	second := ca.issue(t, certPath, keyPath)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the new certificate served on both listeners", func() bool {
		return bytes.Equal(served(d.Addr), second) && bytes.Equal(served(d.GRPC), second)
	})
	// The REST API still answers on the same connection pool.
	d.JSON("GET", "/v1/endpoints", nil, 200)

	// A pair that cannot be served: refused, logged, the served one stays.
	if err := os.WriteFile(certPath, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the refused reload logged", func() bool { return strings.Contains(d.Log(), "reload refused") })
	if !bytes.Equal(served(d.Addr), second) || !bytes.Equal(served(d.GRPC), second) {
		t.Error("a bad pair replaced the served certificate")
	}
	key, _ := os.ReadFile(keyPath)
	if strings.Contains(d.Log(), strings.TrimSpace(string(key))) {
		t.Error("the private key reached the log")
	}
}

// TestListenPolicy: an address other than loopback without TLS stops
// emberd, naming the ways out; --insecure-listen is warned about at start
// and shown by /healthz.
func TestListenPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ flag, addr string }{{"--listen", "0.0.0.0:0"}, {"--grpc-listen", "0.0.0.0:0"}} {
		args := []string{"--data-dir", t.TempDir(), "--runtime", "process", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", tc.flag, tc.addr}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, emberdBin, args...).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s %s: %v, want exit status 1\n%s", tc.flag, tc.addr, err, out)
			continue
		}
		for _, want := range []string{"refusing to serve", tc.flag + " 0.0.0.0:0", "--tls auto", "--tls-cert", "--insecure-listen"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s %s: the message does not say %q:\n%s", tc.flag, tc.addr, want, out)
			}
		}
	}

	// A socket passed by systemd is held to the same rule.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, emberdBin,
		"--data-dir", t.TempDir(), "--runtime", "process", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(systemdVars, k) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "refusing to serve the REST API on [::]:") ||
		!strings.Contains(string(out), "or the socket systemd passed") {
		t.Errorf("a socket-activated wildcard socket without TLS: %v, want exit status 1 and the refusal\n%s", err, out)
	}

	d := StartDaemon(t, "--insecure-listen")
	if !regexp.MustCompile(`level=WARN msg="--insecure-listen: `).MatchString(d.Log()) {
		t.Errorf("no WARN for --insecure-listen:\n%s", d.Log())
	}
	if h := readHealth(t, d); !*h.InsecureListen || h.TLS.Enabled || h.TLS.Mode != "off" {
		t.Errorf("/healthz: %+v, want insecureListen and TLS off", h)
	}
	d.Stop()
	d.Restart()
	if n := strings.Count(d.Log(), "--insecure-listen: "); n != 1 {
		t.Errorf("the restarted emberd logged %d --insecure-listen warnings, want 1:\n%s", n, d.Log())
	}
}

// TestRunpodSDKCompatTLS: the npm runpod-sdk completes jobs over https,
// trusting emberd's CA through NODE_EXTRA_CA_CERTS (compat/README.md).
func TestRunpodSDKCompatTLS(t *testing.T) {
	node := compatNode(t)
	d := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls", "auto")
	runCompatScript(t, node, d, "NODE_EXTRA_CA_CERTS="+filepath.Join(d.DataDir, "tls", "ca.pem"))
}

// TestTLSContainerWorkers: with TLS on, container workers on the host
// network and on network "none" (served inside their own namespace) reach
// the plain-HTTP worker API and complete their jobs.
func TestTLSContainerWorkers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	_, ociDir := workerImages(t)
	d := StartDaemonWith(t, DaemonOptions{HTTPS: true}, "--tls", "auto", "--runtime", "runc")
	d.JSON("POST", "/v1/images:import", map[string]any{"path": ociDir, "name": "ember/worker:tls"}, 200)
	for _, network := range []string{"host", "none"} {
		ep := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "tls-" + network, "image": "ember/worker:tls", "gpuCount": 0,
			"workersMax": 1, "idleTimeout": 2, "network": network}, 200)["id"].(string)
		res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"msg": "tls " + network}}, 200)
		if res["status"] != "COMPLETED" {
			t.Errorf("network %s: runsync answered %v\n%s", network, res, d.Log())
		}
	}
}
