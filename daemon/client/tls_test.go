package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a private CA made for one test, as emberd's --tls auto makes
// one under DATA-DIR/tls.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // ca.pem
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// leaf makes a server certificate signed by the CA for the given SANs,
// served with the CA after it, as emberd serves server.pem.
func (ca *testCA) leaf(t testing.TB, dnsNames []string, ips ...net.IP) tls.Certificate {
	t.Helper()
	return ca.leafUntil(t, time.Now().Add(24*time.Hour), dnsNames, ips...)
}

// leafUntil is leaf with a certificate valid until notAfter.
func (ca *testCA) leafUntil(t testing.TB, notAfter time.Time, dnsNames []string, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "emberd"},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// serveTLS starts a loopback TLS server with cert that records requests
// and answers /healthz.
func serveTLS(t testing.TB, cert tls.Certificate) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", reply(200, `{"status":"ok","uptimeSeconds":1}`))
	mux.HandleFunc("POST /v1/keys", reply(200, `{"id":"k-1","name":"ci","key":"s","scope":"read","endpoints":[]}`))
	srv := httptest.NewUnstartedServer(rec.wrap(mux))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, rec
}

func hostPort(srv *httptest.Server) string {
	return srv.Listener.Addr().String()
}

func fingerprintOf(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return Fingerprint(c)
}

// withColons writes a fingerprint as openssl does: "AB:CD:...".
func withColons(fp string) string {
	var parts []string
	for i := 0; i < len(fp); i += 2 {
		parts = append(parts, strings.ToUpper(fp[i:i+2]))
	}
	return strings.Join(parts, ":")
}

