package httpapi

import (
	"errors"
	"testing"

	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler/spec"
)

// FuzzRunPodRESTInput: any body is decoded as RunPod's template and
// endpoint inputs without a panic; whatever is refused is a 400 (or, for
// a template's variables, the template's own field error), and what is
// accepted maps onto Ember's template and endpoint requests.
func FuzzRunPodRESTInput(f *testing.F) {
	for _, s := range []string{
		`{"name":"w","imageName":"img:1","dockerStartCmd":["python","h.py"],"env":{"A":"1"},"category":"CPU","isServerless":true}`,
		`{"templateId":"llm","name":"chat","computeType":"GPU","gpuTypeIds":["NVIDIA H100 80GB HBM3"],"gpuCount":2,"workersMin":0,"workersMax":3,"idleTimeout":5,"scalerType":"QUEUE_DELAY","scalerValue":4,"flashboot":true,"dataCenterIds":["EU-RO-1"]}`,
		`{"templateId":"llm","computeType":"CPU","vcpuCount":4,"cpuFlavorIds":["cpu3c"]}`,
		`{"templateId":"","gpuCount":-1}`,
		`{"env":{"":null}}`,
		`{"workersMax":1e400}`,
		`[]`, `null`, ``, `{"a":`,
	} {
		f.Add([]byte(s))
	}
	tmpl := &templates.Template{Name: "llm", Version: 1, Image: "vllm:1", GPUCount: 1, Env: []templates.EnvVar{{Name: "MODEL", Default: "m"}}}
	cur := spec.Default()
	cur.ID, cur.Name, cur.GPUCount = "ep", "ep", 1
	f.Fuzz(func(t *testing.T, body []byte) {
		var ei rpEndpointInput
		if err := decodeRP(body, &ei); err != nil {
			var re *rpError
			if !errors.As(err, &re) || re.Code != 400 {
				t.Fatalf("decode endpoint input: %v", err)
			}
		} else {
			for _, c := range []*spec.Endpoint{nil, &cur} {
				if _, err := endpointSpecFromRP(ei, c, tmpl, rpEndpointName); err != nil {
					var re *rpError
					if !errors.As(err, &re) || re.Code != 400 || re.Field == "" {
						t.Fatalf("endpoint input %s: %v", body, err)
					}
				}
			}
		}
		var ti rpTemplateInput
		if err := decodeRP(body, &ti); err == nil {
			for _, create := range []bool{true, false} {
				if _, err := templateFromRP(ti, *tmpl, create); err != nil {
					var re *rpError
					if !errors.As(err, &re) || re.Code != 400 || re.Field == "" {
						t.Fatalf("template input %s: %v", body, err)
					}
				}
			}
		}
	})
}
