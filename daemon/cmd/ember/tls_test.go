package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a private CA, as emberd's --tls auto makes under DATA-DIR/tls.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // ca.pem
	fp   string // SHA-256 of the DER, 64 lowercase hex
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file, fp: sha256Hex(der)}
}

func sha256Hex(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// leaf makes a server certificate for the SANs, served with the CA after
// it as emberd serves DATA-DIR/tls/server.pem.
func (ca *testCA) leaf(t *testing.T, dnsNames []string, ips ...net.IP) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "emberd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dnsNames, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// startTLSFake starts the fake daemon on TLS with cert, reporting --tls auto
// with ca's fingerprint on /healthz.
func startTLSFake(t *testing.T, ca *testCA, cert *tls.Certificate) *fakeDaemon {
	t.Helper()
	fd := startFakeDaemon(t, cert, seedEndpoints...)
	fd.healthzTLS = fmt.Sprintf(`"tls":{"enabled":true,"mode":"auto","caFingerprint":%q,"certNotAfter":"2027-06-03T09:00:00Z"},"insecureListen":false`, ca.fp)
	return fd
}

// opensslForm writes a fingerprint as `openssl x509 -fingerprint -sha256`
// does: "sha256 Fingerprint=AB:CD:..." without the label.
func opensslForm(fp string) string {
	var parts []string
	for i := 0; i < len(fp); i += 2 {
		parts = append(parts, strings.ToUpper(fp[i:i+2]))
	}
	return strings.Join(parts, ":")
}

// TestTLSFlags covers --ca-file, --tls-fingerprint, their variables, the
// default CA file and what an address without a scheme means.
func TestTLSFlags(t *testing.T) {
	ca, other := newTestCA(t, "ember test CA"), newTestCA(t, "some other CA")
	cert := ca.leaf(t, []string{"localhost"}, net.IPv4(127, 0, 0, 1))
	leafFP := sha256Hex(cert.Certificate[0])
	tlsFD := startTLSFake(t, ca, cert)
	// A certificate without the address dialled: only a pin reaches it.
	farFD := startTLSFake(t, ca, ca.leaf(t, []string{"ember.invalid"}))
	plainFD := newFakeDaemon(t, seedEndpoints...)
	missing := filepath.Join(t.TempDir(), "missing.pem")

	viaCA := "Connection:   TLS 1.3, CA sha256 " + ca.fp + ", verified with " + ca.file + "\n"
	viaPin := "Connection:   TLS 1.3, CA sha256 " + ca.fp + ", pinned with --tls-fingerprint\n"
	serverTLS := "TLS:          auto, CA sha256 " + ca.fp + ", certificate valid until 2027-06-03 09:00\n"
	plain := "Connection:   plain HTTP (not encrypted)\n"

	tests := []struct {
		name      string
		fd        *fakeDaemon
		addr      string // EMBER_ADDR; fd's HOST:PORT when empty
		env       map[string]string
		args      []string
		defaultCA string
		// wantOut are lines of stdout; wantErr is stderr, %s replaced by
		// fd's HOST:PORT (code 1 when set).
		wantOut []string
		wantErr string
		// wantPrefix: stderr starts with it (and the code is 1).
		wantPrefix string
	}{
		{name: "ca flag, no scheme", fd: tlsFD, args: []string{"--ca-file", ca.file}, wantOut: []string{"Daemon:       0.1.0-test at https://", viaCA, serverTLS}},
		{name: "ca env", fd: tlsFD, env: map[string]string{"EMBER_CA_FILE": ca.file}, wantOut: []string{viaCA}},
		{name: "ca flag beats env", fd: tlsFD, env: map[string]string{"EMBER_CA_FILE": other.file}, args: []string{"--ca-file", ca.file}, wantOut: []string{viaCA}},
		{name: "default ca file, TLS daemon", fd: tlsFD, defaultCA: ca.file, wantOut: []string{"at https://", viaCA, serverTLS}},
		{name: "default ca file, https url", fd: tlsFD, addr: "https://" + tlsFD.addr, defaultCA: ca.file, wantOut: []string{viaCA}},
		{name: "default ca file, plain daemon", fd: plainFD, defaultCA: ca.file, wantOut: []string{"at http://", plain, "TLS:          off\n"}},
		{name: "pin flag, openssl form", fd: farFD, args: []string{"--tls-fingerprint", "SHA256:" + opensslForm(ca.fp)}, wantOut: []string{viaPin, serverTLS}},
		{name: "pin env", fd: farFD, env: map[string]string{"EMBER_TLS_FINGERPRINT": ca.fp}, wantOut: []string{viaPin}},
		{name: "pin flag beats env", fd: farFD, env: map[string]string{"EMBER_TLS_FINGERPRINT": other.fp}, args: []string{"--tls-fingerprint", "sha256:" + ca.fp}, wantOut: []string{viaPin}},
		{name: "pin beats the default ca file", fd: farFD, defaultCA: other.file, args: []string{"--tls-fingerprint", ca.fp}, wantOut: []string{viaPin}},
		{name: "wrong ca", fd: tlsFD, args: []string{"--ca-file", other.file},
			wantPrefix: "ember: the server's certificate is not signed by the CA in " + other.file + " (x509: "},
		{name: "ca file, address not in the certificate", fd: farFD, args: []string{"--ca-file", ca.file},
			wantPrefix: "ember: the server's certificate is not valid for 127.0.0.1 (x509: "},
		{name: "wrong pin", fd: tlsFD, args: []string{"--tls-fingerprint", other.fp},
			wantErr: "ember: the server's certificate does not match the pinned fingerprint: expected sha256 " + other.fp +
				", the server presented sha256 " + leafFP + " (certificate) and sha256 " + ca.fp + " (its CA); check the fingerprint emberd logs at start (ember status on the server shows it)\n"},
		{name: "malformed pin", fd: tlsFD, env: map[string]string{"EMBER_TLS_FINGERPRINT": "ab:cd"},
			wantErr: "ember: --tls-fingerprint: TLS fingerprint \"ab:cd\": want a SHA-256 fingerprint, 64 hex digits (colons and a sha256: prefix allowed), got 4 digits\n"},
		{name: "missing ca file", fd: tlsFD, args: []string{"--ca-file", missing},
			wantErr: "ember: cannot read CA file " + missing + " (--ca-file or EMBER_CA_FILE): no such file or directory; copy DATA-DIR/tls/ca.pem from the daemon's machine, or pin the daemon with --tls-fingerprint\n"},
		{name: "TLS options with an http url", fd: tlsFD, addr: "http://" + tlsFD.addr, args: []string{"--ca-file", ca.file},
			wantErr: "ember: --addr http://%s is plain HTTP, but --ca-file or --tls-fingerprint (or EMBER_CA_FILE, EMBER_TLS_FINGERPRINT) asks for TLS: use https://%[1]s, or drop them\n"},
		{name: "plain HTTP to TLS", fd: tlsFD,
			wantErr: "ember: the daemon at http://%s serves TLS: use https://%[1]s (--addr or EMBER_ADDR)\n"},
		{name: "empty ca flag: the system's CAs", fd: tlsFD, defaultCA: ca.file, args: []string{"--ca-file", ""},
			wantPrefix: "ember: the server's certificate is not signed by a CA this machine trusts (x509: "},
		{name: "https url, no CA", fd: tlsFD, addr: "https://" + tlsFD.addr,
			wantPrefix: "ember: the server's certificate is not signed by a CA this machine trusts (x509: "},
		{name: "TLS to plain HTTP", fd: plainFD, args: []string{"--ca-file", ca.file},
			wantErr: "ember: the daemon at https://%s does not serve TLS (http: server gave HTTP response to HTTPS client): use http://%[1]s, or start emberd with --tls auto\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"EMBER_ADDR": tt.fd.addr, "EMBER_API_KEY": testKey}
			if tt.addr != "" {
				env["EMBER_ADDR"] = tt.addr
			}
			for k, v := range tt.env {
				env[k] = v
			}
			before := len(tt.fd.requests())
			r := runEmber(t, "", invocation{args: append(tt.args, "status"), env: env, defaultCAFile: tt.defaultCA})
			switch {
			case tt.wantErr != "":
				want := tt.wantErr
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, tt.fd.addr)
				}
				if r.code != 1 || r.stderr != want {
					t.Errorf("code %d, stderr:\n%s\nwant:\n%s", r.code, r.stderr, want)
				}
			case tt.wantPrefix != "":
				if r.code != 1 || !strings.HasPrefix(r.stderr, tt.wantPrefix) || !strings.Contains(r.stderr, "--tls-fingerprint") {
					t.Errorf("code %d, stderr:\n%s\nwant a start of:\n%s", r.code, r.stderr, tt.wantPrefix)
				}
			default:
				if r.code != 0 {
					t.Fatalf("code %d, stderr:\n%s", r.code, r.stderr)
				}
				for _, w := range tt.wantOut {
					if !strings.Contains(r.stdout, w) {
						t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
					}
				}
			}
			if r.code != 0 && tt.fd != plainFD {
				// A refused connection carries no request, so no key.
				if reqs := tt.fd.requests()[before:]; len(reqs) != 0 {
					t.Errorf("the daemon got %d requests through a refused connection: %+v", len(reqs), reqs)
				}
			}
		})
	}
}

