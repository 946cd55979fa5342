package httpapi

import (
	"bytes"
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/scheduler/limits"
)

// The console's login. A browser must not keep an API key where a script
// could read it (web storage, a URL), so the console exchanges the key once
// for a session: POST /console/session answers with a cookie that scripts
// cannot read (HttpOnly), that the browser never sends with a request
// started by another site (SameSite=Strict), and, over TLS, only over TLS
// (Secure). The answer also carries a CSRF token, which the console keeps
// in memory and sends as X-CSRF-Token with every change: a second guard
// against cross-site requests, for browsers that ignore SameSite.
//
// A session remembers the key it was opened with and every request looks
// the key up again, so a key that is revoked, rotated or expires ends its
// sessions at once, and the session's caller (scope, endpoints) is always
// the key's. Sessions live in memory only (limits.ConsoleSessions,
// ConsoleSessionTTL, ConsoleSessionIdle): a restart logs every console out.

// SessionCookie is the console session cookie's name.
const SessionCookie = "ember_session"

// CSRFHeader carries the session's CSRF token on every request that
// changes something.
const CSRFHeader = "X-CSRF-Token"

// session is one console login.
type session struct {
	// key is the API key the session was opened with. It never leaves
	// emberd's memory: not in a log, not in an answer.
	key      string
	csrf     string
	created  time.Time
	lastUsed time.Time
	// elem is the session's place in sessions.lru, most recent first.
	elem *list.Element
}

// sessions holds the live console sessions, by the SHA-256 of their
// cookie, so that a lookup compares hashes of secrets, not secrets.
type sessions struct {
	mu   sync.Mutex
	byID map[[32]byte]*session
	// lru orders the sessions by last use (front: most recent); its
	// values are the sessions' ids.
	lru *list.List
	now func() time.Time
	ttl time.Duration
	// idle is how long an unused session lasts.
	idle time.Duration
	max  int
}

func newSessions(now func() time.Time) *sessions {
	if now == nil {
		now = time.Now
	}
	return &sessions{
		byID: make(map[[32]byte]*session), lru: list.New(), now: now,
		ttl:  limits.ConsoleSessionTTL * time.Second,
		idle: limits.ConsoleSessionIdle * time.Second,
		max:  limits.ConsoleSessions,
	}
}

// randomToken is 32 random bytes, base64url.
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// open starts a session for key and returns its cookie value. Past
// max sessions, the least recently used one ends.
func (ss *sessions) open(key string) (id string, s *session, err error) {
	if id, err = randomToken(); err != nil {
		return "", nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	now := ss.now()
	s = &session{key: key, csrf: csrf, created: now, lastUsed: now}
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for len(ss.byID) >= ss.max {
		ss.removeLocked(ss.lru.Back().Value.([32]byte))
	}
	s.elem = ss.lru.PushFront(h)
	ss.byID[h] = s
	return id, s, nil
}

// get returns the live session of a cookie value, and marks it used; nil
// for an unknown or expired one (which is forgotten).
func (ss *sessions) get(id string) *session {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[h]
	if s == nil {
		return nil
	}
	now := ss.now()
	if now.Sub(s.created) >= ss.ttl || now.Sub(s.lastUsed) >= ss.idle {
		ss.removeLocked(h)
		return nil
	}
	s.lastUsed = now
	ss.lru.MoveToFront(s.elem)
	return s
}

// end forgets the session of a cookie value, if any.
func (ss *sessions) end(id string) {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.removeLocked(h)
}

func (ss *sessions) removeLocked(h [32]byte) {
	if s := ss.byID[h]; s != nil {
		ss.lru.Remove(s.elem)
		delete(ss.byID, h)
	}
}

// len is the number of sessions held, expired ones included until used.
func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.byID)
}

// expiresAt is when s ends if it stays in use.
func (ss *sessions) expiresAt(s *session) time.Time { return s.created.Add(ss.ttl) }

// sessionRefusal is the 401 of a request whose session cookie names no
// live session, or whose key no longer works.
func sessionRefusal(msg string) *authz.Refusal {
	return &authz.Refusal{Code: http.StatusUnauthorized, Reason: auth.ReasonSession, Message: msg}
}

const (
	msgNoSession  = "no console session, or it has expired: log in again"
	msgKeyChanged = "the key this console session was opened with no longer works (revoked, rotated or expired): log in again"
)

