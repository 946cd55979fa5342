package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// serveTemplates serves the templates and Quick Deploy (routes.go's
// template rows; ServeHTTP checked the scope):
//
//	GET    /v1/templates                -> {"templates":[T...]} (read)
//	POST   /v1/templates         T      -> T at version 1 (admin)
//	GET    /v1/templates/{name}         -> T (read)
//	PATCH  /v1/templates/{name}  T      -> T replaced as a whole, version+1 (admin)
//	DELETE /v1/templates/{name}         -> T as it was (admin; a built-in: 409)
//	POST   /v1/templates/{name}:deploy {"name","env",...} -> the endpoint, as GET /v1/endpoints/{id} answers (admin)
//
// T is templates.Template's JSON. Errors are {"error"} with "field" when a
// field is at fault: 400 for bad input, 404, 409 (a name taken, a
// built-in changed, an image not imported), 413.
func (h *Server) serveTemplates(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.cfg.Templates == nil {
		writeError(w, http.StatusNotFound, "templates are not enabled on this daemon (no template store)")
		return
	}
	rest := segs[2:]
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		h.createTemplate(w, r)
	case len(rest) == 0:
		writeJSON(w, struct {
			Templates []templates.Template `json:"templates"`
		}{h.cfg.Templates.List()})
	case r.Method == http.MethodPost:
		// Only the :deploy row takes POST below /v1/templates/; a GET of
		// "NAME:deploy" is a read of a template by that name (none).
		h.deployTemplate(w, r, strings.TrimSuffix(rest[0], ":deploy"))
	case r.Method == http.MethodPatch:
		h.updateTemplate(w, r, rest[0])
	case r.Method == http.MethodDelete:
		name := rest[0]
		t, err := h.cfg.Templates.Get(name)
		if err == nil {
			err = h.cfg.Templates.Delete(name)
		}
		if !errors.Is(err, templates.ErrNotFound) {
			audit.Record(r.Context(), h.log, audit.TemplateDelete, name, err)
		}
		if err != nil {
			writeTemplateErr(w, err)
			return
		}
		writeJSON(w, t)
	default:
		t, err := h.cfg.Templates.Get(rest[0])
		if err != nil {
			writeTemplateErr(w, err)
			return
		}
		writeJSON(w, t)
	}
}

// templateUsage is the body POST and PATCH /v1/templates want, for 400s.
const templateUsage = `want a template: {"name","image","description","category","command":[...],"env":[{"name","description","default","required","secret"}],"gpuCount","gpuTypes":[...],"memoryMb","cpus","workersMin","workersMax","idleTimeout","executionTimeoutMs","scalerType","scalerValue","flashboot"}`

// readTemplateBody reads and decodes a JSON body of at most limit bytes
// into v, refusing unknown fields (nothing sent is silently dropped); it
// has answered when it returns false.
func readTemplateBody(w http.ResponseWriter, r *http.Request, limit int64, usage string, v any) bool {
	body, tooBig, size, err := readBody(w, r, limit)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return false
	case tooBig:
		writeTooLarge(w, r.Method+" "+r.URL.Path, limit, size)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+usage+": "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body: "+usage+" (one JSON object)")
		return false
	}
	return true
}

// checkDisk refuses a change when the data disk is below its free-space
// floor, as the other writes are (507).
func (h *Server) checkDisk(w http.ResponseWriter) bool {
	if h.s == nil {
		return true
	}
	if err := h.s.DiskGuard().Check(diskguard.NewWork, 0); err != nil {
		writeSchedErr(w, err)
		return false
	}
	return true
}

func (h *Server) createTemplate(w http.ResponseWriter, r *http.Request) {
	if !h.checkDisk(w) {
		return
	}
	var t templates.Template
	if !readTemplateBody(w, r, limits.TemplateBody, templateUsage, &t) {
		return
	}
	out, err := h.cfg.Templates.Create(t)
	audit.Record(r.Context(), h.log, audit.TemplateCreate, t.Name, err, slog.String("image", t.Image))
	if err != nil {
		writeTemplateErr(w, err)
		return
	}
	writeJSON(w, out)
}

func (h *Server) updateTemplate(w http.ResponseWriter, r *http.Request, name string) {
	if !h.checkDisk(w) {
		return
	}
	var t templates.Template
	if !readTemplateBody(w, r, limits.TemplateBody, templateUsage, &t) {
		return
	}
	out, err := h.cfg.Templates.Update(name, t)
	if !errors.Is(err, templates.ErrNotFound) {
		audit.Record(r.Context(), h.log, audit.TemplateUpdate, name, err, slog.Int("version", out.Version))
	}
	if err != nil {
		writeTemplateErr(w, err)
		return
	}
	writeJSON(w, out)
}

