package emberd

import "testing"

func TestRestState(t *testing.T) {
	const busy, calm = restAllocRate * 4, restAllocRate / 4
	const lots, little = restMinFree * 2, restMinFree / 2
	type step struct {
		alloc, free uint64
		want        bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"returns after the quiet ticks", []step{{busy, lots, false}, {calm, lots, false}, {calm, lots, false}, {calm, lots, true}}},
		{"once per quiet spell", []step{{calm, lots, false}, {calm, lots, false}, {calm, lots, true}, {calm, lots, false}, {calm, lots, false}}},
		{"again after a busy tick", []step{{calm, lots, false}, {calm, lots, false}, {calm, lots, true}, {busy, lots, false}, {calm, lots, false}, {calm, lots, false}, {calm, lots, true}}},
		{"a busy tick restarts the count", []step{{calm, lots, false}, {calm, lots, false}, {busy, lots, false}, {calm, lots, false}, {calm, lots, false}, {calm, lots, true}}},
		{"not worth it with little free", []step{{calm, little, false}, {calm, little, false}, {calm, little, false}, {calm, little, false}, {calm, lots, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st restState
			var total uint64
			for i, s := range tt.steps {
				total += s.alloc
				if got := st.tick(total, s.free); got != s.want {
					t.Fatalf("step %d (alloc %d, free %d): tick = %v, want %v", i, s.alloc, s.free, got, s.want)
				}
			}
		})
	}
}

// TestReturnAtRestSampler checks that the runtime metrics it reads exist
// (a renamed metric reads as KindBad and would silently never fire).
func TestReturnAtRestSampler(t *testing.T) {
	s := newRestSampler()
	s.read()
	for _, m := range s.s {
		if m.Value.Kind() == 0 {
			t.Fatalf("runtime metric %s is not supported", m.Name)
		}
	}
}
