package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/oci/workerlog"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/workerid"
)

// maxLogTail bounds how much of a log's end GET /v1/workers/{id}/logs
// reads for its first answer (all lines, or the last N).
const maxLogTail = 1 << 20

// logPollInterval is how often a followed log is checked for new lines,
// rotation and the worker's exit.
const logPollInterval = 200 * time.Millisecond

// serveWorkers serves the admin worker routes (the caller checked the key):
//
//	GET  /v1/workers[?endpoint=ID]                  {"workers": [WorkerInfo...]}
//	GET  /v1/workers/{id}/logs[?follow=1&tail=N]    text/plain
//	POST /v1/workers/{id}:stop                      WorkerInfo (now draining)
func (h *Server) serveWorkers(w http.ResponseWriter, r *http.Request, rest []string) {
	if h.s == nil {
		writeError(w, http.StatusNotFound, "no scheduler")
		return
	}
	if len(rest) == 1 && strings.HasSuffix(rest[0], ":stop") {
		h.stopWorker(w, r, strings.TrimSuffix(rest[0], ":stop"))
		return
	}
	if len(rest) != 0 && !(len(rest) == 2 && rest[1] == "logs") {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	if len(rest) == 0 {
		ws := h.s.Workers(r.URL.Query().Get("endpoint"))
		if ws == nil {
			ws = []scheduler.WorkerInfo{}
		}
		writeJSON(w, struct {
			Workers []scheduler.WorkerInfo `json:"workers"`
		}{ws})
		return
	}
	h.serveWorkerLogs(w, r, rest[0])
}

// stopWorker drains a worker: it takes no new job, its running jobs finish
// (up to the stop grace), then it exits; the autoscaler starts a
// replacement if its endpoint still needs one. The answer is the worker as
// GET /v1/workers shows it once draining, or {"id","state":"stopped"} when
// it is already gone.
func (h *Server) stopWorker(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /v1/workers/{id}:stop; use POST")
		return
	}
	if !workerid.Valid(id) {
		audit.Record(r.Context(), h.log, audit.WorkerStop, id, scheduler.ErrNotFound, slog.String("worker", id))
		writeError(w, http.StatusNotFound, "worker "+strconv.Quote(id)+" not found")
		return
	}
	err := h.s.StopWorker(id)
	audit.Record(r.Context(), h.log, audit.WorkerStop, id, err, slog.String("worker", id))
	if err != nil {
		if errors.Is(err, scheduler.ErrNotFound) {
			writeError(w, http.StatusNotFound, "worker "+id+" not found (or no longer running)")
			return
		}
		writeSchedErr(w, err)
		return
	}
	for _, info := range h.s.Workers("") {
		if info.ID == id {
			writeJSON(w, info)
			return
		}
	}
	writeJSON(w, map[string]string{"id": id, "state": string(scheduler.WorkerStopped)})
}

// serveWorkerLogs answers with the end of a worker's log: all of its last
// maxLogTail bytes, or its last tail lines. With follow it then streams
// what the worker writes, following rotation, until the client goes away
// or the worker has exited and everything it wrote has been sent. A
// worker that is gone but left its log is served too.
func (h *Server) serveWorkerLogs(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tail"); v != "" && v != "all" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "tail: want a number of lines (or all), got "+strconv.Quote(v))
			return
		}
		tail = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "follow: want 1 or 0, got "+strconv.Quote(v))
			return
		}
		follow = b
	}
	if !workerid.Valid(id) {
		writeError(w, http.StatusNotFound, "worker "+strconv.Quote(id)+" not found")
		return
	}
	path, live := h.s.WorkerLog(id)
	if path == "" && !live {
		writeError(w, http.StatusNotFound, "worker "+id+" not found")
		return
	}
	f, err := os.Open(path)
	var st os.FileInfo
	if err == nil {
		st, err = f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = os.ErrNotExist // /dev/null: no log kept
		}
		if err != nil {
			f.Close()
		}
	}
	switch {
	case errors.Is(err, os.ErrNotExist) && !live:
		writeError(w, http.StatusNotFound, "worker "+id+" not found")
		return
	case errors.Is(err, os.ErrNotExist):
		writeError(w, http.StatusNotFound, "worker "+id+" has no log file")
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "worker log: "+err.Error())
		return
	}
	start := max(st.Size()-maxLogTail, 0)
	buf := make([]byte, st.Size()-start)
	n, err := f.ReadAt(buf, start)
	lf := workerlog.Follow(path, f, start+int64(n))
	defer lf.Close()
	if err != nil && err != io.EOF {
		writeError(w, http.StatusInternalServerError, "reading worker log: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := w.Write(lastLines(buf[:n], tail, start > 0)); err != nil || !follow {
		return
	}
	rc := http.NewResponseController(w)
	flush := func() { rc.Flush() }
	flush()
	if !live {
		lf.Poll(w, flush)
		return
	}
	h.followLog(r.Context(), lf, id, w, flush)
}

// followLog sends what worker id writes to its log, polling every
// logPollInterval, until the client goes away or the worker is gone.
func (h *Server) followLog(ctx context.Context, lf *workerlog.Follower, id string, w io.Writer, flush func()) {
	t := time.NewTicker(logPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, live := h.s.WorkerLog(id)
		if err := lf.Poll(w, flush); err != nil || !live {
			// Gone: its log is complete, and was just sent to the end.
			return
		}
	}
}

// lastLines returns the last n lines of buf (all of it when n < 0).
// partial says buf starts inside a line, which is then dropped unless it
// is all there is.
func lastLines(buf []byte, n int, partial bool) []byte {
	if n == 0 {
		return nil
	}
	if n > 0 {
		end := len(buf)
		if end > 0 && buf[end-1] == '\n' {
			end--
		}
		for i := end - 1; i >= 0; i-- {
			if buf[i] == '\n' {
				n--
				if n == 0 {
					return buf[i+1:]
				}
			}
		}
	}
	if partial {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && i+1 < len(buf) {
			return buf[i+1:]
		}
	}
	return buf
}
