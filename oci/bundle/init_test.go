package bundle

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestBuildInit: with an init the argv is the init, "--", then the worker's
// argv, and the init is bound read-only at InitMountPoint; without one, or
// with Spec.NoInit, neither.
func TestBuildInit(t *testing.T) {
	worker := []string{"/usr/bin/python3", "-u", "handler.py"}
	withInit := append([]string{InitMountPoint, "--"}, worker...)
	for _, tc := range []struct {
		name     string
		init     string
		noInit   bool
		wantArgs []string
	}{
		{"init", "/usr/lib/ember/ember-init", false, withInit},
		{"endpoint turns it off", "/usr/lib/ember/ember-init", true, worker},
		{"no init configured", "", false, worker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			o.Init, o.Spec.NoInit = tc.init, tc.noInit
			s, err := Build(o)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Args, tc.wantArgs) {
				t.Errorf("args %q, want %q", s.Process.Args, tc.wantArgs)
			}
			i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == InitMountPoint })
			if want := slices.Equal(tc.wantArgs, withInit); want != (i >= 0) {
				t.Fatalf("init mount present %v, want %v: %+v", i >= 0, want, s.Mounts)
			}
			if i < 0 {
				return
			}
			m := s.Mounts[i]
			if m.Source != tc.init || m.Type != "bind" || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "nosuid") {
				t.Errorf("init mount %+v: want a read-only nosuid bind of %s", m, tc.init)
			}
			// After /dev, whose tmpfs would hide it.
			if dev := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/dev" }); dev > i {
				t.Errorf("init mounted before /dev (%d < %d)", i, dev)
			}
		})
	}
}
