package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// Scheme says what an address given as HOST:PORT, without a scheme, means.
type Scheme int

const (
	// SchemeHTTP: plain HTTP, emberd's default. The zero value.
	SchemeHTTP Scheme = iota
	// SchemeHTTPS: TLS.
	SchemeHTTPS
	// SchemeAuto: TLS when the daemon speaks it, else plain HTTP. The
	// first request is preceded by a key-less GET /healthz over TLS; a
	// daemon that answers the handshake in plain HTTP makes the client
	// use http://. A daemon that does speak TLS but fails verification is
	// an error, never a reason to fall back.
	SchemeAuto
)

// tlsOptions are the TLS settings a Client is built with.
type tlsOptions struct {
	scheme  Scheme
	caFile  string
	pin     string // 64 lowercase hex digits
	pinErr  error  // a malformed fingerprint, reported by New
	enabled bool   // any TLS option was given
}

// WithCAFile makes the client trust the certificates in the PEM file path,
// and only them (not the system's CAs): emberd's private CA from
// DATA-DIR/tls/ca.pem, typically. New fails when the file cannot be read or
// holds no certificate.
func WithCAFile(path string) Option {
	return func(c *Client) {
		c.tls.caFile = path
		c.tls.enabled = true
	}
}

// WithFingerprint pins the server: the connection is accepted when a
// certificate of the chain the server presents has this SHA-256
// fingerprint (64 hex digits; colons, any case and a "sha256:" prefix are
// accepted) and, when that certificate is not the leaf, the leaf is signed
// through it. This replaces CA and host name verification, so that a
// daemon is reached by any address from a machine without its CA file.
// New fails on a malformed fingerprint.
func WithFingerprint(fp string) Option {
	return func(c *Client) {
		c.tls.pin, c.tls.pinErr = ParseFingerprint(fp)
		c.tls.enabled = true
	}
}

// WithSchemeless sets what an address without a scheme means; SchemeHTTP
// when not given.
func WithSchemeless(s Scheme) Option {
	return func(c *Client) { c.tls.scheme = s }
}

// ParseFingerprint normalises a SHA-256 fingerprint as people paste it
// ("sha256:AB:CD:...", "abcd...") to 64 lowercase hex digits.
func ParseFingerprint(s string) (string, error) {
	fp := strings.TrimSpace(s)
	if len(fp) >= 7 && strings.EqualFold(fp[:7], "sha256:") {
		fp = fp[7:]
	}
	fp = strings.ToLower(strings.ReplaceAll(fp, ":", ""))
	if len(fp) != 2*sha256.Size {
		return "", fmt.Errorf("TLS fingerprint %q: want a SHA-256 fingerprint, 64 hex digits (colons and a sha256: prefix allowed), got %d digits", s, len(fp))
	}
	if _, err := hex.DecodeString(fp); err != nil {
		return "", fmt.Errorf("TLS fingerprint %q: want a SHA-256 fingerprint, 64 hex digits: %w", s, err)
	}
	return fp, nil
}

// Fingerprint is the SHA-256 of a certificate's DER encoding as 64
// lowercase hex digits, the form emberd logs and /healthz reports.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// setupTLS builds the transport's TLS configuration from the options.
func (c *Client) setupTLS() error {
	o := &c.tls
	if !o.enabled {
		return nil
	}
	if o.pinErr != nil {
		return o.pinErr
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
	}
	if o.pin != "" {
		// The pin replaces the standard verification, which would need
		// the CA and a SAN matching the address dialled.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPin(o.pin, cs.PeerCertificates) }
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	var t *http.Transport
	switch rt := c.hc.Transport.(type) {
	case nil:
		t = defaultHTTPClient().Transport.(*http.Transport)
	case *http.Transport:
		t = rt.Clone()
	default:
		return fmt.Errorf("TLS options need an *http.Transport, the HTTP client has a %T", rt)
	}
	t.TLSClientConfig = cfg
	hc := *c.hc
	hc.Transport = t
	c.hc = &hc
	return nil
}

// verifyPin accepts a chain when one of its certificates has fingerprint
// pin. When that one is not the leaf it must have signed the leaf (through
// the chain's other certificates): a CA certificate is public, so a chain
// that merely carries it proves nothing.
func verifyPin(pin string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return &FingerprintError{Expected: pin}
	}
	for i, cert := range chain {
		if Fingerprint(cert) != pin {
			continue
		}
		if i == 0 {
			return nil // the handshake proved the server holds the leaf's key
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert)
		inter := x509.NewCertPool()
		for _, ic := range chain[1:i] {
			inter.AddCert(ic)
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("the server's certificate chain carries the pinned certificate sha256 %s but its certificate is not valid under it: %w", pin, err)
		}
		return nil
	}
	fe := &FingerprintError{Expected: pin, Leaf: Fingerprint(chain[0])}
	if len(chain) > 1 {
		fe.Last = Fingerprint(chain[len(chain)-1])
	}
	return fe
}

// FingerprintError is a server whose certificates do not match the pinned
// fingerprint.
type FingerprintError struct {
	// Expected is the pinned fingerprint; Leaf and Last those of the
	// server's certificate and of the last one of its chain (its CA, as
	// emberd serves it), Last empty when the chain is the leaf alone.
	Expected, Leaf, Last string
}

func (e *FingerprintError) Error() string {
	presented := "sha256 " + e.Leaf + " (certificate)"
	if e.Last != "" {
		presented += " and sha256 " + e.Last + " (its CA)"
	}
	if e.Leaf == "" {
		presented = "no certificate"
	}
	return fmt.Sprintf("the server's certificate does not match the pinned fingerprint: expected sha256 %s, the server presented %s; check the fingerprint emberd logs at start (ember status on the server shows it)", e.Expected, presented)
}

