// Package tlsconf gives emberd's REST and gRPC listeners their TLS
// certificate, in one of two ways:
//
//   - from PEM files (--tls-cert, --tls-key), re-read by Reload (SIGHUP) so
//     that a certificate rotates without a restart; a bad new pair is
//     refused and the served one stays;
//   - from a private CA that emberd makes for itself (--tls auto) under
//     DATA-DIR/tls: ca.pem, ca-key.pem (0600), server.pem (the server
//     certificate, then the CA) and server-key.pem (0600). The server
//     certificate names this machine (hostname, its non-loopback addresses,
//     localhost, 127.0.0.1, ::1) and is renewed before it expires, or when
//     the machine's names change, by Run.
//
// Either way the certificate is handed out by tls.Config.GetCertificate, so
// a new one is served from the next handshake on without touching the
// listeners.
package tlsconf

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The modes, as /healthz names them.
const (
	ModeOff   = "off"
	ModeAuto  = "auto"
	ModeFiles = "files"
)

// Files under the --tls auto directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// Lifetimes of what --tls auto makes.
const (
	// CAValidity: the CA is what clients are told to trust (its file or
	// its fingerprint), so it lasts long enough never to be a chore.
	CAValidity = 10 * 365 * 24 * time.Hour
	// ServerValidity and RenewBefore: the server certificate is short-lived
	// and renewed by emberd itself once less than RenewBefore is left, so
	// that a stopped emberd started again weeks later still renews in time.
	ServerValidity = 90 * 24 * time.Hour
	RenewBefore    = 30 * 24 * time.Hour
	// CheckEvery is how often Run looks at the served certificate.
	CheckEvery = 12 * time.Hour
	// backdate covers clocks a little behind this machine's.
	backdate = time.Hour
)

// SelectMode returns the mode the flags --tls (off or auto), --tls-cert and
// --tls-key choose, or why they do not fit together.
func SelectMode(tlsFlag, certFile, keyFile string) (string, error) {
	switch tlsFlag {
	case "", ModeOff, ModeAuto:
	default:
		return "", fmt.Errorf("--tls %q: must be off or auto (for your own certificate give --tls-cert and --tls-key)", tlsFlag)
	}
	switch {
	case certFile != "" && keyFile == "":
		return "", errors.New("--tls-cert needs --tls-key: give the certificate's private key file too")
	case keyFile != "" && certFile == "":
		return "", errors.New("--tls-key needs --tls-cert: give the certificate file too")
	case certFile != "" && tlsFlag == ModeAuto:
		return "", errors.New("--tls auto and --tls-cert/--tls-key exclude each other: auto makes its own CA and certificate under DATA-DIR/tls; give one or the other")
	case certFile != "":
		return ModeFiles, nil
	case tlsFlag == ModeAuto:
		return ModeAuto, nil
	}
	return ModeOff, nil
}

// Options configure a Manager.
type Options struct {
	// Mode is ModeAuto or ModeFiles.
	Mode string
	// CertFile and KeyFile are the PEM files of ModeFiles: the certificate
	// chain (leaf first) and its private key.
	CertFile, KeyFile string
	// Dir holds what ModeAuto makes (DATA-DIR/tls).
	Dir    string
	Logger *slog.Logger
	// Now is the clock (time.Now when nil): tests move it to see renewal.
	Now func() time.Time
	// Names lists the DNS names and addresses the server certificate must
	// carry; nil means MachineNames.
	Names func() (dns []string, ips []net.IP)
}

// Status is what /healthz shows of the served certificate.
type Status struct {
	Mode string
	// Fingerprint is the SHA-256 of the CA certificate's DER (auto), or
	// of the last certificate of the served chain (files), as 64
	// lowercase hex digits.
	Fingerprint string
	NotAfter    time.Time
}

// served is one certificate in service.
type served struct {
	cert        *tls.Certificate // Leaf set
	fingerprint string
}

