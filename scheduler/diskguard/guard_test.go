package diskguard

import (
	"errors"
	"testing"

	"github.com/emberhq/ember/scheduler/store"
)

func TestDiskGuardThresholds(t *testing.T) {
	const (
		mib     = 1 << 20
		minFree = 64 * mib
		reserve = 32 * mib
	)
	tests := []struct {
		name   string
		free   uint64
		class  WriteClass
		size   int64
		refuse bool
		need   uint64
	}{
		{"new work with room", 100 * mib, NewWork, 1 * mib, false, 0},
		{"new work at the threshold", minFree + mib, NewWork, mib, false, 0},
		{"new work one byte short", minFree + mib - 1, NewWork, mib, true, minFree + mib},
		{"new work between thresholds", 48 * mib, NewWork, 0, true, minFree},
		{"result between thresholds", 48 * mib, Finishing, mib, false, 0},
		{"result at the reserve", reserve + mib, Finishing, mib, false, 0},
		{"result below the reserve", reserve + mib - 1, Finishing, mib, true, reserve + mib},
		{"cancel on a full disk", 0, Finishing, 0, true, reserve},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New("/data", minFree, reserve)
			g.free = func(string) (uint64, error) { return tt.free, nil }
			err := g.Check(tt.class, tt.size)
			if !tt.refuse {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var se *store.NoSpaceError
			if !errors.As(err, &se) || !errors.Is(err, store.ErrNoSpace) {
				t.Fatalf("got %v, want an InsufficientStorageError", err)
			}
			if se.Free != tt.free || se.Needed != tt.need {
				t.Fatalf("free %d needed %d, want %d and %d", se.Free, se.Needed, tt.free, tt.need)
			}
		})
	}
}

func TestDiskGuardUnreadable(t *testing.T) {
	g := New("/data", 64<<20, 32<<20)
	g.free = func(string) (uint64, error) { return 0, errors.New("statfs failed") }
	if err := g.Check(NewWork, 0); err != nil {
		t.Fatalf("a file system that cannot be read refuses writes: %v", err)
	}
	if err := (*Guard)(nil).Check(NewWork, 1<<40); err != nil {
		t.Fatalf("no guard (in-memory store) refuses writes: %v", err)
	}
}

func TestDiskGuardRecovers(t *testing.T) {
	free := uint64(0)
	g := New("/data", 64<<20, 32<<20)
	g.free = func(string) (uint64, error) { return free, nil }
	if g.Ready() == nil {
		t.Fatal("ready on a full disk")
	}
	free = 1 << 30
	g.readAt = g.readAt.Add(-diskCacheFor) // the cached reading has aged
	if err := g.Ready(); err != nil {
		t.Fatalf("not ready once space returned: %v", err)
	}
}
