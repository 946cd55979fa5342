package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkHealthz measures one GET /healthz round trip on loopback, plain
// HTTP against TLS, over a kept-alive connection and with a new connection
// (and so a TLS handshake, verified by CA file or by pin) per request: the
// client's share of what TLS costs. Same run, same handler, so the plain
// cases are the baseline.
func BenchmarkHealthz(b *testing.B) {
	ca := newTestCA(b, "bench CA")
	plain := httptest.NewServer(reply(200, `{"status":"ok","uptimeSeconds":1}`))
	b.Cleanup(plain.Close)
	tlsSrv, _ := serveTLS(b, ca.leaf(b, nil, net.IPv4(127, 0, 0, 1)))

	for _, bc := range []struct {
		name      string
		url       string
		keepAlive bool
		opts      []Option
	}{
		{"plain/keepalive", plain.URL, true, nil},
		{"tls-ca/keepalive", "https://" + hostPort(tlsSrv), true, []Option{WithCAFile(ca.file)}},
		{"plain/new-conn", plain.URL, false, nil},
		{"tls-ca/new-conn", "https://" + hostPort(tlsSrv), false, []Option{WithCAFile(ca.file)}},
		{"tls-pin/new-conn", "https://" + hostPort(tlsSrv), false, []Option{WithFingerprint(Fingerprint(ca.cert))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			hc := defaultHTTPClient()
			hc.Transport.(*http.Transport).DisableKeepAlives = !bc.keepAlive
			c, err := New(bc.url, "", append([]Option{WithHTTPClient(hc)}, bc.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := c.Healthz(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