// Manager holds the served certificate and replaces it (Reload, Run).
type Manager struct {
	o   Options
	log *slog.Logger
	cur atomic.Pointer[served]

	mu     sync.Mutex // serialises Reload and renewals
	ca     *x509.Certificate
	caKey  crypto.Signer
	caFile string
}

// New loads (ModeFiles) or loads and, where needed, makes (ModeAuto) the
// certificate to serve.
func New(o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Names == nil {
		o.Names = MachineNames
	}
	m := &Manager{o: o, log: o.Logger}
	switch o.Mode {
	case ModeFiles:
		s, err := m.loadFiles()
		if err != nil {
			return nil, err
		}
		m.cur.Store(s)
		m.log.Info("TLS: serving the certificate from --tls-cert", "cert_file", o.CertFile, "subject", s.cert.Leaf.Subject.String(),
			"not_after", s.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "fingerprint_sha256", s.fingerprint)
		if len(s.cert.Certificate) == 1 {
			m.log.Info("TLS: --tls-cert holds the server certificate alone: the fingerprint shown is the server certificate's and changes with it; append the issuing CA's certificate to pin a stable one")
		}
		m.check() // warns now if it expires soon
	case ModeAuto:
		if err := m.startAuto(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("tlsconf: mode %q: want %s or %s", o.Mode, ModeAuto, ModeFiles)
	}
	return m, nil
}

// TLSConfig returns a server configuration that serves the current
// certificate (TLS 1.2 at least). Callers may set NextProtos on it.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.cur.Load().cert, nil
		},
	}
}

// Status reports the served certificate.
func (m *Manager) Status() Status {
	s := m.cur.Load()
	return Status{Mode: m.o.Mode, Fingerprint: s.fingerprint, NotAfter: s.cert.Leaf.NotAfter}
}

// CAFile is the CA certificate clients should trust under ModeAuto, ""
// otherwise.
func (m *Manager) CAFile() string { return m.caFile }

// Reload re-reads --tls-cert and --tls-key (ModeFiles), or renews the
// server certificate if it is due (ModeAuto). A new pair that cannot be
// served is refused, logged with the reason, and the served one stays.
func (m *Manager) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.o.Mode == ModeAuto {
		return m.renewLocked()
	}
	s, err := m.loadFiles()
	if err != nil {
		m.log.Error("TLS: reload refused: still serving the previous certificate", "cert_file", m.o.CertFile, "key_file", m.o.KeyFile, "err", err)
		return err
	}
	old := m.cur.Swap(s)
	if bytes.Equal(old.cert.Certificate[0], s.cert.Certificate[0]) {
		m.log.Info("TLS: reloaded: the certificate is unchanged", "cert_file", m.o.CertFile)
		return nil
	}
	m.log.Info("TLS: reloaded: serving the new certificate", "cert_file", m.o.CertFile, "subject", s.cert.Leaf.Subject.String(),
		"not_after", s.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "fingerprint_sha256", s.fingerprint)
	return nil
}

// Run checks the served certificate every CheckEvery until ctx ends:
// under ModeAuto it renews it when due; under ModeFiles it warns while the
// certificate has less than RenewBefore left.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.check()
	}
}

func (m *Manager) check() {
	if m.o.Mode == ModeAuto {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.renewLocked() // logs its own failure
		return
	}
	leaf := m.cur.Load().cert.Leaf
	if left := leaf.NotAfter.Sub(m.o.Now()); left < RenewBefore {
		m.log.Warn("TLS: the --tls-cert certificate expires soon: replace the files and send SIGHUP (systemctl reload emberd)",
			"cert_file", m.o.CertFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Minute))
	}
}

