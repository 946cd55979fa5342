package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler/spec"
)

// templateRoutes serves /v1/templates from a real template store, as
// emberd's httpapi does (its answers and error shapes), and deploys into
// the fake's endpoint list with the fake's defaults.
func (fd *fakeDaemon) templateRoutes(t *testing.T, mux *http.ServeMux) {
	ts, err := templates.Open(filepath.Join(t.TempDir(), templates.FileName))
	if err != nil {
		t.Fatal(err)
	}
	fd.templates = ts
	fail := func(w http.ResponseWriter, err error) {
		var fe *spec.FieldError
		code := 500
		switch {
		case errors.As(err, &fe):
			b, _ := json.Marshal(map[string]string{"error": fe.Error(), "field": fe.Field})
			send(w, 400, string(b))
			return
		case errors.Is(err, templates.ErrNotFound):
			code = 404
		case errors.Is(err, templates.ErrExists), errors.Is(err, templates.ErrBuiltin), errors.Is(err, templates.ErrConflict):
			code = 409
		}
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		send(w, code, string(b))
	}
	answer := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			fail(w, err)
			return
		}
		b, _ := json.Marshal(v)
		send(w, 200, string(b))
	}
	decode := func(w http.ResponseWriter, r *http.Request, v any) bool {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			send(w, 400, fmt.Sprintf(`{"error":%q}`, "request body: "+err.Error()))
			return false
		}
		return true
	}
	mux.HandleFunc("GET /v1/templates", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, map[string]any{"templates": ts.List()}, nil)
	})
	mux.HandleFunc("POST /v1/templates", func(w http.ResponseWriter, r *http.Request) {
		var tp templates.Template
		if decode(w, r, &tp) {
			out, err := ts.Create(tp)
			answer(w, out, err)
		}
	})
	mux.HandleFunc("GET /v1/templates/{name}", func(w http.ResponseWriter, r *http.Request) {
		out, err := ts.Get(r.PathValue("name"))
		answer(w, out, err)
	})
	mux.HandleFunc("PATCH /v1/templates/{name}", func(w http.ResponseWriter, r *http.Request) {
		var tp templates.Template
		if decode(w, r, &tp) {
			out, err := ts.Update(r.PathValue("name"), tp)
			answer(w, out, err)
		}
	})
	mux.HandleFunc("DELETE /v1/templates/{name}", func(w http.ResponseWriter, r *http.Request) {
		out, err := ts.Get(r.PathValue("name"))
		if err == nil {
			err = ts.Delete(r.PathValue("name"))
		}
		answer(w, out, err)
	})
	mux.HandleFunc("POST /v1/templates/{verb}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutSuffix(r.PathValue("verb"), ":deploy")
		if !ok {
			send(w, 405, `{"error":"method not allowed"}`)
			return
		}
		tp, err := ts.Get(name)
		if err != nil {
			fail(w, err)
			return
		}
		var req struct {
			Name        string            `json:"name"`
			Env         map[string]string `json:"env"`
			GPUCount    *int              `json:"gpuCount"`
			GPUTypes    []string          `json:"gpuTypes"`
			WorkersMin  *int              `json:"workersMin"`
			WorkersMax  *int              `json:"workersMax"`
			IdleTimeout *int              `json:"idleTimeout"`
		}
		if !decode(w, r, &req) {
			return
		}
		sp, err := tp.Resolve(templates.Deploy{Name: req.Name, Env: req.Env, GPUCount: req.GPUCount, GPUTypes: req.GPUTypes,
			WorkersMin: req.WorkersMin, WorkersMax: req.WorkersMax, IdleTimeoutSec: req.IdleTimeout})
		if err != nil {
			fail(w, err)
			return
		}
		if tp.Image == "runpod/worker-v1-vllm:v2.7.0stable-cuda12.1.0" {
			// As a daemon whose image store lacks it.
			send(w, 409, fmt.Sprintf(`{"error":"image %s is not in this machine's image store; load it with: ember image load -i FILE (or ember image pull %s)","field":"image"}`, tp.Image, tp.Image))
			return
		}
		e := spec.Default()
		sp.Apply(&e)
		if err := spec.Validate(&e); err != nil {
			fail(w, err)
			return
		}
		fd.mu.Lock()
		defer fd.mu.Unlock()
		fd.nextID++
		ep := map[string]any{
			"id": fmt.Sprintf("ep-new%d", fd.nextID), "name": e.Name, "image": e.Image, "env": e.Env,
			"workersMin": e.WorkersMin, "workersMax": e.WorkersMax, "idleTimeout": e.IdleTimeoutSec, "executionTimeoutMs": e.ExecutionTimeoutMs,
			"scalerType": e.ScalerType, "scalerValue": e.ScalerValue, "gpuCount": e.GPUCount, "pidsLimit": e.PidsLimit, "network": e.Network,
			"initTimeout": e.InitTimeoutSec, "flashboot": e.Flashboot, "flashbootWindow": e.FlashbootWindowSec, "generation": "1", "init": true,
			"gpuPark": e.GPUPark, "gpuParkDelay": e.GPUParkDelaySec, "template": e.Template, "templateVersion": e.TemplateVersion,
			"createdAt": "2025-06-03T09:00:00Z", "updatedAt": "2025-06-03T09:00:00Z",
		}
		b, _ := json.Marshal(ep)
		fd.endpoints = append(fd.endpoints, b)
		send(w, 200, string(b))
	})
}

