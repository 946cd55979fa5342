package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Retries of one registry request (a manifest or a blob, each on its own).
const (
	// pullAttempts is how many times a request is tried in all.
	pullAttempts = 4
	// pullRetryBase is the wait before the second attempt; it doubles
	// before each next one (0.5 s, 1 s, 2 s).
	pullRetryBase = 500 * time.Millisecond
	// pullRetryMax caps a wait, a registry's Retry-After included.
	pullRetryMax = 30 * time.Second
	// pullHeaderTimeout bounds the wait for a response's headers; the
	// body may take as long as it streams.
	pullHeaderTimeout = time.Minute
)

// ErrRegistryUnavailable is wrapped by a pull's error when a registry
// request failed transiently (connection error, timeout, 429 or 5xx) on
// every attempt: the registry, not the request, is at fault.
var ErrRegistryUnavailable = errors.New("registry unavailable")

// exhaustedError is the last transient failure of a request that was
// tried pullAttempts times.
type exhaustedError struct{ err error }

func (e *exhaustedError) Error() string   { return e.err.Error() }
func (e *exhaustedError) Unwrap() []error { return []error{e.err, ErrRegistryUnavailable} }

// transientError is a failure worth another attempt: a connection error
// or timeout, 429 Too Many Requests or a 5xx answer.
type transientError struct {
	err        error
	retryAfter time.Duration // the registry's Retry-After; 0: none
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// transientIf marks err transient when it is a network failure: a
// refused, reset or cut connection, or a timeout.
func transientIf(err error, retryAfter time.Duration) error {
	if isTransientNet(err) {
		return &transientError{err: err, retryAfter: retryAfter}
	}
	return err
}

func isTransientNet(err error) bool {
	if errors.Is(err, context.Canceled) || isCertError(err) || isTLSAlert(err) {
		return false
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // url.Error is itself a net.Error: look inside
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

func isTransientStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// isCertError reports a TLS certificate the client does not trust: no
// retry mends it.
func isCertError(err error) bool {
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// isTLSAlert reports a TLS alert from the registry (a refused or missing
// client certificate, a protocol mismatch): no retry mends it.
func isTLSAlert(err error) bool {
	var oe *net.OpError
	var ae tls.AlertError
	return (errors.As(err, &oe) && oe.Op == "remote error") || errors.As(err, &ae)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// retry runs fn until it succeeds, fails with an error that is not a
// transientError, or has been tried pullAttempts times, waiting between
// attempts: exponential backoff, or the registry's Retry-After if longer,
// at most pullRetryMax. Each retry is logged with its attempt number;
// the final error says how many attempts were made.
func (c *registryClient) retry(ctx context.Context, what string, fn func() error) error {
	base := cmpOr(c.opts.retryBase, pullRetryBase)
	for attempt := 1; ; attempt++ {
		err := fn()
		var te *transientError
		if err == nil || !errors.As(err, &te) || ctx.Err() != nil {
			return err
		}
		if attempt == pullAttempts {
			return fmt.Errorf("%s: failed after %d attempts: %w", what, pullAttempts, &exhaustedError{err})
		}
		wait := retryWait(base, attempt, te.retryAfter)
		c.log.Warn("registry request failed, retrying", "registry", c.ref.host, "repository", c.ref.repo, "what", what,
			"attempt", attempt, "attempts", pullAttempts, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: stopped after %d attempts (%w): %w", what, attempt, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// retryWait is the wait after failed attempt number attempt (from 1):
// base doubled per attempt, or the registry's Retry-After if longer, at
// most pullRetryMax.
func retryWait(base time.Duration, attempt int, retryAfter time.Duration) time.Duration {
	return min(max(base<<(attempt-1), retryAfter), pullRetryMax)
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// registryTLS builds the TLS configuration for host from certsDir/host,
// laid out as docker and containerd do: every *.crt is a PEM CA trusted
// besides the system's roots; every *.cert is a client certificate whose
// key is the *.key of the same name. A missing folder is the system's
// roots alone.
func registryTLS(certsDir, host string) (*tls.Config, error) {
	dir := filepath.Join(certsDir, host)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the certs.d folder of registry %s: %w", host, err)
	}
	cfg := &tls.Config{}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch filepath.Ext(name) {
		case ".crt":
			pem, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("registry %s CA: %w", host, err)
			}
			if cfg.RootCAs == nil {
				if cfg.RootCAs, err = x509.SystemCertPool(); err != nil || cfg.RootCAs == nil {
					cfg.RootCAs = x509.NewCertPool()
				}
			}
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry %s CA %s: no PEM certificate in it", host, path)
			}
		case ".cert":
			keyPath := strings.TrimSuffix(path, ".cert") + ".key"
			pair, err := tls.LoadX509KeyPair(path, keyPath)
			if err != nil {
				return nil, fmt.Errorf("registry %s client certificate %s with key %s: %w", host, path, keyPath, err)
			}
			cfg.Certificates = append(cfg.Certificates, pair)
		case ".key":
			if _, err := os.Stat(strings.TrimSuffix(path, ".key") + ".cert"); err != nil {
				return nil, fmt.Errorf("registry %s: key %s has no certificate %s beside it", host, path, strings.TrimSuffix(name, ".key")+".cert")
			}
		}
	}
	return cfg, nil
}

// dockerHubHosts are the names docker files Docker Hub's credentials
// under; any one of them matches the others.
var dockerHubHosts = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

// authKeyHost reduces a config.json "auths" key to its host[:port], as
// docker does: "https://index.docker.io/v1/" is "index.docker.io".
func authKeyHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	return strings.ToLower(key)
}

// lookupAuth finds host's credentials in a docker config.json: an "auths"
// entry whose key names host ("auth": base64 of user:password, or
// "username" and "password"). ok is false when there is none.
func lookupAuth(file, host string) (user, pass string, ok bool, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", false, fmt.Errorf("registry auth file (emberd --registry-auth-file): %w", err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
		CredsStore  string            `json:"credsStore"`
		CredHelpers map[string]string `json:"credHelpers"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		// The decoder's message quotes no file content beyond a byte offset.
		return "", "", false, fmt.Errorf("registry auth file %s is not a docker config.json: %w", file, err)
	}
	host = strings.ToLower(host)
	for key, a := range cfg.Auths {
		kh := authKeyHost(key)
		if kh != host && !(dockerHubHosts[kh] && dockerHubHosts[host]) {
			continue
		}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Auth))
			if err != nil {
				return "", "", false, fmt.Errorf("registry auth file %s: the \"auth\" of %q is not base64", file, key)
			}
			u, p, found := strings.Cut(string(dec), ":")
			if !found || u == "" {
				return "", "", false, fmt.Errorf("registry auth file %s: the \"auth\" of %q is not base64 of USER:PASSWORD", file, key)
			}
			return u, p, true, nil
		}
		if a.Username != "" {
			return a.Username, a.Password, true, nil
		}
	}
	// emberd runs no docker-credential-* programs: an appliance's
	// credentials are the file's own.
	for key, helper := range cfg.CredHelpers {
		if authKeyHost(key) == host {
			return "", "", false, fmt.Errorf("registry auth file %s sends %s to the credential helper %q, which emberd does not run: give the credentials in \"auths\"", file, host, helper)
		}
	}
	if cfg.CredsStore != "" {
		return "", "", false, fmt.Errorf("registry auth file %s has no \"auths\" entry for %s, and its credsStore %q is not run by emberd: give the credentials in \"auths\"", file, host, cfg.CredsStore)
	}
	return "", "", false, nil
}

// credsSource names where refused credentials came from, for errors.
func (c *registryClient) credsSource() string {
	if c.credsFrom == "" {
		return ""
	}
	return " (from the auth file " + c.credsFrom + ")"
}

// noCredsHint says where credentials could be given.
func (c *registryClient) noCredsHint() string {
	if c.opts.AuthFile != "" {
		return fmt.Sprintf(": the auth file %s has no entry for %s", c.opts.AuthFile, c.ref.host)
	}
	return ""
}