// deployRequest is the body of POST /v1/templates/{name}:deploy.
type deployRequest struct {
	Name        string            `json:"name"`
	Env         map[string]string `json:"env"`
	GPUCount    *int              `json:"gpuCount"`
	GPUTypes    []string          `json:"gpuTypes"`
	WorkersMin  *int              `json:"workersMin"`
	WorkersMax  *int              `json:"workersMax"`
	IdleTimeout *int              `json:"idleTimeout"`
}

const deployUsage = `want {"name":"ENDPOINT-NAME","env":{"VAR":"value"},"gpuCount":N,"gpuTypes":[...],"workersMin":N,"workersMax":N,"idleTimeout":SECONDS} (all but name optional)`

// deployTemplate creates an endpoint from a template, as POST
// /v1/endpoints does (the scheduler validates it, the same audit record),
// after checking that the template's image is imported: an offline
// appliance cannot pull it on the first job, so the operator is told how
// to import it now.
func (h *Server) deployTemplate(w http.ResponseWriter, r *http.Request, name string) {
	if h.s == nil {
		writeError(w, http.StatusServiceUnavailable, "this daemon has no scheduler to create endpoints with")
		return
	}
	t, err := h.cfg.Templates.Get(name)
	if err != nil {
		writeTemplateErr(w, err)
		return
	}
	var req deployRequest
	if !readTemplateBody(w, r, limits.TemplateDeployBody, deployUsage, &req) {
		return
	}
	sp, err := t.Resolve(templates.Deploy{Name: req.Name, Env: req.Env, GPUCount: req.GPUCount, GPUTypes: req.GPUTypes,
		WorkersMin: req.WorkersMin, WorkersMax: req.WorkersMax, IdleTimeoutSec: req.IdleTimeout})
	if err != nil {
		writeTemplateErr(w, err)
		return
	}
	// With the process runtime there is no image store (Images nil): the
	// worker is the template's command on the host.
	if h.cfg.Images != nil {
		if _, err := h.cfg.Images.Resolve(t.Image); err != nil {
			writeJSONStatus(w, http.StatusConflict, map[string]string{"field": "image",
				"error": fmt.Sprintf("image %s is not in this machine's image store; load it with: ember image load -i FILE (or ember image pull %s)", t.Image, t.Image)})
			return
		}
	}
	e, err := h.s.CreateEndpoint(r.Context(), sp)
	attrs := []slog.Attr{slog.String("name", req.Name), slog.String("template", t.Name), slog.Int("template_version", t.Version)}
	if err != nil {
		// No id yet: the object is the name asked for, as for a create.
		audit.Record(r.Context(), h.log, audit.EndpointCreate, req.Name, err, attrs...)
		writeTemplateErr(w, err)
		return
	}
	audit.Record(r.Context(), h.log, audit.EndpointCreate, e.ID, nil, append(attrs, slog.String("endpoint", e.ID))...)
	// The answer is GET /v1/endpoints/{id}'s, served by the gateway in
	// this request's context: the same JSON by construction, without
	// this package knowing the protobuf form (docs/architecture.md).
	if h.cfg.Gateway == nil {
		writeJSON(w, e) // no /v1 gateway (tests): the stored record
		return
	}
	get := r.Clone(r.Context())
	get.Method, get.Body, get.ContentLength = http.MethodGet, http.NoBody, 0
	get.URL = &url.URL{Path: "/v1/endpoints/" + e.ID}
	h.cfg.Gateway.ServeHTTP(w, get)
}

// writeTemplateErr answers a template store or deploy error: a field error
// 400 with "field", not found 404, a name taken, a built-in, a stale
// version or the limit 409, the scheduler's own errors as elsewhere.
func writeTemplateErr(w http.ResponseWriter, err error) {
	var fe *spec.FieldError
	switch {
	case errors.As(err, &fe):
		writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": fe.Error(), "field": fe.Field})
	case errors.Is(err, templates.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, templates.ErrExists), errors.Is(err, templates.ErrBuiltin),
		errors.Is(err, templates.ErrConflict), errors.Is(err, templates.ErrFull):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeSchedErr(w, err)
	}
}