// TLSError is a TLS connection the client refused, with what to do about
// it.
type TLSError struct {
	msg string
	err error
}

func (e *TLSError) Error() string { return e.msg }
func (e *TLSError) Unwrap() error { return e.err }

// SchemeError is a daemon spoken to in the wrong scheme: plain HTTP to a
// TLS listener (ServesTLS) or TLS to a plain one.
type SchemeError struct {
	// URL is the scheme and host that was used.
	URL       string
	ServesTLS bool
	err       error
}

func (e *SchemeError) Error() string {
	host := e.URL[strings.Index(e.URL, "://")+3:]
	if e.ServesTLS {
		return fmt.Sprintf("the daemon at %s serves TLS: use https://%s (--addr or EMBER_ADDR)", e.URL, host)
	}
	reason := e.err
	var ue *url.Error
	if errors.As(reason, &ue) {
		reason = ue.Err // the URL is already in the message
	}
	return fmt.Sprintf("the daemon at %s does not serve TLS (%v): use http://%s, or start emberd with --tls auto", e.URL, reason, host)
}

func (e *SchemeError) Unwrap() error { return e.err }

// isPlainToTLSAnswer recognises Go's TLS server answering a plain HTTP
// request (crypto/tls's listener in net/http writes this fixed reply).
func isPlainToTLSAnswer(status int, body []byte) bool {
	return status == http.StatusBadRequest && strings.Contains(string(body), "Client sent an HTTP request to an HTTPS server")
}

// notTLS reports whether err is a TLS handshake answered by something that
// does not speak TLS (net/http names a plain HTTP answer
// ErrSchemeMismatch).
func notTLS(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &rhe)
}

// explainTLS turns certificate and protocol failures into messages that
// say what to do; other errors pass unchanged.
func (c *Client) explainTLS(host string, err error) error {
	if notTLS(err) {
		return &SchemeError{URL: "https://" + host, err: err}
	}
	var fe *FingerprintError
	if errors.As(err, &fe) {
		return &TLSError{msg: fe.Error(), err: err}
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		return err
	}
	reason := cve.Err
	pinHint := "pin it with --tls-fingerprint (the CA fingerprint emberd logs at start)"
	var hn x509.HostnameError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(reason, &inv) && inv.Reason == x509.Expired:
		return &TLSError{
			msg: fmt.Sprintf("the server's certificate is expired or not yet valid (%v); check the clocks, and renew it (emberd --tls auto renews its own before expiry)", reason),
			err: err,
		}
	case errors.As(reason, &hn):
		return &TLSError{
			msg: fmt.Sprintf("the server's certificate is not valid for %s (%v); connect by a name or address in the certificate, or %s", hn.Host, reason, pinHint),
			err: err,
		}
	case c.tls.caFile != "":
		return &TLSError{
			msg: fmt.Sprintf("the server's certificate is not signed by the CA in %s (%v); pass --ca-file with DATA-DIR/tls/ca.pem from the server or %s", c.tls.caFile, reason, pinHint),
			err: err,
		}
	}
	return &TLSError{
		msg: fmt.Sprintf("the server's certificate is not signed by a CA this machine trusts (%v); pass --ca-file with DATA-DIR/tls/ca.pem from the server or %s", reason, pinHint),
		err: err,
	}
}

// resolveScheme finds out, once, whether a daemon addressed without a
// scheme under SchemeAuto speaks TLS. The probe carries no key, so nothing
// secret goes out before the scheme is known.
func (c *Client) resolveScheme(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resolved {
		return nil
	}
	u := *c.base
	u.Path, u.RawPath = u.Path+"/healthz", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("building TLS probe: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if notTLS(err) {
			c.base.Scheme = "http"
			c.resolved = true
			return nil
		}
		return c.explainTLS(u.Host, err)
	}
	resp.Body.Close()
	c.resolved = true
	return nil
}

// Connection is what the client's last request went over.
type Connection struct {
	// TLS is false for plain HTTP; the other fields are then empty.
	TLS bool `json:"tls"`
	// Version is "TLS 1.3", say.
	Version string `json:"version,omitempty"`
	// CAFingerprint is the SHA-256 of the last certificate of the chain:
	// the CA that verified it, or the last one the server presented.
	CAFingerprint string `json:"caFingerprint,omitempty"`
	// LeafFingerprint is the SHA-256 of the server's own certificate.
	LeafFingerprint string `json:"leafFingerprint,omitempty"`
	// VerifiedBy says how the server was checked: "pin", "ca-file FILE"
	// or "system CAs".
	VerifiedBy string `json:"verifiedBy,omitempty"`
}

// Connection describes the connection of the last answered request; nil
// before the first.
func (c *Client) Connection() *Connection {
	c.mu.Lock()
	cs, answered := c.conn, c.answered
	c.mu.Unlock()
	if !answered {
		return nil
	}
	if cs == nil {
		return &Connection{}
	}
	conn := &Connection{TLS: true, Version: tls.VersionName(cs.Version)}
	if len(cs.PeerCertificates) > 0 {
		conn.LeafFingerprint = Fingerprint(cs.PeerCertificates[0])
		conn.CAFingerprint = Fingerprint(cs.PeerCertificates[len(cs.PeerCertificates)-1])
	}
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		chain := cs.VerifiedChains[0]
		conn.CAFingerprint = Fingerprint(chain[len(chain)-1])
	}
	switch {
	case c.tls.pin != "":
		conn.VerifiedBy = "pin"
	case c.tls.caFile != "":
		conn.VerifiedBy = "ca-file " + c.tls.caFile
	default:
		conn.VerifiedBy = "system CAs"
	}
	return conn
}
