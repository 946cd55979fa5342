package client

import (
	"context"
	"errors"
	"net/http"
)

// Liveness is the answer of GET /healthz.
type Liveness struct {
	Status string `json:"status"`
	// UptimeSeconds is how long the daemon has been up.
	UptimeSeconds int64 `json:"uptimeSeconds"`
	// OpenFiles is the daemon's limit on open files, which it raises to
	// the hard limit at start; nil from a daemon that does not say.
	OpenFiles *FileLimits `json:"openFiles,omitempty"`
	// Connections counts client connections against --max-connections;
	// nil from a daemon that does not say.
	Connections *ConnStats `json:"connections,omitempty"`
	// TLS is the daemon's TLS setup; nil from a daemon that does not say.
	TLS *ServerTLS `json:"tls,omitempty"`
	// InsecureListen is true when the daemon was started with
	// --insecure-listen: it listens beyond loopback without TLS.
	InsecureListen bool `json:"insecureListen"`
	// ParkMemory is the host memory parked GPU workers may take and take
	// now; nil from a daemon that does not say.
	ParkMemory *ParkMemory `json:"parkMemory,omitempty"`
}

// ParkMemory is the daemon's budget for parked workers (emberd
// --park-memory-mb) and what they use of it.
type ParkMemory struct {
	BudgetBytes int64 `json:"budgetBytes"`
	UsedBytes   int64 `json:"usedBytes"`
}

// ServerTLS is the daemon's TLS setup as /healthz reports it.
type ServerTLS struct {
	Enabled bool `json:"enabled"`
	// Mode is "off", "auto" (emberd's own CA under DATA-DIR/tls) or
	// "files" (--tls-cert and --tls-key).
	Mode string `json:"mode"`
	// CAFingerprint is the SHA-256 of the CA certificate (auto) or of the
	// last certificate of the served chain (files), 64 lowercase hex.
	CAFingerprint string `json:"caFingerprint,omitempty"`
	// CertNotAfter is when the served certificate expires (RFC 3339).
	CertNotAfter string `json:"certNotAfter,omitempty"`
}

// FileLimits is a process's limit on open files (RLIMIT_NOFILE).
type FileLimits struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// ConnStats counts the daemon's client connections: Open now, the cap Max
// (--max-connections) and Reserve more held for the worker API and the
// probes; Evicted (idle ones closed to make room), Refused (closed at
// accept) and Rejected (requests answered 503 on a reserve connection)
// since start.
type ConnStats struct {
	Open     int   `json:"open"`
	Max      int   `json:"max"`
	Reserve  int   `json:"reserve"`
	Evicted  int64 `json:"evicted"`
	Refused  int64 `json:"refused"`
	Rejected int64 `json:"rejected"`
}

// Healthz asks whether the daemon serves HTTP (no key needed).
func (c *Client) Healthz(ctx context.Context) (*Liveness, error) {
	var l Liveness
	if _, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Readyz asks whether the daemon is ready for work (no key needed). It
// returns nil when it is; a *NotReadyError with the daemon's reason when
// it answered 503; any other error when it could not be asked.
func (c *Client) Readyz(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == http.StatusServiceUnavailable {
		return &NotReadyError{Reason: ae.Message}
	}
	return err
}

// NotReadyError is the daemon saying it is not ready yet.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return "emberd is not ready: " + e.Reason }
