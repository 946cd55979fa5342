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

// clientOp is one of RunPod's client operations under /v2/{ep}/: the
// methods it answers (the first is the documented one; the Allow header
// lists them all), whether it takes a job id, and its handler.
type clientOp struct {
	methods []string
	needID  bool
	serve   func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string)
}

var (
	onlyPost    = []string{http.MethodPost}
	getOrPost   = []string{http.MethodGet, http.MethodPost}
	postOrGet   = []string{http.MethodPost, http.MethodGet}
	clientOpsBy = map[string]clientOp{
		"run":     {methods: onlyPost, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, _ string) { h.run(w, r, ep, false) }},
		"runsync": {methods: onlyPost, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, _ string) { h.run(w, r, ep, true) }},
		// GET in the docs, Python and JS; POST in the Go SDK.
		"status": {methods: getOrPost, needID: true, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string) { h.status(w, r, ep, id, 0) }},
		"status-sync": {methods: getOrPost, needID: true, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string) {
			h.status(w, r, ep, id, waitParam(r, 90*time.Second, time.Second, 300*time.Second))
		}},
		"stream": {methods: getOrPost, needID: true, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string) {
			v, err := h.s.Stream(r.Context(), ep, id, waitParam(r, 0, 0, 300*time.Second))
			writeResult(w, v, err)
		}},
		"cancel": {methods: postOrGet, needID: true, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string) {
			v, err := h.s.Cancel(r.Context(), ep, id)
			writeResult(w, v, err)
		}},
		"retry": {methods: onlyPost, needID: true, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, id string) {
			v, err := h.s.Retry(r.Context(), ep, id)
			writeResult(w, v, err)
		}},
		"purge-queue": {methods: onlyPost, serve: (*Server).purgeQueue},
		"health": {methods: getOrPost, serve: func(h *Server, w http.ResponseWriter, r *http.Request, ep, _ string) {
			v, err := h.s.Health(ep)
			writeResult(w, v, err)
		}},
	}
)

// serveClient handles RunPod's client operations under /v2/{ep}/.
func (h *Server) serveClient(w http.ResponseWriter, r *http.Request, ep string, rest []string) {
	op, id := rest[0], ""
	if len(rest) == 2 {
		id = rest[1]
	}
	c, known := clientOpsBy[op]
	if c.needID && id == "" {
		writeError(w, http.StatusNotFound, "missing job id: /v2/"+ep+"/"+op+"/{job_id}")
		return
	}
	if len(rest) > 2 || (!c.needID && len(rest) != 1) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
		return
	}
	if !known {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown operation %q on endpoint %s", op, ep))
		return
	}
	if requireMethod(w, r, c.methods...) {
		c.serve(h, w, r, ep, id)
	}
}

// writeResult writes a scheduler call's answer as JSON, or its error with
// the status code the error maps to.
func writeResult(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	writeJSON(w, v)
}

// purgeQueue is POST /v2/{ep}/purge-queue: the queued jobs are removed,
// and the removal is audited.
func (h *Server) purgeQueue(w http.ResponseWriter, r *http.Request, ep, _ string) {
	n, err := h.s.Purge(r.Context(), ep)
	audit.Record(r.Context(), h.log, audit.QueuePurge, ep, err, slog.String("endpoint", ep), slog.Int("removed", n))
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	writeJSON(w, map[string]any{"removed": n, "status": "completed"})
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
