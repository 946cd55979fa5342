package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// RunPod's REST model, served under /runpod/v1 so that a RunPod REST
// client pointed at http://HOST:PORT/runpod/v1 (in place of
// https://rest.runpod.io/v1) manages Ember's templates and endpoints:
//
//	GET    /runpod/v1/templates                     [Template...]  (read)
//	POST   /runpod/v1/templates                     Template       (admin)
//	GET    /runpod/v1/templates/{templateId}        Template       (read)
//	PATCH  /runpod/v1/templates/{templateId}        Template       (admin; also POST .../update)
//	DELETE /runpod/v1/templates/{templateId}        204            (admin)
//	GET    /runpod/v1/endpoints                     [Endpoint...]  (read)
//	POST   /runpod/v1/endpoints                     Endpoint       (admin)
//	GET    /runpod/v1/endpoints/{endpointId}        Endpoint       (read)
//	PATCH  /runpod/v1/endpoints/{endpointId}        Endpoint       (admin; also POST .../update)
//	DELETE /runpod/v1/endpoints/{endpointId}        204            (admin)
//
// Lists are bare JSON arrays and errors RunPod's {"message"} (with
// "field" for a field at fault), as rest.runpod.io/v1 answers. The mapping
// is runpodrestmap.go; docs/compat.md ("RunPod REST model") is its table.

// serveRunPodREST routes a /runpod/v1 request (the key was checked by
// ServeHTTP against the route's scope).
func (h *Server) serveRunPodREST(w http.ResponseWriter, r *http.Request, segs []string) {
	rest := segs[2:] // after "runpod", "v1"
	update := len(rest) == 3 && rest[2] == "update"
	var err error
	switch {
	case rest[0] == "endpoints" && h.s == nil:
		err = &rpError{Code: http.StatusServiceUnavailable, Message: "this daemon has no scheduler to keep endpoints"}
	case rest[0] == "templates" && len(rest) == 1 && r.Method == http.MethodPost:
		err = h.rpCreateTemplate(w, r)
	case rest[0] == "templates" && len(rest) == 1:
		err = h.rpListTemplates(w, r)
	case rest[0] == "templates" && (r.Method == http.MethodPatch || update):
		err = h.rpUpdateTemplate(w, r, rest[1])
	case rest[0] == "templates" && r.Method == http.MethodDelete:
		err = h.rpDeleteTemplate(w, r, rest[1])
	case rest[0] == "templates":
		err = h.rpGetTemplate(w, r, rest[1])
	case rest[0] == "endpoints" && len(rest) == 1 && r.Method == http.MethodPost:
		err = h.rpCreateEndpoint(w, r)
	case rest[0] == "endpoints" && len(rest) == 1:
		err = h.rpListEndpoints(w, r)
	case rest[0] == "endpoints" && (r.Method == http.MethodPatch || update):
		err = h.rpUpdateEndpoint(w, r, rest[1])
	case rest[0] == "endpoints" && r.Method == http.MethodDelete:
		err = h.rpDeleteEndpoint(w, r, rest[1])
	default:
		err = h.rpGetEndpoint(w, r, rest[1])
	}
	if err != nil {
		writeRPError(w, err)
	}
}

// writeRPError answers err in RunPod's v1 error shape: {"message"}, with
// "field" naming the field at fault and, for a body over its limit,
// "limitBytes".
func writeRPError(w http.ResponseWriter, err error) {
	var re *rpError
	if !errors.As(err, &re) {
		re = rpErrorOf(err)
	}
	body := map[string]any{"message": re.Message}
	if re.Field != "" {
		body["field"] = re.Field
	}
	var tl *rpTooLarge
	if errors.As(err, &tl) {
		body["limitBytes"] = tl.limit
	}
	writeJSONStatus(w, re.Code, body)
}

// rpTooLarge is a body over its route's limit (413).
type rpTooLarge struct {
	rpError
	limit int64
}

