package emberd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/emberhq/ember/daemon/httpapi"
	"github.com/emberhq/ember/daemon/tlsconf"
)

// exposed reports whether a listener's address can be reached from other
// machines: a TCP address other than loopback (a wildcard address
// included). Unix sockets are local.
func exposed(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && !t.IP.IsLoopback()
}

// listenPolicy refuses to serve plain HTTP or gRPC beyond loopback (API
// keys and job data would cross the network in cleartext) unless TLS is
// on or --insecure-listen allows it. listen and grpcListen are the flags'
// values, named in the message (a wildcard address reads [::] once open).
func listenPolicy(httpAddr, grpcAddr net.Addr, listen, grpcListen string, tlsOn, insecure bool) error {
	if tlsOn || insecure {
		return nil
	}
	var bad []string
	if exposed(httpAddr) {
		bad = append(bad, fmt.Sprintf("the REST API on %s (--listen %s, or the socket systemd passed)", httpAddr, listen))
	}
	if exposed(grpcAddr) {
		bad = append(bad, fmt.Sprintf("the gRPC API on %s (--grpc-listen %s, or the socket systemd passed)", grpcAddr, grpcListen))
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("refusing to serve %s without TLS: that address is not loopback, and API keys and job data would cross the network in cleartext; "+
		"use --tls auto (emberd makes its own CA under DATA-DIR/tls), or --tls-cert FILE with --tls-key FILE, "+
		"or --insecure-listen to serve plain HTTP there anyway", strings.Join(bad, " and "))
}

// plainConn is the connection under TLS, which is what the connection
// limiter's hooks know.
func plainConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// workerOnly serves the worker API and answers everything else 404: the
// loopback worker listener is plain HTTP, so it must not become a way
// around TLS for the client API.
func workerOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httpapi.WorkerRoute(r) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "this listener serves only the worker API (/v2/{endpoint}/job-take and the rest); the client API is on the TLS listener (--listen)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tlsStatus is httpapi.Config.TLS for a manager (nil: TLS is off).
func tlsStatus(m *tlsconf.Manager) func() httpapi.TLSStatus {
	return func() httpapi.TLSStatus {
		if m == nil {
			return httpapi.TLSStatus{Mode: tlsconf.ModeOff}
		}
		st := m.Status()
		return httpapi.TLSStatus{Enabled: true, Mode: st.Mode, CAFingerprint: st.Fingerprint, CertNotAfter: st.NotAfter.UTC().Format(time.RFC3339)}
	}
}

// workerServer is the plain-HTTP server of the worker API on loopback
// when the client listener speaks TLS. Workers keep plain HTTP: their
// traffic stays in this host's kernel (or in the worker's own network
// namespace, where netnsServer serves this same server), worker images
// (RunPod's among them) cannot be made to trust emberd's CA without
// changing them, and a worker's token grants only that worker's jobs.
func workerServer(lazy http.Handler, hs *http.Server) *http.Server {
	return &http.Server{
		Handler:           workerOnly(lazy),
		ReadHeaderTimeout: hs.ReadHeaderTimeout,
		ReadTimeout:       hs.ReadTimeout,
		WriteTimeout:      hs.WriteTimeout,
		IdleTimeout:       hs.IdleTimeout,
		ErrorLog:          hs.ErrorLog,
	}
}

// runTLS keeps the certificate current (tlsconf.Manager.Run) until ctx
// ends or stop is called; stop returns once that goroutine has ended.
func runTLS(ctx context.Context, m *tlsconf.Manager) (stop func()) {
	if m == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	return func() { cancel(); <-done }
}
