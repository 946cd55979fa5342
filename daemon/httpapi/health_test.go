package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestHealthProbes(t *testing.T) {
	var notReady atomic.Pointer[error]
	srv := httptest.NewServer(New(Config{
		Keys:    func() []string { return []string{"k"} },
		Logger:  slog.New(slog.DiscardHandler),
		Started: time.Now().Add(-90 * time.Second),
		Connections: func() any {
			return map[string]int{"open": 3, "max": 64, "reserve": 16}
		},
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	}))
	defer srv.Close()

	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	files := fmt.Sprintf(`"openFiles":{"soft":%d,"hard":%d}`, rl.Cur, rl.Max)
	conns := `"connections":{"max":64,"open":3,"reserve":16}`
	off := `"tls":{"enabled":false,"mode":"off","caFingerprint":"","certNotAfter":""},"insecureListen":false`
	code, body := call(t, srv, "GET", "/healthz", "", "")
	if code != 200 || (body != `{"status":"ok","uptimeSeconds":90,`+files+`,`+conns+`,`+off+`}` && body != `{"status":"ok","uptimeSeconds":91,`+files+`,`+conns+`,`+off+`}`) {
		t.Errorf("healthz: %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "//readyz", "", ""); code != 200 || body != `{"status":"ready"}` {
		t.Errorf("readyz: %d %s", code, body)
	}
	err := errors.New("recovering the job store")
	notReady.Store(&err)
	if code, body := call(t, srv, "GET", "/readyz", "", ""); code != 503 || body != `{"error":"recovering the job store","status":"unavailable"}` {
		t.Errorf("readyz, not ready: %d %s", code, body)
	}
	// Liveness does not depend on readiness; a wrong key does not matter.
	if code, _ := call(t, srv, "GET", "/healthz", "Bearer wrong", ""); code != 200 {
		t.Errorf("healthz while not ready: %d", code)
	}
	if code, body := call(t, srv, "POST", "/healthz", "", ""); code != 405 || !strings.Contains(body, "use GET") {
		t.Errorf("POST healthz: %d %s", code, body)
	}
	if code, _ := call(t, srv, "HEAD", "/readyz", "", ""); code != 503 {
		t.Errorf("HEAD readyz: %d", code)
	}
}

func TestReadyNilFunc(t *testing.T) {
	srv := httptest.NewServer(New(Config{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	if code, body := call(t, srv, "GET", "/readyz", "", ""); code != 200 || body != `{"status":"ready"}` {
		t.Errorf("readyz: %d %s", code, body)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"status":"ok","uptimeSeconds":0,"openFiles":{"soft":%d,"hard":%d},"tls":{"enabled":false,"mode":"off","caFingerprint":"","certNotAfter":""},"insecureListen":false}`, rl.Cur, rl.Max)
	if code, body := call(t, srv, "GET", "/healthz", "", ""); code != 200 || body != want {
		t.Errorf("healthz: %d %s", code, body)
	}
}

// TestHealthTLS: the tls and insecureListen fields come from Config.
func TestHealthTLS(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"auto", Config{TLS: func() TLSStatus {
			return TLSStatus{Enabled: true, Mode: "auto", CAFingerprint: fp, CertNotAfter: "2027-03-04T05:06:07Z"}
		}}, `"tls":{"enabled":true,"mode":"auto","caFingerprint":"` + fp + `","certNotAfter":"2027-03-04T05:06:07Z"},"insecureListen":false}`},
		{"insecure", Config{InsecureListen: true}, `"tls":{"enabled":false,"mode":"off","caFingerprint":"","certNotAfter":""},"insecureListen":true}`},
	} {
		tc.cfg.Logger = slog.New(slog.DiscardHandler)
		srv := httptest.NewServer(New(tc.cfg))
		code, body := call(t, srv, "GET", "/healthz", "", "")
		srv.Close()
		if code != 200 || !strings.HasSuffix(body, tc.want) {
			t.Errorf("%s: healthz %d %s, want it to end %s", tc.name, code, body, tc.want)
		}
	}
}

func TestWorkerRoute(t *testing.T) {
	for path, want := range map[string]bool{
		"/v2/ep/job-take/w": true, "/v2/ep/job-take-batch/w": true, "/v2/ep/job-done/w/j": true, "/v2/ep/job-stream/w/j": true,
		"/v2/ep/job-stop/w": true, "/v2/ep/ping/w": true, "//v2/ep/ping/w": true,
		"/healthz": false, "/v2/ep/run": false, "/v2/ep/runsync": false, "/v1/endpoints": false, "/metrics": false, "/v2/ep/status/j": false, "/v1/ep/job-take/w": false,
	} {
		if got := WorkerRoute(httptest.NewRequest(http.MethodGet, path, nil)); got != want {
			t.Errorf("WorkerRoute(%s) = %v, want %v", path, got, want)
		}
	}
}
