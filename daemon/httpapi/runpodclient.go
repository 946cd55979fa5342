package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

// clientNeedsID are the client operations that take a job id.
var clientNeedsID = map[string]bool{"status": true, "status-sync": true, "stream": true, "cancel": true, "retry": true}

// serveClient handles RunPod's client operations under /v2/{ep}/.
func (h *Server) serveClient(w http.ResponseWriter, r *http.Request, ep string, rest []string) {
	op := rest[0]
	id := ""
	if len(rest) == 2 {
		id = rest[1]
	}
	needID := clientNeedsID
	if needID[op] && id == "" {
		writeError(w, http.StatusNotFound, "missing job id: /v2/"+ep+"/"+op+"/{job_id}")
		return
	}
	if len(rest) > 2 || (!needID[op] && len(rest) != 1) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
		return
	}
	switch op {
	case "run":
		if requireMethod(w, r, http.MethodPost) {
			h.run(w, r, ep, false)
		}
	case "runsync":
		if requireMethod(w, r, http.MethodPost) {
			h.run(w, r, ep, true)
		}
	case "status":
		// GET in the docs, Python and JS; POST in the Go SDK.
		if requireMethod(w, r, http.MethodGet, http.MethodPost) {
			h.status(w, r, ep, id, 0)
		}
	case "status-sync":
		if requireMethod(w, r, http.MethodGet, http.MethodPost) {
			h.status(w, r, ep, id, waitParam(r, 90*time.Second, time.Second, 300*time.Second))
		}
	case "stream":
		if requireMethod(w, r, http.MethodGet, http.MethodPost) {
			v, err := h.s.Stream(r.Context(), ep, id, waitParam(r, 0, 0, 300*time.Second))
			if err != nil {
				writeSchedErr(w, err)
				return
			}
			writeJSON(w, v)
		}
	case "cancel":
		if requireMethod(w, r, http.MethodPost, http.MethodGet) {
			v, err := h.s.Cancel(r.Context(), ep, id)
			if err != nil {
				writeSchedErr(w, err)
				return
			}
			writeJSON(w, v)
		}
	case "retry":
		if requireMethod(w, r, http.MethodPost) {
			v, err := h.s.Retry(r.Context(), ep, id)
			if err != nil {
				writeSchedErr(w, err)
				return
			}
			writeJSON(w, v)
		}
	case "purge-queue":
		if requireMethod(w, r, http.MethodPost) {
			n, err := h.s.Purge(r.Context(), ep)
			audit.Record(r.Context(), h.log, audit.QueuePurge, ep, err, slog.String("endpoint", ep), slog.Int("removed", n))
			if err != nil {
				writeSchedErr(w, err)
				return
			}
			writeJSON(w, map[string]any{"removed": n, "status": "completed"})
		}
	case "health":
		if requireMethod(w, r, http.MethodGet, http.MethodPost) {
			hl, err := h.s.Health(ep)
			if err != nil {
				writeSchedErr(w, err)
				return
			}
			writeJSON(w, hl)
		}
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown operation %q on endpoint %s", op, ep))
	}
}

func requireMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", joinMethods(methods))
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", r.Method, joinMethods(methods)))
	return false
}

func joinMethods(m []string) string {
	out := ""
	for i, s := range m {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}

// run handles /run and /runsync. The endpoint is checked before the body is
// read, so an unknown endpoint is a 404 whatever the body.
func (h *Server) run(w http.ResponseWriter, r *http.Request, ep string, sync bool) {
	if _, err := h.s.Endpoint(ep); err != nil {
		writeSchedErr(w, err)
		return
	}
	limit, name := int64(limits.RunBody), "POST /v2/{endpoint}/run"
	if sync {
		limit, name = limits.RunSyncBody, "POST /v2/{endpoint}/runsync"
	}
	body, tooBig, size, err := readBody(w, r, limit)
	if err != nil {
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	if tooBig {
		writeTooLarge(w, name, limit, size)
		return
	}
	sub, err := decodeSubmission(body, r.URL.Query())
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	var v scheduler.JobView
	if sync {
		v, err = h.s.RunSync(r.Context(), ep, sub, waitParam(r, 90*time.Second, time.Second, 300*time.Second))
	} else {
		v, err = h.s.Submit(r.Context(), ep, sub)
	}
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	writeJSON(w, v)
}

func (h *Server) status(w http.ResponseWriter, r *http.Request, ep, id string, wait time.Duration) {
	var v scheduler.JobView
	var err error
	if wait > 0 {
		v, err = h.s.Wait(r.Context(), ep, id, wait)
	} else {
		v, err = h.s.Status(ep, id)
	}
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	writeJSON(w, v)
}
