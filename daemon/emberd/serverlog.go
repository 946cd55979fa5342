package emberd

import (
	"bytes"
	"context"
	"log"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// handshakeErrors counts the TLS handshakes net/http's server gave up on:
// a client that does not trust the certificate, plain HTTP sent to the TLS
// port, a port scanner.
var handshakeErrors = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "ember_tls_handshake_errors_total",
	Help: "TLS handshakes on the REST listener that failed (untrusted certificate, plain HTTP to the TLS port, scanners).",
})

// serverErrorLog is the http.Server's ErrorLog. Failed TLS handshakes are
// the client's doing and come as often as anything on the network knocks
// on the port, so they are counted (ember_tls_handshake_errors_total) and
// logged at DEBUG, keeping a scanned appliance's log readable; everything
// else net/http reports is a WARN.
func serverErrorLog(l *slog.Logger) *log.Logger {
	return log.New(serverLogWriter{l}, "", 0)
}

type serverLogWriter struct{ l *slog.Logger }

func (w serverLogWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelWarn
	if bytes.Contains(p, []byte("TLS handshake error")) {
		handshakeErrors.Inc()
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, msg, "source", "net/http")
	return len(p), nil
}