// loadFiles reads and checks the --tls-cert/--tls-key pair.
func (m *Manager) loadFiles() (*served, error) {
	cert, err := tls.LoadX509KeyPair(m.o.CertFile, m.o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", m.o.CertFile, m.o.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: parse certificate: %w", m.o.CertFile, err)
		}
		cert.Leaf = leaf
	}
	now := m.o.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("--tls-cert %s: the certificate expired at %s", m.o.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("--tls-cert %s: the certificate is not valid before %s (is this machine's clock right?)", m.o.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &served{cert: &cert, fingerprint: Fingerprint(cert.Certificate[len(cert.Certificate)-1])}, nil
}

// Fingerprint is the SHA-256 of a certificate's DER as 64 lowercase hex
// digits.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// startAuto loads the CA (making one on first start) and the server
// certificate (making or renewing it when needed).
func (m *Manager) startAuto() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := m.o.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--tls auto: create %s: %w", dir, err)
	}
	m.caFile = filepath.Join(dir, CAFile)
	made, err := m.loadOrMakeCA()
	if err != nil {
		return err
	}
	if !made {
		if s, err := m.loadServer(); err != nil {
			m.log.Info("TLS: making a new server certificate", "reason", err.Error())
		} else {
			m.cur.Store(s)
		}
	}
	if err := m.renewLocked(); err != nil {
		return err
	}
	s := m.cur.Load()
	m.log.Info("TLS: serving a certificate from emberd's own CA: clients trust ca.pem, or pin its fingerprint",
		"ca_file", m.caFile, "ca_fingerprint_sha256", s.fingerprint, "ca_not_after", m.ca.NotAfter.UTC().Format(time.RFC3339),
		"server_not_after", s.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns", s.cert.Leaf.DNSNames, "ips", s.cert.Leaf.IPAddresses)
	return nil
}

// loadOrMakeCA loads ca.pem and ca-key.pem, or makes them when neither
// exists; made reports the latter.
func (m *Manager) loadOrMakeCA() (made bool, err error) {
	certPath, keyPath := m.caFile, filepath.Join(m.o.Dir, CAKeyFile)
	_, cErr := os.Stat(certPath)
	_, kErr := os.Stat(keyPath)
	switch {
	case errors.Is(cErr, fs.ErrNotExist) && errors.Is(kErr, fs.ErrNotExist):
		return true, m.makeCA(certPath, keyPath)
	case cErr != nil:
		return false, fmt.Errorf("--tls auto: CA certificate %s: %w (with %s present; move both aside to have a new CA made, which clients must then trust instead)", certPath, cErr, keyPath)
	case kErr != nil:
		return false, fmt.Errorf("--tls auto: CA key %s: %w (with %s present; move both aside to have a new CA made, which clients must then trust instead)", keyPath, kErr, certPath)
	}
	pair, err := loadPair(certPath, keyPath)
	if err != nil {
		return false, fmt.Errorf("--tls auto: CA: %w", err)
	}
	ca := pair.Leaf
	if !ca.IsCA {
		return false, fmt.Errorf("--tls auto: %s is not a CA certificate", certPath)
	}
	if now := m.o.Now(); now.After(ca.NotAfter) {
		return false, fmt.Errorf("--tls auto: the CA in %s expired at %s: move %s aside to have a new CA made, which clients must then trust instead",
			certPath, ca.NotAfter.UTC().Format(time.RFC3339), m.o.Dir)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return false, fmt.Errorf("--tls auto: CA key %s: not a signing key", keyPath)
	}
	m.ca, m.caKey = ca, signer
	return false, nil
}

func (m *Manager) makeCA(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("--tls auto: CA key: %w", err)
	}
	host, _ := os.Hostname()
	now := m.o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Ember CA " + host, Organization: []string{"Ember"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("--tls auto: make CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("--tls auto: parse CA certificate: %w", err)
	}
	// Key first: a crash between the two leaves a key without a
	// certificate, which the next start reports instead of silently
	// making a second CA.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	if err := writeAtomic(certPath, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return err
	}
	m.ca, m.caKey = ca, key
	m.log.Info("TLS: made a new CA for --tls auto", "ca_file", certPath, "ca_fingerprint_sha256", Fingerprint(der))
	return nil
}

// loadServer loads server.pem and server-key.pem and checks that the CA
// signed them.
func (m *Manager) loadServer() (*served, error) {
	pair, err := loadPair(filepath.Join(m.o.Dir, ServerFile), filepath.Join(m.o.Dir, ServerKeyFile))
	if err != nil {
		return nil, err
	}
	if err := pair.Leaf.CheckSignatureFrom(m.ca); err != nil {
		return nil, fmt.Errorf("%s is not signed by the CA in %s: %w", ServerFile, CAFile, err)
	}
	return &served{cert: pair, fingerprint: Fingerprint(m.ca.Raw)}, nil
}

