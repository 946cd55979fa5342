package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

type workerOp int

const (
	opTake workerOp = iota
	opTakeBatch
	opStop
	opDone
	opStream
	opPing
)

var workerOps = map[string]workerOp{
	runpod.RouteJobTake:      opTake,
	runpod.RouteJobTakeBatch: opTakeBatch,
	runpod.RouteJobStop:      opStop,
	runpod.RouteJobDone:      opDone,
	runpod.RouteJobStream:    opStream,
	runpod.RoutePing:         opPing,
}

// pathID cleans the last path segment: an SDK given a template without "?"
// appends "&isStream=false" to the path itself (docs/compat.md, Worker
// environment).
func pathID(s string) string {
	if i := strings.IndexByte(s, '&'); i >= 0 {
		return s[:i]
	}
	return s
}

// serveWorker handles the worker protocol (docs/compat.md, Worker protocol).
// Every call carries the
// worker's own token, which works only for its endpoint and its jobs.
func (h *Server) serveWorker(w http.ResponseWriter, r *http.Request, ep string, op workerOp, rest []string) {
	wantSegs := 1
	if op == opDone || op == opStream {
		wantSegs = 2
	}
	if len(rest) != wantSegs {
		writeError(w, http.StatusNotFound, "no such worker route: "+r.URL.Path)
		return
	}
	workerID := pathID(rest[0])
	if err := h.s.AuthWorker(ep, workerID, presentedKey(r)); err != nil {
		// The scheduler's text names the worker and the endpoint, never
		// the token presented.
		auth.CountRefused(http.StatusUnauthorized, auth.ReasonWorkerToken)
		writeJSONStatus(w, http.StatusUnauthorized, map[string]string{"error": err.Error(), "reason": auth.ReasonWorkerToken})
		return
	}
	q := r.URL.Query()
	switch op {
	case opTake, opTakeBatch:
		max := 1
		if op == opTakeBatch {
			if n, err := strconv.Atoi(q.Get("batch_size")); err == nil && n > 0 {
				max = min(n, 1024)
			}
		}
		h.take(w, r, ep, workerID, max, op == opTakeBatch)
	case opStop:
		ids, err := h.s.StopSignals(r.Context(), ep, workerID, 0)
		if err != nil {
			writeSchedErr(w, err)
			return
		}
		if len(ids) == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, map[string][]string{"jobsToStop": ids})
	case opDone:
		h.done(w, r, ep, workerID, pathID(rest[1]))
	case opStream:
		body, tooBig, size, err := readBody(w, r, limits.ChunkBody)
		if err != nil {
			writeError(w, http.StatusBadRequest, "read stream body: "+err.Error())
			return
		}
		if tooBig {
			writeTooLarge(w, "POST /v2/{endpoint}/job-stream", limits.ChunkBody, size)
			return
		}
		out, err := parseChunk(body)
		if err != nil {
			writeSchedErr(w, err)
			return
		}
		if err := h.s.AddChunk(r.Context(), ep, workerID, pathID(rest[1]), out); err != nil {
			writeChunkErr(w, err)
			return
		}
		writeJSON(w, map[string]any{})
	case opPing:
		err := h.s.Ping(ep, workerID, parseJobIDs(q.Get("job_id")), q.Get("runpod_version"), q.Get("status"), pingReason(q.Get("check"), q.Get("reason")))
		if err != nil {
			writeSchedErr(w, err)
			return
		}
		writeJSON(w, map[string]any{})
	}
}

func pingReason(check, reason string) string {
	if len(reason) > 256 {
		reason = reason[:256]
	}
	if check == "" {
		return reason
	}
	return check + ": " + reason
}

// take long-polls for jobs. A job counts as delivered only once the response
// has been flushed to the worker; otherwise it goes back to the queue.
func (h *Server) take(w http.ResponseWriter, r *http.Request, ep, workerID string, max int, batch bool) {
	lease, err := h.s.Take(r.Context(), ep, workerID, max, 0)
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	if len(lease.Jobs) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Context().Err() != nil {
		// The worker gave up (its 90 s limit) while the job was being read.
		lease.Delivered(false)
		return
	}
	var body any = lease.Jobs[0]
	if batch {
		body = lease.Jobs
	}
	ok := writeFlushed(w, body)
	lease.Delivered(ok)
}

func writeFlushed(w http.ResponseWriter, v any) bool {
	writeJSON(w, v)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return false
	}
	return true
}

// done handles job-done: progress or the final result. Bodies over the
// result limit do not vanish (a 4xx would make the SDK drop the result and
// leave the job stuck): the job fails with a reason instead.
func (h *Server) done(w http.ResponseWriter, r *http.Request, ep, workerID, jobID string) {
	body, tooBig, size, err := readBody(w, r, limits.ResultBody)
	if err != nil {
		writeError(w, http.StatusBadRequest, "read result body: "+err.Error())
		return
	}
	if tooBig {
		res := oversizeResult(size)
		if err := h.s.Done(r.Context(), ep, workerID, jobID, res); err != nil {
			writeSchedErr(w, err)
			return
		}
		writeJSON(w, map[string]any{})
		return
	}
	res, err := parseResult(body)
	if err != nil {
		writeSchedErr(w, err)
		return
	}
	if err := h.s.Done(r.Context(), ep, workerID, jobID, res); err != nil {
		writeSchedErr(w, err)
		return
	}
	writeJSON(w, map[string]any{})
}

// writeChunkErr answers a refused job-stream post. Past the unread cap the
// answer also carries the numbers: {"error", "limitBytes", "unreadBytes"}.
// A 4xx is final for the SDK (it logs it and goes on), which is what a
// refusal must be: the chunk was not stored and retrying cannot change it.
func writeChunkErr(w http.ResponseWriter, err error) {
	var sl *scheduler.StreamLimitError
	if !errors.As(err, &sl) {
		writeSchedErr(w, err)
		return
	}
	b, _ := json.Marshal(map[string]any{"error": err.Error(), "limitBytes": sl.Limit, "unreadBytes": sl.Unread})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	w.Write(b)
}
