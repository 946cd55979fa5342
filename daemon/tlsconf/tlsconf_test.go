package tlsconf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuf collects a Manager's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

var testIPs = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback, net.IPv4(10, 1, 2, 3).To4()}

func autoOptions(t *testing.T, dir string, c *clock, log *logBuf) Options {
	t.Helper()
	return Options{Mode: ModeAuto, Dir: dir, Now: c.Now, Logger: slog.New(slog.NewTextHandler(log, nil)),
		Names: func() ([]string, []net.IP) { return []string{"emberhost", "localhost"}, testIPs }}
}

func TestSelectMode(t *testing.T) {
	for _, tc := range []struct {
		tls, cert, key string
		want, err      string
	}{
		{"", "", "", ModeOff, ""},
		{"off", "", "", ModeOff, ""},
		{"auto", "", "", ModeAuto, ""},
		{"off", "c.pem", "k.pem", ModeFiles, ""},
		{"", "c.pem", "k.pem", ModeFiles, ""},
		{"auto", "c.pem", "k.pem", "", "--tls auto and --tls-cert/--tls-key exclude each other"},
		{"off", "c.pem", "", "", "--tls-cert needs --tls-key"},
		{"off", "", "k.pem", "", "--tls-key needs --tls-cert"},
		{"on", "", "", "", `--tls "on": must be off or auto`},
	} {
		got, err := SelectMode(tc.tls, tc.cert, tc.key)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SelectMode(%q, %q, %q) = %q, %v; want error %q", tc.tls, tc.cert, tc.key, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SelectMode(%q, %q, %q) = %q, %v; want %q", tc.tls, tc.cert, tc.key, got, err, tc.want)
		}
	}
}

func readCA(t *testing.T, dir string) (*x509.Certificate, *x509.CertPool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM", CAFile)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return ca, pool
}

func servedCert(t *testing.T, m *Manager) *tls.Certificate {
	t.Helper()
	c, err := m.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAuto(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var log logBuf
	m, err := New(autoOptions(t, dir, c, &log))
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{CAFile: 0o644, CAKeyFile: 0o600, ServerFile: 0o644, ServerKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	ca, pool := readCA(t, dir)
	if !ca.IsCA || ca.NotAfter.Sub(c.Now()) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA %v, not after %v", ca.IsCA, ca.NotAfter)
	}
	if k, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	cert := servedCert(t, m)
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.Raw) {
		t.Errorf("served chain has %d certificates; want the server certificate then the CA", len(cert.Certificate))
	}
	leaf := cert.Leaf
	for _, name := range []string{"emberhost", "localhost", "127.0.0.1", "::1", "10.1.2.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: c.Now()}); err != nil {
			t.Errorf("verify for %s against ca.pem: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool, CurrentTime: c.Now()}); err == nil {
		t.Error("the certificate verifies for a name it does not carry")
	}
	if got := leaf.NotAfter.Sub(c.Now()); got != ServerValidity {
		t.Errorf("server certificate lasts %v, want %v", got, ServerValidity)
	}
	st := m.Status()
	if st.Mode != ModeAuto || st.Fingerprint != Fingerprint(ca.Raw) || len(st.Fingerprint) != 64 || !st.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("Status() = %+v; CA fingerprint %s", st, Fingerprint(ca.Raw))
	}
	if !strings.Contains(log.String(), "ca_fingerprint_sha256="+st.Fingerprint) {
		t.Errorf("the CA fingerprint is not logged:\n%s", log.String())
	}
	// The files on disk are what is served.
	onDisk, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile))
	if err != nil || !bytes.Equal(onDisk.Certificate[0], leaf.Raw) {
		t.Errorf("server.pem is not the served certificate (%v)", err)
	}

	// A restart keeps the CA and the certificate, and logs the fingerprint again.
	var log2 logBuf
	m2, err := New(autoOptions(t, dir, c, &log2))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(servedCert(t, m2).Leaf.Raw, leaf.Raw) || m2.Status().Fingerprint != st.Fingerprint {
		t.Error("a restart made a new certificate or CA")
	}
	if !strings.Contains(log2.String(), "ca_fingerprint_sha256="+st.Fingerprint) {
		t.Errorf("the CA fingerprint is not logged at the second start:\n%s", log2.String())
	}
}

