package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/emberhq/ember/oci/workerlog"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

// logTimeFormat is how -t shows a line's time: docker's --timestamps
// format (RFC 3339, nanoseconds, fixed width), in UTC.
const logTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// logOptions are an endpoint log request's query.
type logOptions struct {
	follow     bool
	timestamps bool
	since      time.Time // zero: from the start of what is kept
}

// parseLogOptions reads follow, timestamps and since (RFC 3339, Unix
// seconds, or a Go duration back from now) from q.
func parseLogOptions(q map[string][]string, now time.Time) (logOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var o logOptions
	for _, f := range []struct {
		name string
		dst  *bool
	}{{"follow", &o.follow}, {"timestamps", &o.timestamps}} {
		if v := get(f.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, errors.New(f.name + ": want 1 or 0, got " + strconv.Quote(v))
			}
			*f.dst = b
		}
	}
	if v := get("since"); v != "" {
		t, err := parseSince(v, now)
		if err != nil {
			return o, err
		}
		o.since = t
	}
	return o, nil
}

// parseSince reads a --since value: an RFC 3339 time, Unix seconds, or a
// duration such as 10m back from now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Unix(s, 0), nil
	}
	return time.Time{}, errors.New("since: want an RFC 3339 time (2006-01-02T15:04:05Z), Unix seconds or a duration back from now (10m), got " + strconv.Quote(v))
}

// serveEndpointLogs answers GET /v1/endpoints/{id}/logs: the logs of the
// endpoint's workers (live, and stopped since emberd started while their
// files are kept), merged in time order, each line prefixed with its
// worker's id. Per worker at most the last maxLogTail bytes of its live
// file are read. With follow it then streams what the workers write,
// workers that start joining and workers that stop ending their part,
// until the client goes away or the endpoint is deleted.
func (h *Server) serveEndpointLogs(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.s == nil {
		writeError(w, http.StatusNotFound, "no scheduler")
		return
	}
	id := segs[2]
	opts, err := parseLogOptions(r.URL.Query(), time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ws, err := h.s.LogWorkers(id)
	if err != nil {
		if errors.Is(err, scheduler.ErrNotFound) {
			writeError(w, http.StatusNotFound, "endpoint "+strconv.Quote(id)+" not found")
			return
		}
		writeSchedErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	out := bufio.NewWriterSize(w, 32<<10)
	flush := func() {
		out.Flush()
		rc.Flush()
	}
	var srcs []*logSource
	defer func() {
		for _, s := range srcs {
			s.close()
		}
	}()
	for _, wi := range ws {
		// A live worker's unfinished last line is left to the follow.
		live := wi.State != scheduler.WorkerStopped
		if s := openLogSource(wi.ID, wi.LogPath, opts.since, opts.follow && live); s != nil {
			s.live = live
			srcs = append(srcs, s)
		}
	}
	if err := mergeLogs(out, srcs, opts); err != nil || !opts.follow {
		flush()
		return
	}
	flush()
	h.followEndpoint(r.Context(), id, srcs, out, flush, opts)
}

// followEndpoint streams what the endpoint's workers write, polling every
// logPollInterval: a worker seen for the first time is read from the
// start of its log, one that is no longer live is read to its end and
// dropped.
func (h *Server) followEndpoint(ctx context.Context, id string, backlog []*logSource, out io.Writer, flush func(), opts logOptions) {
	type part struct {
		lf *workerlog.Follower
		pw *prefixWriter
	}
	parts := map[string]*part{}
	seen := map[string]bool{}
	// order keeps each round's output in the workers' start order.
	var order []string
	add := func(wid string, lf *workerlog.Follower) {
		pw := &prefixWriter{id: wid, out: out, opts: opts}
		parts[wid] = &part{lf, pw}
		order = append(order, wid)
	}
	for _, s := range backlog {
		seen[s.id] = true
		// Followed even if it has stopped since: what it wrote last is
		// read by the follower's first poll, which then ends its part.
		if s.live {
			add(s.id, s.lines.Follow()) // the follower owns the file now
		}
	}
	defer func() {
		for _, p := range parts {
			p.lf.Close()
		}
	}()
	t := time.NewTicker(logPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ws, err := h.s.LogWorkers(id)
		gone := err != nil // the endpoint was deleted: send what is left, end
		for _, wi := range ws {
			if seen[wi.ID] {
				continue
			}
			if f, err := os.Open(wi.LogPath); err == nil {
				st, err := f.Stat()
				if err == nil && st.Mode().IsRegular() {
					seen[wi.ID] = true
					add(wi.ID, workerlog.Follow(wi.LogPath, f, 0))
					continue
				}
				f.Close()
			}
			// No log (yet): a live worker's may appear by the next poll; a
			// stopped one's will not.
			seen[wi.ID] = wi.State == scheduler.WorkerStopped
		}
		kept := order[:0]
		for _, wid := range order {
			p := parts[wid]
			_, live := h.s.WorkerLog(wid)
			now := time.Now()
			p.pw.now = now
			err := p.lf.Poll(p.pw, nil)
			if err != nil || !live || gone {
				// Stopped: its log is complete and was just sent.
				p.pw.end()
				p.lf.Close()
				delete(parts, wid)
				continue
			}
			kept = append(kept, wid)
		}
		order = kept
		flush()
		if gone {
			return
		}
	}
}

// prefixWriter writes one worker's followed output as lines prefixed with
// the worker's id (and, with timestamps, the time they were read at),
// keeping an unfinished line (up to limits.LogLine) for the next write.
type prefixWriter struct {
	id      string
	out     io.Writer
	opts    logOptions
	now     time.Time
	partial []byte
	scratch []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			room := limits.LogLine - len(p.partial)
			if len(b) < room {
				p.partial = append(p.partial, b...)
				return n, nil
			}
			p.partial = append(p.partial, b[:room]...)
			b = b[room:]
			if err := p.emit(); err != nil {
				return n - len(b), err
			}
			continue
		}
		p.partial = append(p.partial, b[:i]...)
		b = b[i+1:]
		if err := p.emit(); err != nil {
			return n - len(b), err
		}
	}
	return n, nil
}

