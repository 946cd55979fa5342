package emberd

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestListenPolicy(t *testing.T) {
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	lo, lo6 := tcp("127.0.0.1:7080"), tcp("[::1]:7081")
	unix := &net.UnixAddr{Name: "/run/ember.sock", Net: "unix"}
	for _, tc := range []struct {
		name            string
		http, grpc      net.Addr
		tlsOn, insecure bool
		want            string // "" = allowed
	}{
		{"loopback", lo, lo6, false, false, ""},
		{"other loopback address", tcp("127.0.0.2:7080"), lo, false, false, ""},
		{"unix socket gRPC", lo, unix, false, false, ""},
		{"wildcard REST", tcp("0.0.0.0:7080"), lo, false, false, "the REST API on 0.0.0.0:7080"},
		{"wildcard v6 gRPC", lo, tcp("[::]:7081"), false, false, "the gRPC API on [::]:7081"},
		{"LAN address", tcp("192.168.1.5:7080"), tcp("192.168.1.5:7081"), false, false, "the REST API on 192.168.1.5:7080 (--listen L, or the socket systemd passed) and the gRPC API on 192.168.1.5:7081 (--grpc-listen G"},
		{"wildcard with TLS", tcp("0.0.0.0:7080"), tcp("[::]:7081"), true, false, ""},
		{"wildcard with --insecure-listen", tcp("0.0.0.0:7080"), tcp("[::]:7081"), false, true, ""},
	} {
		err := listenPolicy(tc.http, tc.grpc, "L", "G", tc.tlsOn, tc.insecure)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s: allowed", tc.name)
		case tc.want != "":
			for _, s := range []string{tc.want, "--tls auto", "--tls-cert", "--insecure-listen"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: %q does not say %q", tc.name, err, s)
				}
			}
		}
	}
}

func TestWorkerOnly(t *testing.T) {
	h := workerOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }))
	for path, want := range map[string]int{"/v2/ep/job-take/w": 299, "/v2/ep/job-done/w/j": 299, "/v2/ep/run": 404, "/v1/endpoints": 404, "/healthz": 404, "/metrics": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