func TestAutoRenewal(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var log logBuf
	o := autoOptions(t, dir, c, &log)
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	_, pool := readCA(t, dir)
	first := servedCert(t, m).Leaf

	// More than RenewBefore left: kept.
	c.Add(ServerValidity - RenewBefore - time.Hour)
	m.check()
	if !bytes.Equal(servedCert(t, m).Leaf.Raw, first.Raw) {
		t.Fatal("renewed with more than RenewBefore left")
	}
	// Less: renewed, served at once, written, and signed by the same CA.
	c.Add(2 * time.Hour)
	m.check()
	second := servedCert(t, m).Leaf
	if bytes.Equal(second.Raw, first.Raw) || !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed with less than RenewBefore left: not after %v", second.NotAfter)
	}
	if _, err := second.Verify(x509.VerifyOptions{DNSName: "emberhost", Roots: pool, CurrentTime: c.Now()}); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
	if !strings.Contains(log.String(), "new server certificate") {
		t.Errorf("renewal not logged:\n%s", log.String())
	}
	// A start on that directory serves the renewed one.
	m2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(servedCert(t, m2).Leaf.Raw, second.Raw) {
		t.Error("a restart does not serve the renewed certificate from disk")
	}
	// A start long after expiry renews at once.
	c.Add(ServerValidity * 2)
	m3, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if l := servedCert(t, m3).Leaf; !c.Now().Before(l.NotAfter) || bytes.Equal(l.Raw, second.Raw) {
		t.Error("a start after expiry serves the expired certificate")
	}
	// A new address of the machine: reissued to name it.
	o.Names = func() ([]string, []net.IP) {
		return []string{"emberhost", "localhost"}, append(testIPs, net.IPv4(192, 168, 7, 9).To4())
	}
	m4, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := servedCert(t, m4).Leaf.Verify(x509.VerifyOptions{DNSName: "192.168.7.9", Roots: pool, CurrentTime: c.Now()}); err != nil {
		t.Errorf("after an address change: %v", err)
	}
}

func TestAutoRefusals(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		name  string
		spoil func(dir string) error
		want  string
	}{
		{"key readable by others", func(dir string) error { return os.Chmod(filepath.Join(dir, CAKeyFile), 0o644) }, "chmod 600"},
		{"CA key missing", func(dir string) error { return os.Remove(filepath.Join(dir, CAKeyFile)) }, "move both aside"},
		{"CA garbage", func(dir string) error { return os.WriteFile(filepath.Join(dir, CAFile), []byte("not pem"), 0o644) }, "ca.pem"},
		{"CA expired", func(dir string) error { c.Add(CAValidity + 24*time.Hour); return nil }, "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			dir := t.TempDir()
			var log logBuf
			if _, err := New(autoOptions(t, dir, c, &log)); err != nil {
				t.Fatal(err)
			}
			if err := tc.spoil(dir); err != nil {
				t.Fatal(err)
			}
			_, err := New(autoOptions(t, dir, c, &log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			key, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
			if len(key) > 0 && strings.Contains(err.Error(), string(key)) {
				t.Error("the error holds the key")
			}
		})
	}
	// A spoilt server certificate is remade, since emberd owns it.
	dir := t.TempDir()
	c.t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var log logBuf
	if _, err := New(autoOptions(t, dir, c, &log)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ServerFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(autoOptions(t, dir, c, &log))
	if err != nil {
		t.Fatalf("a spoilt server.pem is not remade: %v", err)
	}
	_, pool := readCA(t, dir)
	if _, err := servedCert(t, m).Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: c.Now()}); err != nil {
		t.Error(err)
	}
}

