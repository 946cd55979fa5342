package httpapi

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

func p[T any](v T) *T { return &v }

// TestRPTemplateOf: an Ember template as RunPod's Template: the id is the
// name, the command the start command, each variable's default its env
// value, the description the readme, and the category follows gpuCount.
func TestRPTemplateOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   templates.Template
		want rpTemplate
	}{
		{"built-in CPU template, no command", templates.Template{Name: "basic", Builtin: true, Image: "ember/example-worker:latest", Description: "a handler"},
			rpTemplate{ID: "basic", Name: "basic", ImageName: "ember/example-worker:latest", DockerStartCmd: []string{}, DockerEntrypoint: []string{},
				Env: map[string]string{}, Category: "CPU", Ports: []string{}, IsRunpod: true, IsServerless: true, Readme: "a handler"}},
		{"operator GPU template", templates.Template{Name: "llm", Image: "vllm:1", Command: []string{"python", "-u", "handler.py"}, GPUCount: 2,
			Env: []templates.EnvVar{{Name: "MODEL_NAME", Required: true, Description: "the model"}, {Name: "DTYPE", Default: "auto"}}},
			rpTemplate{ID: "llm", Name: "llm", ImageName: "vllm:1", DockerStartCmd: []string{"python", "-u", "handler.py"}, DockerEntrypoint: []string{},
				Env: map[string]string{"MODEL_NAME": "", "DTYPE": "auto"}, Category: "NVIDIA", Ports: []string{}, IsServerless: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rpTemplateOf(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestTemplateFromRP: RunPod's template inputs as Ember templates, and the
// inputs refused with the field named.
func TestTemplateFromRP(t *testing.T) {
	d := spec.Default()
	runpodDefaults := func(tt templates.Template) templates.Template {
		tt.WorkersMax, tt.IdleTimeoutSec, tt.ExecutionTimeoutMs = d.WorkersMax, d.IdleTimeoutSec, d.ExecutionTimeoutMs
		tt.ScalerType, tt.ScalerValue = d.ScalerType, d.ScalerValue
		return tt
	}
	stored := templates.Template{Name: "llm", Version: 3, Image: "vllm:1", GPUCount: 2, WorkersMax: 5,
		Env: []templates.EnvVar{{Name: "MODEL_NAME", Required: true, Description: "the model", Secret: false}, {Name: "HF_TOKEN", Secret: true, Description: "token"}}}
	for _, tc := range []struct {
		name    string
		body    string
		base    templates.Template
		create  bool
		want    templates.Template
		wantErr string // the field named, then the message's start
	}{
		{name: "create: the two required fields; RunPod's defaults", create: true,
			body: `{"name":"w","imageName":"img:1"}`,
			want: runpodDefaults(templates.Template{Name: "w", Image: "img:1", GPUCount: 1})},
		{name: "create: everything RunPod's model has", create: true,
			body: `{"name":"w","imageName":"img:1","dockerEntrypoint":["/bin/sh","-c"],"dockerStartCmd":["exec worker"],"env":{"B":"2","A":"1"},"category":"CPU","readme":"# W","isServerless":true,"containerDiskInGb":50,"volumeInGb":0,"volumeMountPath":"/workspace","ports":["8888/http"],"isPublic":false,"containerRegistryAuthId":"x"}`,
			want: runpodDefaults(templates.Template{Name: "w", Image: "img:1", Command: []string{"/bin/sh", "-c", "exec worker"}, Description: "# W",
				Env: []templates.EnvVar{{Name: "A", Default: "1"}, {Name: "B", Default: "2"}}})},
		{name: "create: no name", create: true, body: `{"imageName":"img:1"}`, wantErr: "name: is required"},
		{name: "create: no image", create: true, body: `{"name":"w"}`, wantErr: "imageName: is required"},
		{name: "create: AMD", create: true, body: `{"name":"w","imageName":"i","category":"AMD"}`, wantErr: "category: AMD"},
		{name: "create: unknown category", create: true, body: `{"name":"w","imageName":"i","category":"TPU"}`, wantErr: "category: must be NVIDIA, AMD or CPU"},
		{name: "create: a RunPod secret reference", create: true, body: `{"name":"w","imageName":"i","env":{"A":"1","HF_TOKEN":"{{ RUNPOD_SECRET_hf }}"}}`,
			wantErr: "env.HF_TOKEN: is a RunPod secret reference"},
		{name: "create: a Pod template", create: true, body: `{"name":"w","imageName":"i","isServerless":false}`, wantErr: "isServerless: false makes a Pod template"},
		{name: "update: the image alone", base: stored, body: `{"imageName":"vllm:2"}`,
			want: func() templates.Template { s := stored; s.Image = "vllm:2"; return s }()},
		{name: "update: env keeps what the template documents", base: stored, body: `{"env":{"MODEL_NAME":"","HF_TOKEN":"t","NEW":"x"}}`,
			want: func() templates.Template {
				s := stored
				s.Env = []templates.EnvVar{{Name: "HF_TOKEN", Default: "t", Secret: true, Description: "token"},
					{Name: "MODEL_NAME", Required: true, Description: "the model"}, {Name: "NEW", Default: "x"}}
				return s
			}()},
		{name: "update: a value makes a required variable optional", base: stored, body: `{"env":{"MODEL_NAME":"m"}}`,
			want: func() templates.Template {
				s := stored
				s.Env = []templates.EnvVar{{Name: "MODEL_NAME", Default: "m", Description: "the model"}}
				return s
			}()},
		{name: "update: NVIDIA keeps a GPU count", base: stored, body: `{"category":"NVIDIA"}`, want: stored},
		{name: "update: CPU drops the GPUs", base: stored, body: `{"category":"CPU"}`,
			want: func() templates.Template { s := stored; s.GPUCount = 0; return s }()},
		{name: "update: the same name", base: stored, body: `{"name":"llm"}`, want: stored},
		{name: "update: a rename", base: stored, body: `{"name":"other"}`, wantErr: "name: is \"other\" but the template is \"llm\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in rpTemplateInput
			if err := decodeRP([]byte(tc.body), &in); err != nil {
				t.Fatalf("decode: %v", err)
			}
			got, err := templateFromRP(in, tc.base, tc.create)
			if tc.wantErr != "" {
				re, ok := err.(*rpError)
				if !ok || re.Code != 400 || !strings.HasPrefix(re.Message, tc.wantErr) || !strings.HasPrefix(tc.wantErr, re.Field+": ") {
					t.Fatalf("err = %#v, want a 400 starting %q naming its field", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestTemplateRoundTrip: what a RunPod client creates reads back the same
// through RunPod's Template, for every field Ember keeps.
func TestTemplateRoundTrip(t *testing.T) {
	body := `{"name":"w","imageName":"img:1","dockerStartCmd":["python","-u","handler.py"],"env":{"A":"1","B":""},"category":"NVIDIA","readme":"r"}`
	var in rpTemplateInput
	if err := decodeRP([]byte(body), &in); err != nil {
		t.Fatal(err)
	}
	tt, err := templateFromRP(in, templates.Template{}, true)
	if err != nil {
		t.Fatal(err)
	}
	out := rpTemplateOf(tt)
	if out.ID != *in.Name || out.Name != *in.Name || out.ImageName != *in.ImageName || !reflect.DeepEqual(out.DockerStartCmd, *in.DockerStartCmd) ||
		!reflect.DeepEqual(out.Env, *in.Env) || out.Category != *in.Category || out.Readme != *in.Readme || !out.IsServerless {
		t.Errorf("round trip: %s -> %+v", body, out)
	}
}

// TestDecodeRP: RunPod inputs are read strictly: an unknown field, a
// value of the wrong type, a body that is not one object are 400s naming
// what is wrong.
func TestDecodeRP(t *testing.T) {
	for _, tc := range []struct{ body, field, msg string }{
		{`{"templateId":"t","gpuIds":"AMPERE_16"}`, "gpuIds", "gpuIds: is not a field of RunPod's REST model"},
		{`{"templateId":"t","workersMax":"3"}`, "workersMax", "workersMax: must be an integer, not a JSON string"},
		{`{"templateId":"t","gpuTypeIds":"NVIDIA A40"}`, "gpuTypeIds", "gpuTypeIds: must be an array of strings, not a JSON string"},
		{`{"templateId":"t","flashboot":1}`, "flashboot", "flashboot: must be true or false"},
		{`{"templateId":"t","workersMax":1.5}`, "workersMax", "workersMax: must be an integer"},
		{`[]`, "", "the request body must be a JSON object"},
		{``, "", "the request body must be a JSON object"},
		{`{"templateId":"t"} {}`, "", "the request body has data after its JSON object"},
		{`{"templateId":`, "", "the request body is not valid JSON"},
	} {
		var in rpEndpointInput
		err := decodeRP([]byte(tc.body), &in)
		re, ok := err.(*rpError)
		if !ok || re.Code != 400 || re.Field != tc.field || !strings.HasPrefix(re.Message, tc.msg) {
			t.Errorf("%s: err = %#v, want 400 field %q message %q...", tc.body, err, tc.field, tc.msg)
		}
	}
	var in rpEndpointInput
	if err := decodeRP([]byte(`{"templateId":"t","dataCenterIds":["EU-RO-1"],"networkVolumeId":null}`), &in); err != nil || *in.TemplateID != "t" || in.NetworkVolumeID != nil {
		t.Errorf("a valid body: %v %+v", err, in)
	}
}

// TestEndpointSpecFromRP: RunPod's endpoint inputs as the scheduler's
// create and update requests.
func TestEndpointSpecFromRP(t *testing.T) {
	gpuTmpl := &templates.Template{Name: "llm", Version: 4, Image: "vllm:1", Command: []string{"python", "h.py"}, GPUCount: 1,
		WorkersMax: 2, IdleTimeoutSec: 60, Env: []templates.EnvVar{{Name: "MODEL", Default: "m"}}}
	cpuTmpl := &templates.Template{Name: "basic", Version: 1, Image: "ember/example-worker:latest", GPUCount: 0}
	naming := func(tmpl string) string { return tmpl + "-x" }
	cur := spec.Default()
	cur.ID, cur.Name, cur.Image, cur.Command, cur.GPUCount = "ep1", "mine", "old:1", []string{"old"}, 1
	cur.Env = map[string]string{"MODEL": "chosen", "EXTRA": "1"}
	cur.WorkersMax, cur.IdleTimeoutSec = 7, 30

	for _, tc := range []struct {
		name    string
		body    string
		cur     *spec.Endpoint
		tmpl    *templates.Template
		want    spec.EndpointSpec
		wantErr string
	}{
		{name: "create: the template's settings, RunPod's fields over them", tmpl: gpuTmpl,
			body: `{"templateId":"llm","name":"chat","gpuTypeIds":["NVIDIA H100 80GB HBM3"],"gpuCount":2,"workersMin":1,"workersMax":4,"idleTimeout":10,"scalerType":"REQUEST_COUNT","scalerValue":2,"flashboot":true,"executionTimeoutMs":60000,"dataCenterIds":["EU-RO-1"],"networkVolumeId":"v","allowedCudaVersions":["12.4"]}`,
			want: spec.EndpointSpec{Name: p("chat"), Image: p("vllm:1"), Command: p([]string{"python", "h.py"}), Env: p(map[string]string{"MODEL": "m"}),
				GPUCount: p(2), GPUTypes: p([]string{"NVIDIA H100 80GB HBM3"}), WorkersMin: p(1), WorkersMax: p(4), IdleTimeout: p(10),
				ScalerType: p("REQUEST_COUNT"), ScalerValue: p(2), Flashboot: p(true), ExecutionTimeoutMs: p(int64(60000)),
				Template: p("llm"), TemplateVersion: p(4)}},
		{name: "create: no name, the template's defaults", tmpl: gpuTmpl, body: `{"templateId":"llm"}`,
			want: spec.EndpointSpec{Name: p("llm-x"), Image: p("vllm:1"), Command: p([]string{"python", "h.py"}), Env: p(map[string]string{"MODEL": "m"}),
				GPUCount: p(1), WorkersMin: p(0), WorkersMax: p(2), IdleTimeout: p(60), Flashboot: p(false), Template: p("llm"), TemplateVersion: p(4)}},
		{name: "create: CPU ignores the GPU fields, vcpuCount is cpus", tmpl: gpuTmpl,
			body: `{"templateId":"llm","name":"c","computeType":"CPU","gpuCount":2,"gpuTypeIds":["NVIDIA A40"],"vcpuCount":4,"cpuFlavorIds":["cpu3c"],"instanceIds":["cpu3c-4-8"]}`,
			want: spec.EndpointSpec{Name: p("c"), Image: p("vllm:1"), Command: p([]string{"python", "h.py"}), Env: p(map[string]string{"MODEL": "m"}),
				GPUCount: p(0), GPUTypes: p([]string{}), CPUs: p(4.0), WorkersMin: p(0), WorkersMax: p(2), IdleTimeout: p(60), Flashboot: p(false),
				Template: p("llm"), TemplateVersion: p(4)}},
		{name: "create: GPU types on a CPU template ask for one GPU; vcpuCount ignored on GPU", tmpl: cpuTmpl,
			body: `{"templateId":"basic","name":"g","gpuTypeIds":["NVIDIA A40"],"vcpuCount":4}`,
			want: spec.EndpointSpec{Name: p("g"), Image: p("ember/example-worker:latest"), Env: p(map[string]string{}),
				GPUCount: p(1), GPUTypes: p([]string{"NVIDIA A40"}), WorkersMin: p(0), Flashboot: p(false), Template: p("basic"), TemplateVersion: p(1)}},
		{name: "create: computeType GPU on a CPU template", tmpl: cpuTmpl, body: `{"templateId":"basic","name":"g","computeType":"GPU"}`,
			want: spec.EndpointSpec{Name: p("g"), Image: p("ember/example-worker:latest"), Env: p(map[string]string{}),
				GPUCount: p(1), WorkersMin: p(0), Flashboot: p(false), Template: p("basic"), TemplateVersion: p(1)}},
		{name: "create: no template", body: `{"name":"x"}`, wantErr: "templateId: is required"},
		{name: "create: gpuCount 0", tmpl: gpuTmpl, body: `{"templateId":"llm","gpuCount":0}`, wantErr: "gpuCount: must be at least 1"},
		{name: "create: a compute type RunPod does not have", tmpl: gpuTmpl, body: `{"templateId":"llm","computeType":"TPU"}`, wantErr: "computeType: must be GPU or CPU"},
		{name: "create: an empty name", tmpl: gpuTmpl, body: `{"templateId":"llm","name":""}`, wantErr: "name: must not be empty"},
		{name: "create: vcpuCount 0 on CPU", tmpl: gpuTmpl, body: `{"templateId":"llm","computeType":"CPU","vcpuCount":0}`, wantErr: "vcpuCount: must be at least 1"},
		{name: "create: a required variable the template leaves empty", tmpl: &templates.Template{Name: "v", Image: "i", Env: []templates.EnvVar{{Name: "MODEL_NAME", Required: true, Description: "the model"}}},
			body: `{"templateId":"v"}`, wantErr: "templateId: template v: env.MODEL_NAME: required: the model"},
		{name: "update: only what is given", cur: &cur, body: `{"workersMax":9}`,
			want: spec.EndpointSpec{GPUCount: p(1), WorkersMax: p(9)}},
		{name: "update: a new template re-resolves what workers run, keeps the scaling and the values", cur: &cur, tmpl: gpuTmpl, body: `{"templateId":"llm"}`,
			want: spec.EndpointSpec{Name: p("mine"), Image: p("vllm:1"), Command: p([]string{"python", "h.py"}),
				Env: p(map[string]string{"MODEL": "chosen", "EXTRA": "1"}), GPUCount: p(1), Template: p("llm"), TemplateVersion: p(4)}},
		{name: "update: a template with no command clears the old one", cur: &cur, tmpl: cpuTmpl, body: `{"templateId":"basic","name":"renamed"}`,
			want: spec.EndpointSpec{Name: p("renamed"), Image: p("ember/example-worker:latest"), Command: p([]string{}),
				Env: p(map[string]string{"MODEL": "chosen", "EXTRA": "1"}), GPUCount: p(1), Template: p("basic"), TemplateVersion: p(1)}},
		{name: "update: to CPU", cur: &cur, body: `{"computeType":"CPU","vcpuCount":2}`,
			want: spec.EndpointSpec{GPUCount: p(0), GPUTypes: p([]string{}), CPUs: p(2.0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in rpEndpointInput
			if err := decodeRP([]byte(tc.body), &in); err != nil {
				t.Fatalf("decode: %v", err)
			}
			got, err := endpointSpecFromRP(in, tc.cur, tc.tmpl, naming)
			if tc.wantErr != "" {
				re, ok := err.(*rpError)
				if !ok || re.Code != 400 || !strings.HasPrefix(re.Message, tc.wantErr) || !strings.HasPrefix(tc.wantErr, re.Field+": ") {
					t.Fatalf("err = %#v, want a 400 starting %q naming its field", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tc.want)
			if string(gj) != string(wj) {
				t.Errorf("got  %s\nwant %s", gj, wj)
			}
		})
	}
}

// TestRPEndpointOf: an Ember endpoint as RunPod's Endpoint, one made
// through /v1 (no template) included; lists are arrays, never null.
func TestRPEndpointOf(t *testing.T) {
	created := time.Date(2026, 12, 5, 2, 3, 4, 5e6, time.UTC)
	for _, tc := range []struct {
		name string
		in   spec.Endpoint
		want string
	}{
		{"from a template, GPU", spec.Endpoint{ID: "ep1", Name: "chat", Template: "llm", TemplateVersion: 2, Generation: 3, GPUCount: 2,
			GPUTypes: []string{"NVIDIA H100 80GB HBM3"}, WorkersMin: 1, WorkersMax: 4, IdleTimeoutSec: 10, ScalerType: "QUEUE_DELAY", ScalerValue: 4,
			ExecutionTimeoutMs: 600000, Flashboot: true, Env: map[string]string{"A": "1"}, CreatedAt: created.UnixMilli(), Image: "vllm:1"},
			`{"id":"ep1","name":"chat","templateId":"llm","version":2,"computeType":"GPU","gpuCount":2,"gpuTypeIds":["NVIDIA H100 80GB HBM3"],"workersMin":1,"workersMax":4,"idleTimeout":10,"scalerType":"QUEUE_DELAY","scalerValue":4,"executionTimeoutMs":600000,"flashboot":true,"env":{"A":"1"},"createdAt":"2026-12-05T02:03:04.005Z","dataCenterIds":[],"networkVolumeIds":[],"allowedCudaVersions":[],"instanceIds":[]}`},
		{"made through /v1, CPU", spec.Endpoint{ID: "ep2", Name: "plain", Generation: 1, WorkersMax: 3, IdleTimeoutSec: 5, ScalerType: "QUEUE_DELAY", ScalerValue: 4, ExecutionTimeoutMs: 600000, CreatedAt: created.UnixMilli()},
			`{"id":"ep2","name":"plain","templateId":"","version":0,"computeType":"CPU","gpuCount":0,"gpuTypeIds":[],"workersMin":0,"workersMax":3,"idleTimeout":5,"scalerType":"QUEUE_DELAY","scalerValue":4,"executionTimeoutMs":600000,"flashboot":false,"env":{},"createdAt":"2026-12-05T02:03:04.005Z","dataCenterIds":[],"networkVolumeIds":[],"allowedCudaVersions":[],"instanceIds":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(rpEndpointOf(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
	w := rpWorkerOf(scheduler.WorkerInfo{ID: "w1", EndpointID: "ep1", State: "idle", StartedAt: created, Generation: 2, GPUs: []string{"GPU-a"}},
		spec.Endpoint{Image: "img", Template: "llm"})
	if want := (rpWorker{ID: "w1", Name: "w1", EndpointID: "ep1", DesiredStatus: "RUNNING", LastStatusChange: "idle",
		LastStartedAt: "2026-12-05T02:03:04.005Z", Image: "img", TemplateID: "llm", SLSVersion: 1, GPUCount: 1}); w != want {
		t.Errorf("worker: got %+v, want %+v", w, want)
	}
}

// TestRPFieldError: Ember's field names in RunPod's words.
func TestRPFieldError(t *testing.T) {
	for ember, rp := range map[string]string{"image": "imageName", "command": "dockerStartCmd", "gpuTypes": "gpuTypeIds", "cpus": "vcpuCount",
		"description": "readme", "workersMax": "workersMax", "env.MODEL": "env.MODEL", "env[3].name": "env"} {
		re := rpFieldError(&spec.FieldError{Field: ember, Msg: "bad"})
		if re.Code != 400 || re.Field != rp || re.Message != rp+": bad" {
			t.Errorf("%s: got %+v, want field %s", ember, re, rp)
		}
	}
}