func TestTLSCAFile(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	cert := ca.leaf(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
	srv, _ := serveTLS(t, cert)
	ctx := context.Background()

	c, err := New("https://"+hostPort(srv), "k", WithCAFile(ca.file))
	if err != nil {
		t.Fatal(err)
	}
	if c.Connection() != nil {
		t.Errorf("Connection before any request = %+v, want nil", c.Connection())
	}
	if _, err := c.Healthz(ctx); err != nil {
		t.Fatalf("Healthz over TLS with the CA file: %v", err)
	}
	got := c.Connection()
	want := Connection{TLS: true, Version: "TLS 1.3", CAFingerprint: Fingerprint(ca.cert),
		LeafFingerprint: fingerprintOf(cert.Certificate[0]), VerifiedBy: "ca-file " + ca.file}
	if got == nil || *got != want {
		t.Errorf("Connection = %+v, want %+v", got, want)
	}

	// The system pool does not know the private CA.
	c, _ = New("https://"+hostPort(srv), "k")
	_, err = c.Healthz(ctx)
	var te *TLSError
	if !errors.As(err, &te) || !strings.HasPrefix(err.Error(), "the server's certificate is not signed by a CA this machine trusts (x509: ") {
		t.Errorf("without a CA file: %v", err)
	}
}

func TestTLSWrongCA(t *testing.T) {
	ca, other := newTestCA(t, "ember test CA"), newTestCA(t, "some other CA")
	srv, rec := serveTLS(t, ca.leaf(t, nil, net.IPv4(127, 0, 0, 1)))
	c, err := New("https://"+hostPort(srv), "secret-key", WithCAFile(other.file))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateKey(context.Background(), KeySpec{Name: "ci", Scope: ScopeRead})
	wantPrefix := "creating API key: the server's certificate is not signed by the CA in " + other.file + " (x509: "
	wantSuffix := "); pass --ca-file with DATA-DIR/tls/ca.pem from the server or pin it with --tls-fingerprint (the CA fingerprint emberd logs at start)"
	if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) || !strings.HasSuffix(err.Error(), wantSuffix) {
		t.Errorf("wrong CA: %v\nwant %s...%s", err, wantPrefix, wantSuffix)
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Errorf("wrong CA error does not wrap the verification error: %#v", err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("the server got %d requests (and the key) through a refused connection", n)
	}
}

func TestTLSHostnameMismatch(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	srv, _ := serveTLS(t, ca.leaf(t, []string{"ember.invalid"}))
	c, _ := New("https://"+hostPort(srv), "k", WithCAFile(ca.file))
	_, err := c.Healthz(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "the server's certificate is not valid for 127.0.0.1 (x509: ") ||
		!strings.Contains(err.Error(), "--tls-fingerprint") {
		t.Errorf("host name mismatch: %v", err)
	}
}

func TestTLSExpiredCertificate(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	srv, _ := serveTLS(t, ca.leafUntil(t, time.Now().Add(-time.Hour), nil, net.IPv4(127, 0, 0, 1)))
	c, _ := New("https://"+hostPort(srv), "k", WithCAFile(ca.file))
	_, err := c.Healthz(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "the server's certificate is expired or not yet valid (x509: certificate has expired") {
		t.Errorf("expired certificate: %v", err)
	}
}

func TestTLSFingerprint(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	// A certificate for another name: the pin replaces host name checks,
	// so the daemon is reached by an address its certificate lacks.
	cert := ca.leaf(t, []string{"ember.invalid"})
	srv, _ := serveTLS(t, cert)
	caFP, leafFP := Fingerprint(ca.cert), fingerprintOf(cert.Certificate[0])
	other := newTestCA(t, "some other CA")

	for _, tt := range []struct {
		name, pin string
		caFile    string
		wantErr   string
	}{
		{name: "CA, plain hex", pin: caFP},
		{name: "CA, openssl form", pin: "SHA256:" + withColons(caFP)},
		{name: "leaf", pin: "sha256:" + leafFP},
		{name: "pin beats a wrong CA file", pin: caFP, caFile: other.file},
		{name: "wrong", pin: Fingerprint(other.cert),
			wantErr: "the server's certificate does not match the pinned fingerprint: expected sha256 " + Fingerprint(other.cert) +
				", the server presented sha256 " + leafFP + " (certificate) and sha256 " + caFP + " (its CA); check the fingerprint emberd logs at start (ember status on the server shows it)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{WithFingerprint(tt.pin)}
			if tt.caFile != "" {
				opts = append(opts, WithCAFile(tt.caFile))
			}
			c, err := New("https://"+hostPort(srv), "k", opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Healthz(context.Background())
			if tt.wantErr != "" {
				var fe *FingerprintError
				if err == nil || err.Error() != tt.wantErr || !errors.As(err, &fe) {
					t.Errorf("err = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conn := c.Connection(); conn == nil || !conn.TLS || conn.VerifiedBy != "pin" || conn.CAFingerprint != caFP || conn.LeafFingerprint != leafFP {
				t.Errorf("Connection = %+v", conn)
			}
		})
	}
}

// TestTLSFingerprintForgedChain: a CA certificate is public, so a server
// that appends the pinned CA to a certificate of its own must be refused.
func TestTLSFingerprintForgedChain(t *testing.T) {
	ca, mallory := newTestCA(t, "ember test CA"), newTestCA(t, "mallory")
	forged := mallory.leaf(t, nil, net.IPv4(127, 0, 0, 1))
	forged.Certificate = [][]byte{forged.Certificate[0], ca.cert.Raw}
	srv, rec := serveTLS(t, forged)
	c, err := New("https://"+hostPort(srv), "secret-key", WithFingerprint(Fingerprint(ca.cert)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Healthz(context.Background())
	if err == nil || !strings.Contains(err.Error(), "carries the pinned certificate sha256 "+Fingerprint(ca.cert)+" but its certificate is not valid under it") {
		t.Errorf("forged chain: %v", err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("the forging server got %d requests", n)
	}
}

func TestTLSSchemeMismatch(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	tlsSrv, _ := serveTLS(t, ca.leaf(t, nil, net.IPv4(127, 0, 0, 1)))
	plain := httptest.NewServer(reply(200, `{"status":"ok"}`))
	t.Cleanup(plain.Close)
	ctx := context.Background()

	c, _ := New("http://"+hostPort(tlsSrv), "k")
	_, err := c.Healthz(ctx)
	want := "the daemon at http://" + hostPort(tlsSrv) + " serves TLS: use https://" + hostPort(tlsSrv) + " (--addr or EMBER_ADDR)"
	var se *SchemeError
	if err == nil || err.Error() != want || !errors.As(err, &se) || !se.ServesTLS {
		t.Errorf("plain HTTP to TLS: %v\nwant %s", err, want)
	}

	c, _ = New("https://"+hostPort(plain), "k", WithCAFile(ca.file))
	_, err = c.Healthz(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "the daemon at https://"+hostPort(plain)+" does not serve TLS (") ||
		!strings.HasSuffix(err.Error(), "use http://"+hostPort(plain)+", or start emberd with --tls auto") {
		t.Errorf("TLS to plain HTTP: %v", err)
	}

	c, _ = New(hostPort(plain), "k")
	if _, err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	if conn := c.Connection(); conn == nil || *conn != (Connection{}) {
		t.Errorf("plain Connection = %+v", conn)
	}
}

// TestSchemeAuto: an address without a scheme under SchemeAuto uses TLS
// when the daemon speaks it and plain HTTP when not, and the probe that
// finds out carries no key.
func TestSchemeAuto(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	tlsSrv, tlsRec := serveTLS(t, ca.leaf(t, nil, net.IPv4(127, 0, 0, 1)))
	rec := &recorder{}
	plain := httptest.NewServer(rec.wrap(reply(200, `{"status":"ok"}`)))
	t.Cleanup(plain.Close)
	ctx := context.Background()

	c, err := New(hostPort(tlsSrv), "secret-key", WithCAFile(ca.file), WithSchemeless(SchemeAuto))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, KeySpec{Name: "ci", Scope: ScopeRead}); err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "https://"+hostPort(tlsSrv) {
		t.Errorf("BaseURL = %s", c.BaseURL())
	}
	reqs := tlsRec.requests()
	if len(reqs) != 2 || reqs[0].Path != "/healthz" || reqs[0].Auth != "" || reqs[1].Path != "/v1/keys" || reqs[1].Auth != "Bearer secret-key" {
		t.Errorf("requests over TLS: %+v", reqs)
	}

	c, _ = New(hostPort(plain), "secret-key", WithCAFile(ca.file), WithSchemeless(SchemeAuto))
	if _, err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "http://"+hostPort(plain) {
		t.Errorf("BaseURL = %s", c.BaseURL())
	}
	if conn := c.Connection(); conn == nil || conn.TLS {
		t.Errorf("Connection = %+v", conn)
	}

	// A daemon that speaks TLS but fails verification is an error, never a
	// reason to fall back to plain HTTP.
	other := newTestCA(t, "some other CA")
	c, _ = New(hostPort(tlsSrv), "secret-key", WithCAFile(other.file), WithSchemeless(SchemeAuto))
	if _, err := c.Healthz(ctx); err == nil || !strings.Contains(err.Error(), "is not signed by the CA in "+other.file) {
		t.Errorf("auto with a wrong CA: %v", err)
	}
	if c.BaseURL() != "https://"+hostPort(tlsSrv) {
		t.Errorf("BaseURL after a refused handshake = %s", c.BaseURL())
	}

	// Without the option an address without a scheme stays plain HTTP.
	if c, _ := New(hostPort(tlsSrv), "k", WithCAFile(ca.file)); c.BaseURL() != "http://"+hostPort(tlsSrv) {
		t.Errorf("default scheme: %s", c.BaseURL())
	}
	if c, _ := New(hostPort(tlsSrv), "k", WithSchemeless(SchemeHTTPS)); c.BaseURL() != "https://"+hostPort(tlsSrv) {
		t.Errorf("SchemeHTTPS: %s", c.BaseURL())
	}
}

func TestTLSOptionErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	for _, tt := range []struct {
		opt     Option
		wantErr string
	}{
		{WithCAFile(filepath.Join(dir, "missing.pem")), "reading CA file: open " + filepath.Join(dir, "missing.pem") + ": no such file or directory"},
		{WithCAFile(notPEM), "CA file " + notPEM + " holds no PEM certificate"},
		{WithFingerprint("abcd"), `TLS fingerprint "abcd": want a SHA-256 fingerprint, 64 hex digits (colons and a sha256: prefix allowed), got 4 digits`},
	} {
		if _, err := New("https://127.0.0.1:1", "", tt.opt); err == nil || err.Error() != tt.wantErr {
			t.Errorf("err = %v, want %s", err, tt.wantErr)
		}
	}
}

func TestParseFingerprint(t *testing.T) {
	const fp = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	for _, tt := range []struct {
		in, want, wantErr string
	}{
		{in: fp, want: fp},
		{in: strings.ToUpper(fp), want: fp},
		{in: "sha256:" + fp, want: fp},
		{in: "SHA256:" + withColons(fp), want: fp},
		{in: "  " + withColons(fp) + "\n", want: fp},
		{in: "", wantErr: "got 0 digits"},
		{in: fp + "00", wantErr: "got 66 digits"},
		{in: "sha1:" + fp[:40], wantErr: "64 hex digits"},
		{in: strings.Repeat("zz", 32), wantErr: "invalid byte"},
	} {
		got, err := ParseFingerprint(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseFingerprint(%q) = %q, %v; want error with %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseFingerprint(%q) = %q, %v", tt.in, got, err)
		}
	}
}