// rpErrorOf maps a scheduler or template store error to a status and
// message: field errors are 400 naming RunPod's field, a missing object
// 404, a state that refuses the change (a name taken, a built-in
// template, an endpoint with queued jobs) 409; the rest as Ember's /v1
// maps them (507 for a full disk, 503 while shutting down).
func rpErrorOf(err error) *rpError {
	var tl *rpTooLarge
	if errors.As(err, &tl) {
		return &tl.rpError
	}
	var fe *spec.FieldError
	switch {
	case errors.As(err, &fe):
		return rpFieldError(fe)
	case errors.Is(err, templates.ErrNotFound):
		return &rpError{Code: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, templates.ErrExists), errors.Is(err, templates.ErrBuiltin),
		errors.Is(err, templates.ErrConflict), errors.Is(err, templates.ErrFull):
		return &rpError{Code: http.StatusConflict, Message: err.Error()}
	case errors.Is(err, scheduler.ErrExists):
		return &rpError{Code: http.StatusConflict, Message: err.Error()}
	}
	code, msg := schedErrStatus(err)
	return &rpError{Code: code, Message: msg}
}

// rpBody reads a request body of at most limit bytes.
func rpBody(w http.ResponseWriter, r *http.Request, name string, limit int64) ([]byte, error) {
	b, tooBig, size, err := readBody(w, r, limit)
	switch {
	case tooBig:
		return nil, &rpTooLarge{rpError: rpError{Code: http.StatusRequestEntityTooLarge, Message: tooLargeMessage(name, limit, size)}, limit: limit}
	case err != nil:
		return nil, rpBad("", "read request body: %v", err)
	}
	return b, nil
}

// rpBool reads a boolean query parameter (RunPod's includeTemplate and
// the like): absent is false.
func rpBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, rpBad(name, "query parameter must be true or false, not %q", v)
	}
	return b, nil
}

// templateStore is the template store, or a 404 when emberd has none.
func (h *Server) templateStore() (*templates.Store, error) {
	if h.cfg.Templates == nil {
		return nil, &rpError{Code: http.StatusNotFound, Message: "this emberd keeps no templates"}
	}
	return h.cfg.Templates, nil
}

// rpCheckDisk refuses a change when the data disk is below its free-space
// floor, as Ember's other writes are (507).
func (h *Server) rpCheckDisk() error {
	if h.s == nil {
		return nil
	}
	return h.s.DiskGuard().Check(diskguard.NewWork, 0)
}

// rpCheckImage refuses an endpoint from a template whose image is not
// imported (409), as POST /v1/templates/{name}:deploy does: an offline
// machine cannot pull it on the first job. With the process runtime there
// is no image store and nothing to check.
func (h *Server) rpCheckImage(t *templates.Template) error {
	if t == nil || h.cfg.Images == nil {
		return nil
	}
	if _, err := h.cfg.Images.Resolve(t.Image); err != nil {
		return &rpError{Code: http.StatusConflict, Field: "imageName", Message: fmt.Sprintf(
			"template %s's image %s is not in this machine's image store; load it with: ember image load -i FILE (or ember image pull %s)", t.Name, t.Image, t.Image)}
	}
	return nil
}

// ---- templates ----

// rpListTemplates lists the operator's templates; with
// includeRunpodTemplates=true Ember's built-in ones too (RunPod's
// official templates are the counterpart of Ember's built-in ones). There
// are no public or endpoint-bound templates on one machine: those two
// options are accepted and change nothing.
func (h *Server) rpListTemplates(w http.ResponseWriter, r *http.Request) error {
	st, err := h.templateStore()
	if err != nil {
		return err
	}
	builtins, err := rpBool(r, "includeRunpodTemplates")
	if err != nil {
		return err
	}
	for _, q := range []string{"includePublicTemplates", "includeEndpointBoundTemplates"} {
		if _, err := rpBool(r, q); err != nil {
			return err
		}
	}
	out := []rpTemplate{}
	for _, t := range st.List() {
		if t.Builtin && !builtins {
			continue
		}
		out = append(out, rpTemplateOf(t))
	}
	writeJSON(w, out)
	return nil
}

func (h *Server) rpGetTemplate(w http.ResponseWriter, r *http.Request, id string) error {
	st, err := h.templateStore()
	if err != nil {
		return err
	}
	t, err := st.Get(id)
	if err != nil {
		return err
	}
	writeJSON(w, rpTemplateOf(t))
	return nil
}