// end sends an unfinished last line.
func (p *prefixWriter) end() {
	if len(p.partial) > 0 {
		p.emit()
	}
}

func (p *prefixWriter) emit() error {
	line := p.partial
	p.partial = p.partial[:0]
	if !p.opts.since.IsZero() && p.now.Before(p.opts.since) {
		return nil
	}
	return writeLogLine(p.out, &p.scratch, p.id, p.now, line, p.opts.timestamps)
}

// writeLogLine writes "ID | [TIME ]LINE\n", built in *scratch (kept for
// the next line).
func writeLogLine(w io.Writer, scratch *[]byte, id string, t time.Time, line []byte, timestamps bool) error {
	buf := (*scratch)[:0]
	buf = append(buf, id...)
	buf = append(buf, " | "...)
	if timestamps {
		buf = t.UTC().AppendFormat(buf, logTimeFormat)
		buf = append(buf, ' ')
	}
	buf = append(buf, line...)
	buf = append(buf, '\n')
	*scratch = buf
	_, err := w.Write(buf)
	return err
}

// logSource is one worker's log in the merge: its lines in file order,
// each with the time its index gives it (workerlog.Lines).
type logSource struct {
	id    string
	lines *workerlog.Lines
	// live says the worker was live when the request came: it is
	// followed.
	live bool
}

// openLogSource opens worker id's log at path for the backlog: its last
// maxLogTail bytes, from the first line written since since (holdPartial:
// an unfinished last line is left to the follow). It returns nil when
// there is no log to read.
func openLogSource(id, path string, since time.Time, holdPartial bool) *logSource {
	l := workerlog.OpenLines(path, maxLogTail, since, holdPartial)
	if l == nil {
		return nil
	}
	return &logSource{id: id, lines: l}
}

func (s *logSource) close() { s.lines.Close() }

// mergeLogs writes the sources' lines in time order (by their index; a
// tie goes to the worker that started first, and one worker's lines stay
// in file order), leaving out those before opts.since.
func mergeLogs(w io.Writer, srcs []*logSource, opts logOptions) error {
	var scratch []byte
	for {
		var first *logSource
		var line []byte
		var at time.Time
		for _, s := range srcs {
			if l, t, ok := s.lines.Line(); ok && (first == nil || t.Before(at)) {
				first, line, at = s, l, t
			}
		}
		if first == nil {
			return nil
		}
		if opts.since.IsZero() || !at.Before(opts.since) {
			if err := writeLogLine(w, &scratch, first.id, at, line, opts.timestamps); err != nil {
				return err
			}
		}
		first.lines.Next()
	}
}
