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
	lf := &logFollower{path: path, f: f, w: w}
	defer func() { lf.f.Close() }()

	start := max(st.Size()-maxLogTail, 0)
	buf := make([]byte, st.Size()-start)
	n, err := f.ReadAt(buf, start)
	if err != nil && err != io.EOF {
		writeError(w, http.StatusInternalServerError, "reading worker log: "+err.Error())
		return
	}
	lf.off = start + int64(n)
	lf.remember(buf[:n])
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
	lf.flush = func() { rc.Flush() }
	lf.flush()
	if !live {
		lf.poll()
		return
	}
	h.followLog(r.Context(), lf, id)
}

func (h *Server) followLog(ctx context.Context, lf *logFollower, id string) {
	t := time.NewTicker(logPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, live := h.s.WorkerLog(id)
		if err := lf.poll(); err != nil || !live {
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

// logFollower sends what is appended to a log file from off on.
type logFollower struct {
	path  string
	f     *os.File
	off   int64
	w     io.Writer
	flush func()
	// last holds the file's last bytes before off (up to lastKeep), to
	// notice the file being rewritten under the same name and size.
	last []byte
}

const lastKeep = 64

func (lf *logFollower) remember(p []byte) {
	if len(p) >= lastKeep {
		lf.last = append(lf.last[:0], p[len(p)-lastKeep:]...)
		return
	}
	lf.last = append(lf.last, p...)
	if over := len(lf.last) - lastKeep; over > 0 {
		lf.last = append(lf.last[:0], lf.last[over:]...)
	}
}

// rewritten reports whether the bytes before lf.off are no longer the ones
// that were read there: the file was rotated in place and has grown back
// past lf.off since.
func (lf *logFollower) rewritten() bool {
	m := min(int64(len(lf.last)), lf.off)
	if m == 0 {
		return false
	}
	b := make([]byte, m)
	if _, err := lf.f.ReadAt(b, lf.off-m); err != nil {
		return true
	}
	return !bytes.Equal(b, lf.last[int64(len(lf.last))-m:])
}

// poll sends what was written since the last poll. Two kinds of rotation
// are followed: a file renamed away and replaced (the inode behind the path
// changes: the old file is read to its end, then the new one from its
// start), and the runc runtime's rotation in place, which copies the
// file's head to PATH.1 and cuts it out of the live file (the file
// shrinks, or no longer holds the bytes last read before lf.off when it
// has grown back since: what was not sent yet is taken from PATH.1, then
// the live file goes on where that ends).
func (lf *logFollower) poll() error {
	if cur, err := os.Stat(lf.path); err == nil {
		if old, err := lf.f.Stat(); err == nil && !os.SameFile(cur, old) {
			if err := lf.copyRest(lf.f); err != nil {
				return err
			}
			nf, err := os.Open(lf.path)
			if err != nil {
				return nil // replaced again meanwhile: next poll
			}
			lf.f.Close()
			lf.f, lf.off, lf.last = nf, 0, lf.last[:0]
		}
	}
	st, err := lf.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < lf.off || lf.rewritten() {
		next, err := lf.sendRotated(st.Size())
		if err != nil {
			return err
		}
		if next == 0 {
			lf.last = lf.last[:0]
		}
		lf.off = next
	}
	return lf.copyRest(lf.f)
}

// sendRotated sends the part of PATH.1 past lf.off, after the live file
// shrank to size, and returns where to go on in the live file. PATH.1
// holds the live file's first bytes before the rotation (all of them when
// the file was copied and truncated), so what was sent up to lf.off is
// either all in PATH.1 or continues lf.off-len(PATH.1) into the live file.
// Without a PATH.1 (a plain truncation) the live file is read from its
// start.
func (lf *logFollower) sendRotated(size int64) (int64, error) {
	r1, err := os.Open(lf.path + ".1")
	if err != nil {
		return 0, nil
	}
	defer r1.Close()
	st1, err := r1.Stat()
	if err != nil {
		return 0, nil
	}
	head := st1.Size()
	switch {
	case lf.off < head:
		return 0, lf.copyFrom(r1, lf.off)
	case lf.off-head <= size:
		return lf.off - head, nil
	}
	return 0, nil
}

// copyRest sends f from lf.off to its end and advances lf.off.
func (lf *logFollower) copyRest(f *os.File) error {
	n, err := io.Copy(recorder{lf}, io.NewSectionReader(f, lf.off, 1<<62))
	lf.off += n
	if n > 0 {
		lf.flush()
	}
	return err
}

// copyFrom sends f from off to its end, leaving lf.off alone.
func (lf *logFollower) copyFrom(f *os.File, off int64) error {
	n, err := io.Copy(lf.w, io.NewSectionReader(f, off, 1<<62))
	if n > 0 {
		lf.flush()
	}
	return err
}

// recorder writes to the client and remembers the last bytes written.
type recorder struct{ lf *logFollower }

func (r recorder) Write(p []byte) (int, error) {
	n, err := r.lf.w.Write(p)
	r.lf.remember(p[:n])
	return n, err
}