func (h *Server) rpCreateTemplate(w http.ResponseWriter, r *http.Request) error {
	st, err := h.templateStore()
	if err != nil {
		return err
	}
	if err := h.rpCheckDisk(); err != nil {
		return err
	}
	body, err := rpBody(w, r, "POST /runpod/v1/templates", limits.TemplateBody)
	if err != nil {
		return err
	}
	var in rpTemplateInput
	if err := decodeRP(body, &in); err != nil {
		return err
	}
	t, err := templateFromRP(in, templates.Template{}, true)
	if err == nil {
		t, err = st.Create(t)
	}
	audit.Record(r.Context(), h.log, audit.TemplateCreate, t.Name, err, slog.String("template", t.Name))
	if err != nil {
		return err
	}
	writeJSON(w, rpTemplateOf(t))
	return nil
}

func (h *Server) rpUpdateTemplate(w http.ResponseWriter, r *http.Request, id string) error {
	st, err := h.templateStore()
	if err != nil {
		return err
	}
	if err := h.rpCheckDisk(); err != nil {
		return err
	}
	body, err := rpBody(w, r, "PATCH /runpod/v1/templates/{templateId}", limits.TemplateBody)
	if err != nil {
		return err
	}
	var in rpTemplateInput
	if err := decodeRP(body, &in); err != nil {
		return err
	}
	if in.IsServerless != nil {
		// Not in RunPod's TemplateUpdateInput: a template does not change
		// between Pod and serverless.
		return rpBad("isServerless", "cannot be changed")
	}
	cur, err := st.Get(id)
	if err == nil {
		var t templates.Template
		// The version read guards the update: a change made meanwhile
		// fails it (409) instead of being overwritten.
		if t, err = templateFromRP(in, cur, false); err == nil {
			cur, err = st.Update(id, t)
		}
	}
	audit.Record(r.Context(), h.log, audit.TemplateUpdate, id, err, slog.String("template", id))
	if err != nil {
		return err
	}
	writeJSON(w, rpTemplateOf(cur))
	return nil
}

