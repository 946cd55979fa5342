// Package client is a small REST client for emberd, the Ember daemon.
//
// It exists so that the ember CLI, integration tests and other tools talk to
// the daemon through one implementation of its HTTP contract: the admin API
// under /v1 (served through grpc-gateway) and the RunPod-Serverless-compatible
// job API under /v2. It deliberately depends on nothing but the standard
// library and package runpod (the wire contract, itself standard library
// only), so that anything in the module can import it cheaply.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultAddr is where emberd listens unless configured otherwise.
const DefaultAddr = "127.0.0.1:7080"

// maxResponseBytes bounds how much of a response body is read, so that a
// misbehaving server cannot make the client allocate without limit. Job
// outputs can legitimately be large, hence the generous bound.
const maxResponseBytes = 256 << 20

// Client talks to one emberd instance. It is safe for concurrent use.
type Client struct {
	base         *url.URL
	apiKey       string
	hc           *http.Client
	userAgent    string
	pollInterval time.Duration

	// tls holds the TLS options; see tls.go.
	tls tlsOptions

	// mu guards what the client learns as it goes: the scheme of an
	// address given without one (resolved on the first request when
	// tls.scheme is SchemeAuto) and the last connection's TLS state.
	mu       sync.Mutex
	resolved bool
	answered bool
	conn     *tls.ConnectionState
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client. It must not set a Timeout shorter
// than the long-poll waits used by RunSync and StatusSync; bound requests
// with the context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithUserAgent sets the User-Agent header, so the daemon's logs show which
// tool made a request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// WithPollInterval sets the shortest gap between two status polls in Run.
// Polls are long-polls, so the gap only matters when the daemon answers
// early; it keeps a daemon that does not honour the wait parameter from being
// hammered. Tests lower it to stay fast.
func WithPollInterval(d time.Duration) Option {
	return func(c *Client) { c.pollInterval = d }
}

// New returns a client for the daemon at addr, which is either HOST:PORT
// or a full http:// or https:// URL. HOST:PORT means plain HTTP, as emberd
// serves by default, unless WithSchemeless says otherwise. apiKey is sent as
// a Bearer token when it is not empty.
func New(addr, apiKey string, opts ...Option) (*Client, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	c := &Client{
		apiKey:       apiKey,
		hc:           defaultHTTPClient(),
		userAgent:    "ember-client",
		pollInterval: 250 * time.Millisecond,
		resolved:     true,
	}
	for _, o := range opts {
		o(c)
	}
	raw := addr
	if !strings.Contains(raw, "://") {
		switch c.tls.scheme {
		case SchemeHTTPS:
			raw = "https://" + raw
		case SchemeAuto:
			// Try TLS first: a handshake sends nothing secret, and a
			// daemon that answers it in plain HTTP is told apart on the
			// first request (resolveScheme).
			raw = "https://" + raw
			c.resolved = false
		default:
			raw = "http://" + raw
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid daemon address %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid daemon address %q: scheme must be http or https", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid daemon address %q: want HOST:PORT", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	c.base = u
	if err := c.setupTLS(); err != nil {
		return nil, err
	}
	return c, nil
}

// defaultHTTPClient has no overall timeout because runsync and status-sync
// are long-polls; callers bound requests with contexts. Dialing is bounded so
// that an unroutable address fails fast instead of hanging.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: t}
}

// BaseURL returns the daemon's base URL, for messages. For an address given
// without a scheme under SchemeAuto it is https:// until the first request
// has found out which scheme the daemon speaks.
func (c *Client) BaseURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.String()
}

// APIError is a non-2xx answer from the daemon.
type APIError struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// Code is the gRPC status code from grpc-gateway style bodies on /v1
	// routes; 0 when the body did not carry one.
	Code int
	// Message is the daemon's explanation, or the HTTP status text when the
	// body carried none.
	Message string
	// Method and Path identify the request, for debugging.
	Method, Path string
	// Reason is the daemon's machine-readable cause of a 401 or 429
	// ("missing_key", "wrong_key", "expired", "rate", "concurrency");
	// empty when the body did not carry one.
	Reason string
	// KeyID names the key refused (401 and 403), when the daemon knows it.
	KeyID string
	// NeededScope is the scope a 403 says the route needs.
	NeededScope string
	// ExpiresAt is when an expired key expired (RFC 3339).
	ExpiresAt string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	}
	return e.Message
}

// gRPC codes that grpc-gateway puts in /v1 error bodies and that callers
// branch on. Spelled out here to avoid importing grpc for two constants.
const (
	grpcInvalidArgument  = 3
	grpcNotFound         = 5
	grpcPermissionDenied = 7
	grpcUnauthenticated  = 16
)

