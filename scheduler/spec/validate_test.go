package spec

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestValidate: each rule's error, word for word (the API answers with
// these texts), and that the first failing rule wins.
func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(e *Endpoint)
		want string // "" for valid
	}{
		{"defaults", func(e *Endpoint) {}, ""},
		{"no name", func(e *Endpoint) { e.Name = "" }, "name: is required"},
		{"long name", func(e *Endpoint) { e.Name = strings.Repeat("a", 64) }, "name: is 64 characters, over the limit of 63"},
		{"bad name", func(e *Endpoint) { e.Name = "-x" }, "name: must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"},
		{"long image", func(e *Endpoint) { e.Image = strings.Repeat("i", 513) }, "image: is 513 characters, over the limit of 512"},
		{"many args", func(e *Endpoint) { e.Command = make([]string, 257) }, "command: has 257 arguments, over the limit of 256"},
		{"many vars", func(e *Endpoint) {
			e.Env = map[string]string{}
			for i := range 4097 {
				e.Env[strings.Repeat("A", i+1)] = ""
			}
		}, "env: has 4097 variables, over the limit of 4096"},
		{"workersMin negative", func(e *Endpoint) { e.WorkersMin = -1 }, "workersMin: must be between 0 and 1000"},
		{"workersMax zero", func(e *Endpoint) { e.WorkersMax = 0 }, "workersMax: must be between 1 and 1000"},
		{"workersMax over", func(e *Endpoint) { e.WorkersMax = 1001 }, "workersMax: must be between 1 and 1000"},
		{"min over max", func(e *Endpoint) { e.WorkersMin = 4 }, "workersMin: (4) must not exceed workersMax (3)"},
		{"idle", func(e *Endpoint) { e.IdleTimeoutSec = 3601 }, "idleTimeout: must be between 1 and 3600 seconds"},
		{"execution", func(e *Endpoint) { e.ExecutionTimeoutMs = 4999 }, "executionTimeoutMs: must be between 5000 and 604800000 ms (5 s to 7 days)"},
		{"scaler type", func(e *Endpoint) { e.ScalerType = "x" }, "scalerType: must be QUEUE_DELAY or REQUEST_COUNT"},
		{"scaler value", func(e *Endpoint) { e.ScalerValue = 0 }, "scalerValue: must be between 1 and 3600"},
		{"gpu count", func(e *Endpoint) { e.GPUCount = 17 }, "gpuCount: must be between 0 and 16"},
		{"gpu types", func(e *Endpoint) { e.GPUTypes = make([]string, 9) }, "gpuTypes: has more than 8 entries"},
		{"memory over", func(e *Endpoint) { e.MemoryMB = 16<<20 + 1 }, "memoryMb: must be between 0 (no limit) and 16777216 MiB"},
		{"memory small", func(e *Endpoint) { e.MemoryMB = 15 }, "memoryMb: must be at least 16 MiB (or 0 for no limit)"},
		{"cpus over", func(e *Endpoint) { e.CPUs = 1025 }, "cpus: must be between 0 (no limit) and 1024"},
		{"cpus small", func(e *Endpoint) { e.CPUs = 0.001 }, "cpus: must be at least 0.01 (or 0 for no limit)"},
		{"cpus NaN", func(e *Endpoint) { e.CPUs = math.NaN() }, ""},
		{"pids", func(e *Endpoint) { e.PidsLimit = 1<<22 + 1 }, "pidsLimit: must be between 0 (no limit) and 4194304"},
		{"network", func(e *Endpoint) { e.Network = "bridge" }, `network: must be "host" or "none"`},
		{"init timeout", func(e *Endpoint) { e.InitTimeoutSec = 9 }, "initTimeout: must be between 10 and 86400 seconds (1 day)"},
		{"flashboot window", func(e *Endpoint) { e.FlashbootWindowSec = 0 }, "flashbootWindow: must be between 1 and 86400 seconds (1 day)"},
		{"max attempts", func(e *Endpoint) { e.MaxAttempts = 101 }, "maxAttempts: must be between 0 (the daemon's --max-attempts) and 100"},
		{"gpu memory", func(e *Endpoint) { e.GPUMemoryMB = -1 }, "gpuMemoryMb: must be between 0 (any) and 16777216 MiB"},
		{"gpu memory on cpu", func(e *Endpoint) { e.GPUMemoryMB, e.GPUCount = 1, 0 }, "gpuMemoryMb: is set but gpuCount is 0 (a CPU endpoint uses no GPU)"},
		{"gpu park unknown", func(e *Endpoint) { e.GPUPark = "always" }, `gpuPark: must be "never", "onReclaim" or "idle"`},
		{"gpu park on cpu", func(e *Endpoint) { e.GPUPark, e.GPUCount = ParkIdle, 0 }, `gpuPark: is "idle" but gpuCount is 0 (a CPU endpoint has no GPU to give up)`},
		{"gpu park delay", func(e *Endpoint) { e.GPUParkDelaySec = 0 }, "gpuParkDelay: must be between 1 and 86400 seconds (1 day)"},
		{"gpu park ok", func(e *Endpoint) { e.GPUPark, e.GPUParkDelaySec = ParkOnReclaim, 86400 }, ""},
		{"empty program", func(e *Endpoint) { e.Command = []string{""} }, "command: the program (first element) is empty"},
		{"NUL argument", func(e *Endpoint) { e.Command = []string{"/w", "a\x00"} }, "command: argument 1 contains a NUL byte"},
		{"long argument", func(e *Endpoint) { e.Command = []string{"/w", strings.Repeat("a", 128<<10)} },
			"command: argument 1 is 131073 bytes with its NUL, over the limit of 131072 bytes per argument"},
		{"long command", func(e *Endpoint) {
			e.Command = []string{"/w"}
			for range 5 {
				e.Command = append(e.Command, strings.Repeat("a", 120<<10))
			}
		}, "command: is 614408 bytes in all (each argument with its NUL), over the limit of 524288 bytes"},
		{"bad variable name", func(e *Endpoint) { e.Env = map[string]string{"B": "", "1A": ""} }, `env: "1A" is not a valid variable name`},
		{"NUL value", func(e *Endpoint) { e.Env = map[string]string{"A": "\x00"} }, "env: value of A contains a NUL byte"},
		{"long variable", func(e *Endpoint) { e.Env = map[string]string{"A": strings.Repeat("v", 128<<10)} },
			"env: A is 131075 bytes as KEY=VALUE with its NUL, over the limit of 131072 bytes per variable"},
		{"long env", func(e *Endpoint) {
			e.Env = map[string]string{}
			for _, k := range []string{"A", "B", "C", "D", "E", "F", "G", "H", "I"} {
				e.Env[k] = strings.Repeat("v", 120<<10)
			}
		}, "env: is 1105947 bytes in all (each variable as KEY=VALUE with its NUL), over the limit of 1048576 bytes"},
		{"blank gpu type", func(e *Endpoint) { e.GPUTypes = []string{"H100", " "} }, "gpuTypes: contains an empty entry"},
		{"first rule wins", func(e *Endpoint) { e.Name, e.WorkersMax = "", 0 }, "name: is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := Default()
			e.Name, e.Command = "x", []string{"/w"}
			tc.mod(&e)
			err := Validate(&e)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || err.Error() != tc.want {
				t.Fatalf("Validate: %v (%T), want the *FieldError %q", err, err, tc.want)
			}
		})
	}
}

// TestApply: Apply sets exactly the fields given and copies slices and
// maps.
func TestApply(t *testing.T) {
	name, cmd, env, no := "n", []string{"/a"}, map[string]string{"K": "v"}, false
	e := Default()
	EndpointSpec{Name: &name, Command: &cmd, Env: &env, Init: &no}.Apply(&e)
	want := Default()
	want.Name, want.Command, want.Env, want.NoInit = "n", []string{"/a"}, map[string]string{"K": "v"}, true
	if e.Name != want.Name || len(e.Command) != 1 || e.Env["K"] != "v" || !e.NoInit || e.WorkersMax != want.WorkersMax {
		t.Fatalf("Apply: %+v, want %+v", e, want)
	}
	cmd[0], env["K"] = "/b", "w"
	if e.Command[0] != "/a" || e.Env["K"] != "v" {
		t.Errorf("Apply shares memory with the spec: %v %v", e.Command, e.Env)
	}
	before := e
	EndpointSpec{}.Apply(&e)
	if e.Name != before.Name || e.WorkersMax != before.WorkersMax || e.NoInit != before.NoInit {
		t.Errorf("an empty spec changed %+v to %+v", before, e)
	}
}