func (h *Server) rpDeleteTemplate(w http.ResponseWriter, r *http.Request, id string) error {
	st, err := h.templateStore()
	if err != nil {
		return err
	}
	err = st.Delete(id)
	audit.Record(r.Context(), h.log, audit.TemplateDelete, id, err, slog.String("template", id))
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- endpoints ----

// rpEndpointView is an endpoint as a list or get shows it, with its
// template (includeTemplate=true; none when the endpoint has none, or its
// template was deleted since) and its workers (includeWorkers=true).
func (h *Server) rpEndpointView(r *http.Request, e spec.Endpoint) (rpEndpoint, error) {
	out := rpEndpointOf(e)
	withTemplate, err := rpBool(r, "includeTemplate")
	if err != nil {
		return out, err
	}
	withWorkers, err := rpBool(r, "includeWorkers")
	if err != nil {
		return out, err
	}
	if withTemplate && e.Template != "" && h.cfg.Templates != nil {
		if t, err := h.cfg.Templates.Get(e.Template); err == nil {
			rt := rpTemplateOf(t)
			out.Template = &rt
		}
	}
	if withWorkers {
		ws := []rpWorker{}
		for _, wk := range h.s.Workers(e.ID) {
			ws = append(ws, rpWorkerOf(wk, e))
		}
		out.Workers = &ws
	}
	return out, nil
}

func (h *Server) rpListEndpoints(w http.ResponseWriter, r *http.Request) error {
	out := []rpEndpoint{}
	for _, e := range h.s.Endpoints() {
		v, err := h.rpEndpointView(r, e)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	writeJSON(w, out)
	return nil
}

func (h *Server) rpGetEndpoint(w http.ResponseWriter, r *http.Request, id string) error {
	e, err := h.s.Endpoint(id)
	if err != nil {
		return err
	}
	v, err := h.rpEndpointView(r, e)
	if err != nil {
		return err
	}
	writeJSON(w, v)
	return nil
}

// rpTemplateOfInput is the template an endpoint input names, nil when it
// names none. A name that is no template is the input's fault: 400.
func (h *Server) rpTemplateOfInput(in rpEndpointInput) (*templates.Template, error) {
	if in.TemplateID == nil {
		return nil, nil
	}
	if *in.TemplateID == "" {
		return nil, rpBad("templateId", "must name a template (GET /runpod/v1/templates?includeRunpodTemplates=true lists them)")
	}
	st, err := h.templateStore()
	if err != nil {
		return nil, err
	}
	t, err := st.Get(*in.TemplateID)
	if errors.Is(err, templates.ErrNotFound) {
		return nil, rpBad("templateId", "%v", err)
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// rpEndpointName names an endpoint created without a name: its template's
// name and a random suffix (Ember's endpoint names are unique; RunPod's
// need not be given).
func rpEndpointName(tmpl string) string {
	var b [3]byte
	rand.Read(b[:])
	// The suffix is 7 bytes; the name must stay within an endpoint
	// name's limit.
	if n := limits.EndpointName - 7; len(tmpl) > n {
		tmpl = tmpl[:n]
	}
	return tmpl + "-" + hex.EncodeToString(b[:])
}

func (h *Server) rpCreateEndpoint(w http.ResponseWriter, r *http.Request) error {
	body, err := rpBody(w, r, "POST /runpod/v1/endpoints", limits.SmallBody)
	if err != nil {
		return err
	}
	var in rpEndpointInput
	if err := decodeRP(body, &in); err != nil {
		return err
	}
	if in.TemplateID == nil {
		return rpBad("templateId", "is required")
	}
	tmpl, err := h.rpTemplateOfInput(in)
	if err != nil {
		return err
	}
	sp, err := endpointSpecFromRP(in, nil, tmpl, rpEndpointName)
	if err != nil {
		return err
	}
	if err := h.rpCheckImage(tmpl); err != nil {
		return err
	}
	e, err := h.s.CreateEndpoint(r.Context(), sp)
	object, name := e.ID, e.Name
	if err != nil && sp.Name != nil {
		object, name = *sp.Name, *sp.Name
	}
	audit.Record(r.Context(), h.log, audit.EndpointCreate, object, err, slog.String("endpoint", e.ID), slog.String("name", name), slog.String("template", tmpl.Name))
	if err != nil {
		return err
	}
	writeJSON(w, rpEndpointOf(e))
	return nil
}

func (h *Server) rpUpdateEndpoint(w http.ResponseWriter, r *http.Request, id string) error {
	body, err := rpBody(w, r, "PATCH /runpod/v1/endpoints/{endpointId}", limits.SmallBody)
	if err != nil {
		return err
	}
	var in rpEndpointInput
	if err := decodeRP(body, &in); err != nil {
		return err
	}
	cur, err := h.s.Endpoint(id)
	if err != nil {
		return err
	}
	tmpl, err := h.rpTemplateOfInput(in)
	if err != nil {
		return err
	}
	sp, err := endpointSpecFromRP(in, &cur, tmpl, nil)
	if err != nil {
		return err
	}
	if err := h.rpCheckImage(tmpl); err != nil {
		return err
	}
	e, err := h.s.UpdateEndpoint(r.Context(), id, sp)
	audit.Record(r.Context(), h.log, audit.EndpointUpdate, id, err, slog.String("endpoint", id), slog.String("name", cur.Name))
	if err != nil {
		return err
	}
	writeJSON(w, rpEndpointOf(e))
	return nil
}

func (h *Server) rpDeleteEndpoint(w http.ResponseWriter, r *http.Request, id string) error {
	name := ""
	if e, err := h.s.Endpoint(id); err == nil {
		name = e.Name
	}
	err := h.s.DeleteEndpoint(r.Context(), id)
	audit.Record(r.Context(), h.log, audit.EndpointDelete, id, err, slog.String("endpoint", id), slog.String("name", name))
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// noRunPodRESTRoute answers a /runpod path in no route: 405 with Allow for
// a method the path does not take, else 404, in RunPod's error shape.
func (h *Server) noRunPodRESTRoute(w http.ResponseWriter, r *http.Request, allow []string) {
	if len(allow) > 0 {
		allow = slices.Compact(slices.Sorted(slices.Values(allow)))
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeRPError(w, &rpError{Code: http.StatusMethodNotAllowed, Message: "method " + r.Method + " not allowed on " + r.URL.Path + "; use " + strings.Join(allow, " or ")})
		return
	}
	writeRPError(w, &rpError{Code: http.StatusNotFound, Message: "no such route: " + r.Method + " " + r.URL.Path + " (RunPod's REST model is served under /runpod/v1: templates and endpoints)"})
}