// sessionKey is the key of the request's console session, for a request
// that presents no key: "" and nil with no session cookie (the caller
// then answers "missing API key"), a 401 for a cookie with no live
// session, and a 403 for a change without the session's CSRF token.
func (h *Server) sessionKey(r *http.Request) (string, *authz.Refusal) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return "", nil
	}
	s := h.sessions.get(ck.Value)
	if s == nil {
		return "", sessionRefusal(msgNoSession)
	}
	if !safeMethod(r.Method) && subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.csrf)) != 1 {
		return "", &authz.Refusal{Code: http.StatusForbidden, Reason: auth.ReasonCSRF,
			Message: "missing or wrong " + CSRFHeader + " header: a console change must carry the session's CSRF token (GET /console/session gives it)"}
	}
	if _, err := h.lookup(s.key); err != nil {
		h.sessions.end(ck.Value)
		return "", sessionRefusal(msgKeyChanged)
	}
	return s.key, nil
}

// safeMethod: the methods that change nothing, which need no CSRF token.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sessionJSON is the answer to a login and to GET /console/session.
type sessionJSON struct {
	CSRFToken string     `json:"csrfToken"`
	KeyID     string     `json:"keyId,omitempty"`
	Name      string     `json:"name,omitempty"`
	Scope     auth.Scope `json:"scope"`
	// Endpoints are the endpoints an invoke key may use (empty: all).
	Endpoints []string `json:"endpoints,omitempty"`
	// ExpiresAt is when the session ends at the latest (RFC 3339).
	ExpiresAt string `json:"expiresAt"`
}

func (h *Server) sessionAnswer(s *session, c auth.Caller) sessionJSON {
	return sessionJSON{CSRFToken: s.csrf, KeyID: c.KeyID, Name: c.Name, Scope: c.Scope, Endpoints: c.Endpoints,
		ExpiresAt: h.sessions.expiresAt(s).UTC().Format(time.RFC3339)}
}

// serveSession: POST logs in ({"key"}), GET says who is logged in, DELETE
// logs out.
func (h *Server) serveSession(w http.ResponseWriter, r *http.Request, _ []string) {
	switch r.Method {
	case http.MethodPost:
		h.login(w, r)
	case http.MethodDelete:
		h.logout(w, r)
	default:
		ck, err := r.Cookie(SessionCookie)
		var s *session
		if err == nil {
			s = h.sessions.get(ck.Value)
		}
		if s == nil {
			writeSessionRefusal(w, sessionRefusal(msgNoSession))
			return
		}
		c, err := h.lookup(s.key)
		if err != nil {
			h.sessions.end(ck.Value)
			writeSessionRefusal(w, sessionRefusal(msgKeyChanged))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, h.sessionAnswer(s, c))
	}
}

func writeSessionRefusal(w http.ResponseWriter, ref *authz.Refusal) {
	ref.Count()
	writeJSONStatus(w, ref.Code, map[string]any{"error": ref.Message, "reason": ref.Reason})
}

func (h *Server) login(w http.ResponseWriter, r *http.Request) {
	body, tooBig, size, err := readBody(w, r, limits.KeyBody)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	case tooBig:
		writeTooLarge(w, "POST /console/session", limits.KeyBody, size)
		return
	}
	var req struct {
		Key *string `json:"key"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, `request body: want one JSON object {"key": "API key"}`)
		return
	}
	if req.Key == nil || *req.Key == "" {
		writeError(w, http.StatusBadRequest, "key: required (an API key: the admin key's file, or one made with ember key create)")
		return
	}
	c, ref := authz.Authenticate(h.lookup, *req.Key)
	if ref != nil {
		ref.Count()
		writeJSONStatus(w, ref.Code, map[string]any{"error": ref.Message, "reason": ref.Reason})
		h.log.Info("console login refused", "reason", ref.Reason, "remote", r.RemoteAddr)
		return
	}
	id, s, err := h.sessions.open(*req.Key)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "console login: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		MaxAge: int(h.sessions.ttl / time.Second),
	})
	h.log.Info("console login", "key_id", c.KeyID, "key_name", c.Name, "key_scope", string(c.Scope), "remote", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, h.sessionAnswer(s, c))
}

// logout ends the session and clears its cookie. With a live session it
// needs the session's CSRF token (another site must not log an operator
// out); without one there is nothing to end, and it answers 204 all the
// same.
func (h *Server) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(SessionCookie); err == nil {
		if s := h.sessions.get(ck.Value); s != nil {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.csrf)) != 1 {
				writeSessionRefusal(w, &authz.Refusal{Code: http.StatusForbidden, Reason: auth.ReasonCSRF,
					Message: "missing or wrong " + CSRFHeader + " header: logging out needs the session's CSRF token"})
				return
			}
			h.sessions.end(ck.Value)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}
