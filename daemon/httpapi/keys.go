package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

// KeyStore holds the named admin keys (package keys; *keys.Store
// implements it). adminOK accepts a key it finds Valid besides those of
// Config.Keys, and /v1/keys manages it.
type KeyStore interface {
	// Valid reports whether secret is a live key's; it is called on every
	// admin request and must be fast.
	Valid(secret string) bool
	Create(name string) (keys.Key, string, error)
	List() []keys.Key
	Revoke(id string) (keys.Key, error)
}

// keyJSON is a key on the wire; Key (the secret) is set only in the answer
// to its creation.
type keyJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Key       string `json:"key,omitempty"`
	CreatedAt string `json:"createdAt"`
}

func toKeyJSON(k keys.Key) keyJSON {
	return keyJSON{ID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339)}
}

// serveKeys serves the admin key routes (the caller checked the key):
//
//	POST   /v1/keys       {"name"}  -> {"id","name","key","createdAt"}  (the only time the secret is sent)
//	GET    /v1/keys                 -> {"keys":[{"id","name","createdAt"}...]}, oldest first
//	DELETE /v1/keys/{id}            -> {"id","name","createdAt"} of the revoked key
//
// The bootstrap key (DATA-DIR/api.key) is not listed and cannot be revoked
// here: it has no id.
func (h *Server) serveKeys(w http.ResponseWriter, r *http.Request, rest []string) {
	if h.cfg.KeyStore == nil {
		writeError(w, http.StatusNotFound, "named API keys are not enabled on this daemon (no key store)")
		return
	}
	switch {
	case len(rest) == 0:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			list := h.cfg.KeyStore.List()
			out := make([]keyJSON, len(list))
			for i, k := range list {
				out[i] = toKeyJSON(k)
			}
			writeJSON(w, struct {
				Keys []keyJSON `json:"keys"`
			}{out})
		case http.MethodPost:
			h.createKey(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /v1/keys; use GET or POST")
		}
	case len(rest) == 1:
		if r.Method != http.MethodDelete {
			w.Header().Set("Allow", http.MethodDelete)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /v1/keys/{id}; use DELETE")
			return
		}
		k, err := h.cfg.KeyStore.Revoke(rest[0])
		if errors.Is(err, keys.ErrNotFound) {
			writeError(w, http.StatusNotFound, "no API key with id "+strconv.Quote(rest[0])+
				" (list them with GET /v1/keys; the bootstrap key in api.key has no id and cannot be revoked through the API)")
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		h.log.Info("API key revoked", "id", k.ID, "name", k.Name)
		writeJSON(w, toKeyJSON(k))
	default:
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	}
}

func (h *Server) createKey(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Scheduler != nil {
		if err := h.cfg.Scheduler.CheckDisk(scheduler.NewWork, 0); err != nil {
			writeSchedErr(w, err)
			return
		}
	}
	body, tooBig, _, err := readBody(w, r, limits.KeyBody)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	case tooBig:
		writeError(w, http.StatusRequestEntityTooLarge, "request body over 4 KiB; send {\"name\":\"NAME\"}")
		return
	}
	var req struct {
		Name *string `json:"name"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: want {\"name\":\"NAME\"}: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body: want one JSON object, {\"name\":\"NAME\"}")
		return
	}
	if req.Name == nil {
		writeError(w, http.StatusBadRequest, "name: required (1 to 63 characters)")
		return
	}
	k, secret, err := h.cfg.KeyStore.Create(*req.Name)
	var ne *keys.NameError
	switch {
	case errors.As(err, &ne):
		writeError(w, http.StatusBadRequest, ne.Error())
		return
	case errors.Is(err, keys.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h.log.Info("API key created", "id", k.ID, "name", k.Name)
	out := toKeyJSON(k)
	out.Key = secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, out)
}
