package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/limits"
)

// KeyStore holds the API keys (package keys; *keys.Store implements it):
// ServeHTTP looks every presented key up in it, and /v1/keys manages it.
type KeyStore interface {
	// Lookup returns the caller of secret, or keys.ErrMissing,
	// keys.ErrWrong or a *keys.ExpiredError; it is called on every request
	// with a key and must be fast.
	Lookup(secret string) (auth.Caller, error)
	Create(spec keys.Spec) (keys.Key, string, error)
	List() []keys.Key
	Revoke(id string) (keys.Key, error)
	// RotateAdmin replaces the bootstrap admin key, in its file and in
	// memory, and returns the new key and the file.
	RotateAdmin() (secret, file string, err error)
}

// keyJSON is a key on the wire; Key (the secret) is set only in the answer
// to its creation, LastUsedAt only in lists.
type keyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Key        string     `json:"key,omitempty"`
	Scope      auth.Scope `json:"scope"`
	Endpoints  []string   `json:"endpoints"`
	CreatedAt  string     `json:"createdAt"`
	ExpiresAt  string     `json:"expiresAt"`
	LastUsedAt *string    `json:"lastUsedAt,omitempty"`
}

// rfc3339 is t in RFC 3339, UTC; "" for the zero time.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func toKeyJSON(k keys.Key, withLastUse bool) keyJSON {
	j := keyJSON{ID: k.ID, Name: k.Name, Scope: k.Scope, Endpoints: k.Endpoints,
		CreatedAt: rfc3339(k.CreatedAt), ExpiresAt: rfc3339(k.ExpiresAt)}
	if j.Endpoints == nil {
		j.Endpoints = []string{}
	}
	if withLastUse {
		u := rfc3339(k.LastUsedAt)
		j.LastUsedAt = &u
	}
	return j
}

// serveKeys serves the key routes (admin only; ServeHTTP checked):
//
//	POST   /v1/keys       {"name","scope","endpoints","expiresIn"}
//	                      -> {"id","name","key","scope","endpoints","createdAt","expiresAt"}  (the only time the secret is sent)
//	GET    /v1/keys       -> {"keys":[{"id","name","scope","endpoints","createdAt","expiresAt","lastUsedAt"}...]}, oldest first
//	DELETE /v1/keys/{id}  -> the revoked key
//
// The bootstrap key (DATA-DIR/api.key) is not listed and cannot be revoked
// here: it has no id. POST /v1/keys:rotate-admin replaces it (rotateAdmin).
func (h *Server) serveKeys(w http.ResponseWriter, r *http.Request, rest []string) {
	if h.cfg.KeyStore == nil {
		writeError(w, http.StatusNotFound, "named API keys are not enabled on this daemon (no key store)")
		return
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		h.createKey(w, r)
	case len(rest) == 0:
		list := h.cfg.KeyStore.List()
		out := make([]keyJSON, len(list))
		for i, k := range list {
			out[i] = toKeyJSON(k, true)
		}
		writeJSON(w, struct {
			Keys []keyJSON `json:"keys"`
		}{out})
	default:
		k, err := h.cfg.KeyStore.Revoke(rest[0])
		if errors.Is(err, keys.ErrNotFound) {
			writeError(w, http.StatusNotFound, "no API key with id "+strconv.Quote(rest[0])+
				" (list them with GET /v1/keys; the bootstrap key in api.key has no id and cannot be revoked through the API)")
			return
		}
		audit.Record(r.Context(), h.log, audit.KeyRevoke, rest[0], err, keyAttrs(k)...)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, toKeyJSON(k, true))
	}
}

// keyAttrs are the audit attributes of key k: its name and scope (the
// object is its id). Never its secret.
func keyAttrs(k keys.Key) []slog.Attr {
	if k.ID == "" {
		return nil
	}
	return []slog.Attr{slog.String("target_name", k.Name), slog.String("target_scope", string(k.Scope))}
}

// createKeyUsage is the body POST /v1/keys wants, for 400s.
const createKeyUsage = `want {"name":"NAME","scope":"admin|invoke|read","endpoints":["ID or NAME",...],"expiresIn":"30d"}`