// TestTemplateGolden: the template commands against the fake, which keeps
// templates in a real store.
func TestTemplateGolden(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "echo.template.json")
	os.WriteFile(def, []byte(`{"name":"my-echo","image":"ghcr.io/acme/echo:1","category":"handler","description":"An echo worker.",
"env":[{"name":"TOKEN","required":true,"description":"the upstream token","secret":true},{"name":"GREETING","default":"hi","description":"what it says"}],"workersMax":1}`), 0o644)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"name":"Bad Name","image":"x:1"}`), 0o644)
	notJSON := filepath.Join(dir, "not.json")
	os.WriteFile(notJSON, []byte(`name: x`), 0o644)
	repl := []string{dir, "DIR"}

	tests := []struct {
		name string
		seed bool // create my-echo first
		inv  invocation
	}{
		{name: "template_list", inv: invocation{args: []string{"template", "list"}}},
		{name: "template_list_json", inv: invocation{args: []string{"templates", "ls", "--json"}}},
		{name: "template_show_vllm", inv: invocation{args: []string{"template", "show", "vllm"}}},
		{name: "template_show_basic_json", inv: invocation{args: []string{"template", "show", "basic", "--json"}}},
		{name: "template_show_unknown", inv: invocation{args: []string{"template", "show", "nope"}}},
		{name: "template_create", inv: invocation{args: []string{"template", "create", "-f", def}}},
		{name: "template_create_stdin", inv: invocation{args: []string{"template", "create", "-f", "-"}, stdin: `{"name":"piped","image":"x:1"}`}},
		{name: "template_create_invalid", inv: invocation{args: []string{"template", "create", "-f", bad}}},
		{name: "template_create_not_json", inv: invocation{args: []string{"template", "create", "-f", notJSON}}},
		{name: "template_create_no_file", inv: invocation{args: []string{"template", "create"}}},
		{name: "template_create_taken", seed: true, inv: invocation{args: []string{"template", "create", "-f", def}}},
		{name: "template_update", seed: true, inv: invocation{args: []string{"template", "update", "my-echo", "-f", def}}},
		{name: "template_update_builtin", inv: invocation{args: []string{"template", "update", "basic", "-f", def}}},
		{name: "template_delete", seed: true, inv: invocation{args: []string{"template", "delete", "my-echo"}}},
		{name: "template_delete_builtin", inv: invocation{args: []string{"template", "rm", "vllm"}}},
		{name: "template_deploy_basic", inv: invocation{args: []string{"template", "deploy", "basic", "--name", "hello"}}},
		{name: "template_deploy_json", seed: true, inv: invocation{args: []string{"template", "deploy", "my-echo", "--name", "echo2", "--env", "TOKEN=t0k", "--workers-max", "3", "--idle-timeout", "2m", "--json"}}},
		{name: "template_deploy_missing_env", seed: true, inv: invocation{args: []string{"template", "deploy", "my-echo", "--name", "echo2"}}},
		{name: "template_deploy_vllm_missing_env", inv: invocation{args: []string{"template", "deploy", "vllm", "--name", "llm2"}}},
		{name: "template_deploy_no_image", inv: invocation{args: []string{"template", "deploy", "vllm", "--name", "llm2", "--env", "MODEL_NAME=Qwen/Qwen2.5-0.5B-Instruct"}}},
		{name: "template_deploy_no_name", inv: invocation{args: []string{"template", "deploy", "basic"}}},
		{name: "template_deploy_bad_env", inv: invocation{args: []string{"template", "deploy", "basic", "--name", "x", "--env", "NOEQUALS"}}},
		{name: "template_deploy_unknown", inv: invocation{args: []string{"template", "deploy", "nope", "--name", "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fd := newFakeDaemon(t)
			if tt.seed {
				if r := runEmber(t, fd.addr, invocation{args: []string{"template", "create", "-f", def}}); r.code != 0 {
					t.Fatalf("seed: %+v", r)
				}
			}
			golden(t, tt.name, runEmber(t, fd.addr, tt.inv), repl...)
		})
	}
}