// IsNotFound reports whether err is the daemon saying the object does not
// exist.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == http.StatusNotFound || ae.Code == grpcNotFound)
}

// IsUnauthorized reports whether err is the daemon rejecting the API key.
func IsUnauthorized(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == http.StatusUnauthorized || ae.Code == grpcUnauthenticated)
}

// IsForbidden reports whether err is the daemon refusing a valid key that
// lacks the scope or endpoint a route needs.
func IsForbidden(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == http.StatusForbidden || ae.Code == grpcPermissionDenied)
}

// isBadRequest reports whether err is the daemon rejecting an argument, which
// GetEndpoint returns when a name is not shaped like an ID.
func isBadRequest(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == http.StatusBadRequest || ae.Code == grpcInvalidArgument)
}

// do sends one request and decodes a 2xx JSON answer into out (when out is
// not nil). It returns the raw body as well, because the CLI prints the
// daemon's own JSON rather than a re-encoding that would drop unknown fields.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) ([]byte, error) {
	if body == nil {
		return c.send(ctx, method, path, query, nil, "", 0, out)
	}
	var b []byte
	switch v := body.(type) {
	case json.RawMessage:
		b = v
	default:
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encoding %s %s request: %w", method, path, err)
		}
	}
	return c.send(ctx, method, path, query, bytes.NewReader(b), "application/json", int64(len(b)), out)
}

// send is do with the request body given as a reader of size bytes (-1:
// unknown, sent chunked) and its content type; body nil sends none.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string, size int64, out any) ([]byte, error) {
	if err := c.resolveScheme(ctx); err != nil {
		return nil, err
	}
	// path arrives escaped (IDs go through url.PathEscape), so it is joined
	// to the escaped base path; Path is derived from it, and RawPath keeps an
	// escaped "/" inside an ID from turning into a path separator.
	c.mu.Lock()
	u := *c.base
	c.mu.Unlock()
	u.RawPath = u.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("building %s %s request: %w", method, path, err)
	}
	u.Path = p
	if query != nil {
		u.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("building %s %s request: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", contentType)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error already names the method and URL; wrapping it again
		// would only repeat them. TLS failures get a message saying what
		// to do about them.
		return nil, c.explainTLS(u.Host, err)
	}
	defer resp.Body.Close()
	c.mu.Lock()
	c.conn, c.answered = resp.TLS, true
	c.mu.Unlock()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if resp.TLS == nil && isPlainToTLSAnswer(resp.StatusCode, data) {
			return nil, &SchemeError{URL: u.Scheme + "://" + u.Host, ServesTLS: true}
		}
		return nil, parseAPIError(method, path, resp.StatusCode, data)
	}
	if out != nil {
		if len(bytes.TrimSpace(data)) == 0 {
			data = []byte("{}")
		}
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("decoding %s %s response: %w", method, path, err)
		}
	}
	return data, nil
}

// parseAPIError understands both error shapes the daemon uses: RunPod's
// {"error": "..."} on /v2 and grpc-gateway's {"code": 3, "message": "..."}
// on /v1. Anything else (a proxy's HTML page, say) is shown trimmed.
func parseAPIError(method, path string, status int, body []byte) *APIError {
	ae := &APIError{StatusCode: status, Method: method, Path: path}
	var shape struct {
		Error       json.RawMessage `json:"error"`
		Code        int             `json:"code"`
		Message     string          `json:"message"`
		Reason      string          `json:"reason"`
		KeyID       string          `json:"keyId"`
		NeededScope string          `json:"neededScope"`
		ExpiresAt   string          `json:"expiresAt"`
	}
	if err := json.Unmarshal(body, &shape); err == nil {
		ae.Code = shape.Code
		ae.Reason, ae.KeyID, ae.NeededScope, ae.ExpiresAt = shape.Reason, shape.KeyID, shape.NeededScope, shape.ExpiresAt
		switch {
		case shape.Message != "":
			ae.Message = shape.Message
		case len(shape.Error) > 0 && string(shape.Error) != "null":
			ae.Message = rawText(shape.Error)
		}
		return ae
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	ae.Message = text
	return ae
}

// rawText renders a JSON value for humans: strings unquoted, anything else as
// compact JSON.
func rawText(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err == nil {
		return buf.String()
	}
	return string(raw)
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status  string          `json:"status"`
	Version string          `json:"version"`
	Raw     json.RawMessage `json:"-"`
}

// Health asks the daemon whether it is serving and which version it runs.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	raw, err := c.do(ctx, http.MethodGet, "/v1/health", nil, nil, &h)
	if err != nil {
		return nil, err
	}
	h.Raw = raw
	return &h, nil
}