// renewLocked makes a new server certificate when there is none, when it
// has less than RenewBefore left, or when it lacks one of the machine's
// names, and serves it. m.mu is held.
func (m *Manager) renewLocked() error {
	dns, ips := m.o.Names()
	now := m.o.Now()
	reason := ""
	if s := m.cur.Load(); s == nil {
		reason = "none yet"
	} else if left := s.cert.Leaf.NotAfter.Sub(now); left < RenewBefore {
		reason = fmt.Sprintf("expires at %s (%s left)", s.cert.Leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Minute))
	} else if missing := missingNames(s.cert.Leaf, dns, ips); len(missing) > 0 {
		reason = fmt.Sprintf("does not name %v", missing)
	}
	if reason == "" {
		return nil
	}
	s, err := m.issue(dns, ips)
	if err != nil {
		m.log.Error("TLS: could not renew the server certificate", "reason", reason, "err", err)
		return err
	}
	m.cur.Store(s)
	m.log.Info("TLS: new server certificate from emberd's CA", "reason", reason, "not_after", s.cert.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"dns", dns, "ips", ips)
	return nil
}

// issue makes, writes and returns a server certificate for the names.
func (m *Manager) issue(dns []string, ips []net.IP) (*served, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	now := m.o.Now()
	notAfter := now.Add(ServerValidity)
	if notAfter.After(m.ca.NotAfter) {
		notAfter = m.ca.NotAfter
	}
	cn := "localhost"
	if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Ember"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca, &key.PublicKey, m.caKey)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse server certificate: %w", err)
	}
	if err := writeKey(filepath.Join(m.o.Dir, ServerKeyFile), key); err != nil {
		return nil, err
	}
	chain := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", m.ca.Raw)...)
	if err := writeAtomic(filepath.Join(m.o.Dir, ServerFile), chain, 0o644); err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: [][]byte{der, m.ca.Raw}, PrivateKey: key, Leaf: leaf}
	return &served{cert: cert, fingerprint: Fingerprint(m.ca.Raw)}, nil
}

// missingNames lists the names a certificate should carry but does not.
func missingNames(leaf *x509.Certificate, dns []string, ips []net.IP) []string {
	var missing []string
	for _, d := range dns {
		if !slices.Contains(leaf.DNSNames, d) {
			missing = append(missing, d)
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			missing = append(missing, ip.String())
		}
	}
	return missing
}

// MachineNames are the names of this machine a client may dial: its
// hostname, localhost, its addresses other than loopback and link-local
// ones (those need a zone and change with the link), 127.0.0.1 and ::1.
func MachineNames() (dns []string, ips []net.IP) {
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	dns = append(dns, "localhost")
	ips = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	addrs, _ := net.InterfaceAddrs() // none is a fine answer: loopback still works
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipn.IP
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || slices.ContainsFunc(ips, ip.Equal) {
			continue
		}
		ips = append(ips, ip)
	}
	return dns, ips
}

// loadPair loads a certificate and its key, refusing a key file that group
// or others can read (emberd writes them 0600; a wider mode means someone
// changed it, and the key may have leaked).
func loadPair(certPath, keyPath string) (*tls.Certificate, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: group or others can read it; chmod 600 %s", keyPath, fi.Mode().Perm(), keyPath)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("%s / %s: %w", certPath, keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
	}
	return &cert, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key for %s: %w", path, err)
	}
	return writeAtomic(path, pemBlock("PRIVATE KEY", der), 0o600)
}

// writeAtomic writes data to path through a temporary file in the same
// directory, created with mode perm, synced and renamed over path.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// serial is a random 127-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand failed: " + err.Error()) // never, since Go 1.24
	}
	return n.Add(n, big.NewInt(1))
}
