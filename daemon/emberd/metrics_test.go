package emberd

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBuildInfo: ember_build_info is 1 with the version passed in and the
// Go version; revision is whatever the go tool stamped (empty under go
// test, which does not stamp it).
func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBuildInfo("1.2.3"))
	fams, err := reg.Gather()
	if err != nil || len(fams) != 1 || fams[0].GetName() != "ember_build_info" || len(fams[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", fams, err)
	}
	m := fams[0].GetMetric()[0]
	if m.GetGauge().GetValue() != 1 {
		t.Errorf("value %v, want 1", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "1.2.3" || labels["goversion"] != runtime.Version() || len(labels) != 3 {
		t.Errorf("labels %v, want version 1.2.3, goversion %s and revision", labels, runtime.Version())
	}
	if _, ok := labels["revision"]; !ok {
		t.Errorf("no revision label: %v", labels)
	}
}