// TestStatusTLSGolden pins the TLS lines of "ember status", table and JSON.
func TestStatusTLSGolden(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	cert := ca.leaf(t, nil, net.IPv4(127, 0, 0, 1))
	fd := startTLSFake(t, ca, cert)
	repl := []string{fd.addr, "ADDR", ca.fp, "CAFP", sha256Hex(cert.Certificate[0]), "LEAFFP", ca.file, "CAFILE"}
	env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}
	golden(t, "status_tls", runEmber(t, "", invocation{args: []string{"status", "--ca-file", ca.file}, env: env}), repl...)
	golden(t, "status_tls_json", runEmber(t, "", invocation{args: []string{"status", "--json", "--tls-fingerprint", ca.fp}, env: env}), repl...)
}

// TestKeysOverTLS: key create, list and rotate-admin work over a pinned
// connection, with the key sent only through it.
func TestKeysOverTLS(t *testing.T) {
	ca := newTestCA(t, "ember test CA")
	fd := startTLSFake(t, ca, ca.leaf(t, []string{"ember.invalid"}))
	env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey, "EMBER_TLS_FINGERPRINT": ca.fp}
	for _, args := range [][]string{
		{"key", "create", "app", "--scope", "invoke", "--endpoint", "echo"},
		{"key", "list"},
		{"key", "rotate-admin", "--json"},
	} {
		if r := runEmber(t, "", invocation{args: args, env: env}); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	// The old admin key no longer works; the rotated one does.
	r := runEmber(t, "", invocation{args: []string{"key", "list"}, env: env})
	if r.code != 1 || !strings.Contains(r.stderr, "the daemon refused the API key in EMBER_API_KEY") {
		t.Errorf("old admin key after rotate-admin: %+v", r)
	}
	env["EMBER_API_KEY"] = rotatedAdminKey
	if r := runEmber(t, "", invocation{args: []string{"key", "list"}, env: env}); r.code != 0 || !strings.Contains(r.stdout, "k-000000000001  app   invoke  ep-a1") {
		t.Errorf("rotated admin key: %+v", r)
	}
}

// TestExpiredKeyMessage: a 401 for an expired key says when it expired.
func TestExpiredKeyMessage(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.keys = []fakeKey{{id: "k-7d7d7d7d7d7d", name: "demo", createdAt: "2025-05-01T09:00:00Z", secret: "ember_demo_secret",
		scope: "read", expiresAt: "2025-06-01T09:00:00Z"}}
	r := runEmber(t, fd.addr, invocation{args: []string{"endpoint", "list"}, env: map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": "ember_demo_secret"}})
	want := "ember: the daemon refused the API key in EMBER_API_KEY (k-7d7d7d7d7d7d): it expired at 2025-06-01 09:00; ask an admin for a new one (ember key create NAME --scope ... --expires ...)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("code %d, stderr:\n%s\nwant:\n%s", r.code, r.stderr, want)
	}
	if strings.Contains(r.stderr, "ember_demo_secret") {
		t.Errorf("the message shows the key")
	}
}
