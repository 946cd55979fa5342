package tests

import (
	"strings"
	"testing"
)

// TestEndpointContainerLimits: the container knobs (memoryMb, cpus,
// pidsLimit, network) have their documented defaults, are validated with the
// field named, and round-trip through create, PATCH and get.
func TestEndpointContainerLimits(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)

	created := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "limits", "command": []string{workerBin}, "gpuCount": 0}, 200)
	for k, want := range map[string]any{"memoryMb": float64(0), "cpus": float64(0), "pidsLimit": float64(4096), "network": "host"} {
		if created[k] != want {
			t.Errorf("default %s = %v, want %v", k, created[k], want)
		}
	}
	id := created["id"].(string)

	patched := d.JSON("PATCH", "/v1/endpoints/"+id, map[string]any{"memoryMb": 2048, "cpus": 1.5, "pidsLimit": 64, "network": "none"}, 200)
	for k, want := range map[string]any{"memoryMb": float64(2048), "cpus": 1.5, "pidsLimit": float64(64), "network": "none"} {
		if patched[k] != want {
			t.Errorf("after PATCH %s = %v, want %v", k, patched[k], want)
		}
	}
	if got := d.JSON("GET", "/v1/endpoints/"+id, nil, 200); got["memoryMb"] != float64(2048) || got["network"] != "none" {
		t.Errorf("GET after PATCH: %v", got)
	}

	for _, tc := range []struct {
		field string
		value any
	}{
		{"memoryMb", -1},
		{"memoryMb", 8},
		{"cpus", -0.5},
		{"pidsLimit", -3},
		{"network", "bridge"},
	} {
		code, body := d.Do("POST", "/v1/endpoints", map[string]any{"name": "bad-" + strings.ToLower(tc.field), "command": []string{workerBin}, tc.field: tc.value})
		if code != 400 || !strings.Contains(string(body), tc.field) {
			t.Errorf("%s=%v: got %d %s, want 400 naming the field", tc.field, tc.value, code, body)
		}
	}
	list := d.JSON("GET", "/v1/endpoints", nil, 200)
	if eps, _ := list["endpoints"].([]any); len(eps) != 1 {
		t.Errorf("refused creates left endpoints behind: %v", list)
	}
}
