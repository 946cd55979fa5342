package httpapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"syscall"
	"time"

	"github.com/emberhq/ember/scheduler"
)

// serveHealth answers the probes, which need no key (systemd, load
// balancers and orchestrators are set up without one; the answers hold no
// data):
//
//	GET /healthz  liveness: 200 {"status":"ok","uptimeSeconds":N,"openFiles":{"soft":S,"hard":H},
//	              "connections":{"open":N,"max":M,"reserve":R,...},
//	              "tls":{"enabled":B,"mode":"off|auto|files","caFingerprint":HEX,"certNotAfter":RFC3339},
//	              "insecureListen":B,"parkMemory":{"budgetBytes":N,"usedBytes":N}} while the process serves HTTP
//	GET /readyz   readiness: 200 {"status":"ready"} once the scheduler is open and has
//	              recovered, 503 {"status":"unavailable","error":REASON} otherwise
//	              (with "freeBytes" and "neededBytes" when the data disk is too full)
//
// Uptime counts from Config.Started (the server's creation when zero).
func (h *Server) serveHealth(w http.ResponseWriter, r *http.Request, probe string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /"+probe+"; use GET")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if probe == "healthz" {
		up := math.Floor(time.Since(h.started).Seconds())
		live := struct {
			Status        string     `json:"status"`
			UptimeSeconds int64      `json:"uptimeSeconds"`
			OpenFiles     *openFiles `json:"openFiles,omitempty"`
			Connections   any        `json:"connections,omitempty"`
			TLS           TLSStatus  `json:"tls"`
			Insecure      bool       `json:"insecureListen"`
			ParkMemory    *parkMem   `json:"parkMemory,omitempty"`
		}{Status: "ok", UptimeSeconds: int64(max(up, 0)), TLS: TLSStatus{Mode: "off"}, Insecure: h.cfg.InsecureListen}
		if h.cfg.TLS != nil {
			live.TLS = h.cfg.TLS()
		}
		var rl syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
			live.OpenFiles = &openFiles{Soft: rl.Cur, Hard: rl.Max}
		}
		if h.cfg.Connections != nil {
			live.Connections = h.cfg.Connections()
		}
		if h.s != nil {
			b, u := h.s.ParkMemory()
			live.ParkMemory = &parkMem{Budget: b, Used: u}
		}
		writeJSON(w, live)
		return
	}
	var err error
	if h.cfg.Ready != nil {
		err = h.cfg.Ready()
	}
	if err != nil {
		body := map[string]any{"status": "unavailable", "error": err.Error()}
		var se *scheduler.InsufficientStorageError
		if errors.As(err, &se) {
			body["freeBytes"], body["neededBytes"] = se.Free, se.Needed
		}
		writeJSONStatus(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, map[string]string{"status": "ready"})
}

// TLSStatus is the "tls" object of GET /healthz: whether the REST and
// gRPC listeners serve TLS, from where (--tls auto, or --tls-cert files),
// the SHA-256 fingerprint a client may pin (of the CA under auto, of the
// served chain's last certificate under files; 64 lowercase hex digits)
// and when the served certificate expires (RFC 3339). Both strings are
// empty when TLS is off.
type TLSStatus struct {
	Enabled       bool   `json:"enabled"`
	Mode          string `json:"mode"`
	CAFingerprint string `json:"caFingerprint"`
	CertNotAfter  string `json:"certNotAfter"`
}

// openFiles is the process's limit on open files (RLIMIT_NOFILE), which
// emberd raises to the hard limit at start.
type openFiles struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// parkMem is the host memory parked GPU workers may take (--park-memory-mb)
// and take now.
type parkMem struct {
	Budget uint64 `json:"budgetBytes"`
	Used   uint64 `json:"usedBytes"`
}

// writeJSONStatus is writeJSON with another status code.
func writeJSONStatus(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}
