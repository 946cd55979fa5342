package scheduler

import (
	"reflect"
	"testing"
	"time"
)

// TestTunablesLogArgs: the reload log line names every tunable, so a new
// field cannot be left out of it.
func TestTunablesLogArgs(t *testing.T) {
	var tun Tunables
	tun.setDefaults()
	args := tun.LogArgs()
	if n := reflect.TypeFor[Tunables]().NumField(); len(args) != 2*n {
		t.Fatalf("LogArgs has %d pairs for %d tunables", len(args)/2, n)
	}
	seen := map[any]bool{}
	for i := 0; i < len(args); i += 2 {
		if seen[args[i]] {
			t.Errorf("key %v twice", args[i])
		}
		seen[args[i]] = true
	}
	val := map[any]any{}
	for i := 0; i < len(args); i += 2 {
		val[args[i]] = args[i+1]
	}
	if v := val["max_unread_stream_mib"]; v != 64 {
		t.Errorf("max_unread_stream_mib = %v, want 64 (MiB)", v)
	}
	if v := val["park_memory_mb"]; v != int(tun.ParkMemory>>20) || tun.ParkMemory <= 0 {
		t.Errorf("park_memory_mb = %v for a budget of %d bytes", v, tun.ParkMemory)
	}
}

// TestTunablesDefaults: every zero tunable gets its default, and a given
// one is kept.
func TestTunablesDefaults(t *testing.T) {
	tun := Tunables{PingInterval: time.Second}
	tun.setDefaults()
	v := reflect.ValueOf(tun)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("%s has no default", v.Type().Field(i).Name)
		}
	}
	if tun.PingInterval != time.Second || tun.LeaseGrace != 3*time.Second {
		t.Errorf("PingInterval %v, LeaseGrace %v: want 1s and 3 pings", tun.PingInterval, tun.LeaseGrace)
	}
}