func (h *Server) createKey(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Scheduler != nil {
		if err := h.cfg.Scheduler.DiskGuard().Check(diskguard.NewWork, 0); err != nil {
			writeSchedErr(w, err)
			return
		}
	}
	body, tooBig, size, err := readBody(w, r, limits.KeyBody)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	case tooBig:
		writeTooLarge(w, "POST /v1/keys", limits.KeyBody, size)
		return
	}
	var req struct {
		Name      *string  `json:"name"`
		Scope     *string  `json:"scope"`
		Endpoints []string `json:"endpoints"`
		ExpiresIn *string  `json:"expiresIn"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+createKeyUsage+": "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body: "+createKeyUsage+" (one JSON object)")
		return
	}
	if req.Name == nil {
		writeError(w, http.StatusBadRequest, "name: required (1 to 63 characters)")
		return
	}
	if req.Scope == nil || *req.Scope == "" {
		writeError(w, http.StatusBadRequest, "scope: required: admin, invoke or read")
		return
	}
	spec := keys.Spec{Name: *req.Name, Scope: auth.Scope(*req.Scope)}
	if _, err := auth.ParseScope(*req.Scope); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("scope: %q: want admin, invoke or read", *req.Scope))
		return
	}
	if len(req.Endpoints) > 0 && spec.Scope != auth.Invoke {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("endpoints: only an invoke key lists endpoints; a %s key reaches every endpoint its scope allows", spec.Scope))
		return
	}
	if len(req.Endpoints) > keys.MaxEndpoints {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("endpoints: %d listed; at most %d", len(req.Endpoints), keys.MaxEndpoints))
		return
	}
	if spec.Endpoints, err = h.resolveEndpoints(req.Endpoints); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.ExpiresIn != nil {
		if spec.ExpiresIn, err = ParseExpiresIn(*req.ExpiresIn); err != nil {
			writeError(w, http.StatusBadRequest, "expiresIn: "+err.Error())
			return
		}
	}
	k, secret, err := h.cfg.KeyStore.Create(spec)
	var ne *keys.NameError
	var se *keys.SpecError
	switch {
	case errors.As(err, &ne), errors.As(err, &se):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, keys.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	object := k.ID
	if err != nil {
		object = spec.Name
	}
	audit.Record(r.Context(), h.log, audit.KeyCreate, object, err,
		slog.String("target_name", spec.Name), slog.String("target_scope", string(spec.Scope)),
		slog.String("target_endpoints", strings.Join(spec.Endpoints, ",")), slog.String("target_expires_at", rfc3339(k.ExpiresAt)))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := toKeyJSON(k, false)
	out.Key = secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, out)
}

// resolveEndpoints turns endpoint ids or names into ids: an id first, else
// the one endpoint with that name. Unknown and ambiguous ones are errors
// naming them.
func (h *Server) resolveEndpoints(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	var eps []struct{ id, name string }
	if h.s != nil {
		for _, e := range h.s.Endpoints() {
			eps = append(eps, struct{ id, name string }{e.ID, e.Name})
		}
	}
	out := make([]string, 0, len(in))
	for _, x := range in {
		id, byName := "", 0
		for _, e := range eps {
			if e.id == x {
				id, byName = e.id, 0
				break
			}
			if e.name == x {
				id = e.id
				byName++
			}
		}
		switch {
		case id == "":
			return nil, fmt.Errorf("endpoints: no endpoint has the id or name %q (list them with GET /v1/endpoints)", x)
		case byName > 1:
			return nil, fmt.Errorf("endpoints: %d endpoints are named %q; give the id", byName, x)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// ParseExpiresIn reads a key lifetime: a Go duration ("36h", "90m",
// "1h30m") or a number of days ("30d"), optionally followed by a Go
// duration ("1d12h"). It must be positive; keys.Store.Create bounds it.
func ParseExpiresIn(s string) (time.Duration, error) {
	const usage = `want a duration such as "30d", "12h" or "90m" (leave it out for a key that never expires)`
	rest, days := s, int64(0)
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > 100000 {
			return 0, fmt.Errorf("%q: %s", s, usage)
		}
		rest, days = s[i+1:], n
	}
	d := time.Duration(days) * 24 * time.Hour
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil || x < 0 {
			return 0, fmt.Errorf("%q: %s", s, usage)
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: %s", s, usage)
	}
	if d < keys.MinExpiresIn || d > keys.MaxExpiresIn {
		return 0, fmt.Errorf("%q is out of range: at least 1m, at most 3650d (10 years); leave it out for a key that never expires", s)
	}
	return d, nil
}

// rotateAdmin serves POST /v1/keys:rotate-admin: a new bootstrap admin key,
// written to its file, and the old one refused from this moment on.
// Answer: {"key":"NEW","file":"/path/api.key"}.
func (h *Server) rotateAdmin(w http.ResponseWriter, r *http.Request) {
	if h.cfg.KeyStore == nil {
		writeError(w, http.StatusNotFound, "the admin key cannot be rotated on this daemon (no key store)")
		return
	}
	secret, file, err := h.cfg.KeyStore.RotateAdmin()
	audit.Record(r.Context(), h.log, audit.KeyRotateAdmin, auth.BootstrapKeyID, err, slog.String("file", file))
	if errors.Is(err, keys.ErrNoAdminFile) {
		writeError(w, http.StatusNotFound, "the admin key cannot be rotated on this daemon: it has no api.key file")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, struct {
		Key  string `json:"key"`
		File string `json:"file"`
	}{secret, file})
}