// testCA makes a CA and signs server certificates with it, as an
// operator's own PKI would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// write signs a certificate for 127.0.0.1 valid until notAfter and writes
// the chain (leaf, CA) and the key to certPath and keyPath.
func (ca *testCA) write(t *testing.T, certPath, keyPath string, notAfter time.Time) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "emberd"}, NotBefore: time.Now().Add(-2 * time.Hour),
		NotAfter: notAfter, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(certPath, append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", ca.cert.Raw)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pemBlock("PRIVATE KEY", kder), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

func TestFilesReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca := newTestCA(t)
	first := ca.write(t, certPath, keyPath, time.Now().Add(12*time.Hour))
	var log logBuf
	m, err := New(Options{Mode: ModeFiles, CertFile: certPath, KeyFile: keyPath, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(servedCert(t, m).Certificate[0], first) {
		t.Fatal("not serving --tls-cert")
	}
	if !strings.Contains(log.String(), "expires soon") {
		t.Errorf("no warning for a certificate with 12 h left:\n%s", log.String())
	}
	if st := m.Status(); st.Mode != ModeFiles || st.Fingerprint != Fingerprint(ca.cert.Raw) {
		t.Errorf("Status() = %+v, want the fingerprint of the chain's last certificate (the CA)", st)
	}
	second := ca.write(t, certPath, keyPath, time.Now().Add(20*time.Hour))
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(servedCert(t, m).Certificate[0], second) {
		t.Fatal("Reload did not swap the certificate")
	}

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	okder, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	keyPEM, _ := os.ReadFile(keyPath)
	for _, tc := range []struct {
		name  string
		spoil func()
		want  string
	}{
		{"garbage certificate", func() { os.WriteFile(certPath, []byte("-----BEGIN nothing"), 0o644) }, "failed to find any PEM data in certificate input"},
		{"key of another certificate", func() {
			ca.write(t, certPath, keyPath, time.Now().Add(time.Hour))
			os.WriteFile(keyPath, pemBlock("PRIVATE KEY", okder), 0o600)
		}, "private key does not match public key"},
		{"expired", func() { ca.write(t, certPath, keyPath, time.Now().Add(-time.Hour)) }, "expired at"},
		{"key missing", func() { ca.write(t, certPath, keyPath, time.Now().Add(time.Hour)); os.Remove(keyPath) }, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spoil()
			err := m.Reload()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), certPath) {
				t.Fatalf("Reload() = %v, want an error naming %s and saying %q", err, certPath, tc.want)
			}
			if !bytes.Equal(servedCert(t, m).Certificate[0], second) {
				t.Error("a refused reload replaced the served certificate")
			}
			if !strings.Contains(log.String(), "reload refused") {
				t.Error("a refused reload is not logged")
			}
		})
	}
	for _, secret := range [][]byte{keyPEM, pemBlock("PRIVATE KEY", okder)} {
		if bytes.Contains([]byte(log.String()), bytes.TrimSpace(secret)) {
			t.Error("a private key reached the log")
		}
	}
	// Without a usable pair emberd does not start.
	if _, err := New(Options{Mode: ModeFiles, CertFile: certPath, KeyFile: keyPath}); err == nil {
		t.Error("New accepted a missing key")
	}
}

// TestHandshake serves the auto certificate on loopback: a client that
// trusts ca.pem connects; one that trusts another CA, or offers only TLS
// 1.1, does not.
func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	var log logBuf
	c := &clock{t: time.Now()}
	m, err := New(autoOptions(t, dir, c, &log))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	_, pool := readCA(t, dir)
	other := x509.NewCertPool()
	other.AddCert(newTestCA(t).cert)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"trusts ca.pem", &tls.Config{RootCAs: pool}, ""},
		{"trusts another CA", &tls.Config{RootCAs: other}, "certificate signed by unknown authority"},
		{"TLS 1.1 only", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, "protocol version"},
	} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), tc.cfg)
		if err == nil {
			conn.Close()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	ln.Close()
	<-done
}

func TestMachineNames(t *testing.T) {
	dns, ips := MachineNames()
	if !slices.Contains(dns, "localhost") {
		t.Errorf("dns %v lacks localhost", dns)
	}
	if h, err := os.Hostname(); err == nil && h != "" && !slices.Contains(dns, h) {
		t.Errorf("dns %v lacks the hostname %s", dns, h)
	}
	for _, want := range []string{"127.0.0.1", "::1"} {
		found := false
		for _, ip := range ips {
			found = found || ip.String() == want
		}
		if !found {
			t.Errorf("ips %v lack %s", ips, want)
		}
	}
	for _, ip := range ips {
		if ip.IsLinkLocalUnicast() {
			t.Errorf("ips %v hold link-local %s", ips, ip)
		}
	}
}
