package httpapi

import (
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// consoleCSP keeps the console to its own files: scripts only from
// emberd (no inline script, no eval), connections only back to emberd,
// and no framing (clickjacking). Inline style attributes are allowed: the
// pages set widths and colours of bars and charts that way.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// serveConsole serves the web console's files (package daemon/console):
// index.html at "/", every other file at "/console/NAME". They are
// public: the page holds no data, and everything it shows comes from the
// API, behind the session (session.go).
func (h *Server) serveConsole(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.cfg.Console == nil {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path+" (this daemon serves no web console)")
		return
	}
	name := "index.html"
	if len(segs) > 1 {
		name = path.Clean(strings.Join(segs[1:], "/"))
	}
	if !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	st, err := fs.Stat(h.cfg.Console, name)
	if err != nil || st.IsDir() {
		writeError(w, http.StatusNotFound, "no such console file: "+r.URL.Path)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", consoleCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	// The files change with emberd's version and have no modification
	// time (they are embedded): the browser asks again each time.
	hd.Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, h.cfg.Console, name)
}
