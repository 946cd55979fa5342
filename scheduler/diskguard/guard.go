// Package diskguard refuses writes that would leave the data disk too
// full: new work first, then everything but what finishes accepted work
// (docs/limits.md, docs/durability.md). The scheduler consults it before
// each write it makes; emberd's API keys and image imports, and /readyz,
// consult it too.
//
// It owns the two thresholds and the cached free-space reading. It
// imports scheduler/store (for the free-space reading and the error
// type) and nothing else of Ember; it must not import the scheduler.
package diskguard

import (
	"sync"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// WriteClass says what a write is for, which decides how much free disk it
// leaves untouched.
type WriteClass int

const (
	// NewWork is a write that takes on something new: a job submission, a
	// retry, an endpoint created or changed, an API key, an image import.
	// It needs the guard's minFree free beyond its own size.
	NewWork WriteClass = iota
	// Finishing is a write that completes or ends work already accepted: a
	// result, a stream chunk, a cancel, a status change, a worker's log.
	// It needs only the disk reserve beyond its own size, so that running
	// jobs finish while new work is refused.
	Finishing
)

func (c WriteClass) what() string {
	if c == NewWork {
		return "accept new work"
	}
	return "record the result of accepted work"
}

// diskCacheFor is how long a free-space reading is reused: statfs costs
// about a microsecond, but a burst of submissions should not pay it per
// job, and a quarter second is short next to how fast space is freed.
const diskCacheFor = 250 * time.Millisecond

// Guard refuses writes that would leave the data disk too full. It has
// two thresholds:
//
//   - minFree (--min-free-disk-mb, default 64 MiB): below it, new work is
//     refused with a *store.NoSpaceError (HTTP 507) and /readyz says not
//     ready;
//   - reserve (--disk-reserve-mb, default 32 MiB): below it, every write is
//     refused, by the guard and by the store's own gate in front of Badger
//     (store/space.go); between the two, writes that finish accepted work
//     (results, stream chunks, cancels, status changes) still go through.
//
// Reads never consult it. Nothing needs resetting when space returns: the
// next reading (at most diskCacheFor old) lets writes through again.
type Guard struct {
	dir     string
	minFree uint64
	reserve uint64
	// free reads the free bytes of dir (store.FreeBytes; tests replace it).
	free func(dir string) (uint64, error)

	mu      sync.Mutex
	readAt  time.Time
	reading uint64
	ok      bool // the last reading succeeded
}

// New guards the file system holding dir.
func New(dir string, minFree, reserve uint64) *Guard {
	return &Guard{dir: dir, minFree: minFree, reserve: reserve, free: store.FreeBytes}
}

// Free returns the free bytes of the data disk, read at most diskCacheFor
// ago; ok is false when the file system cannot be read.
func (g *Guard) Free() (free uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); now.Sub(g.readAt) >= diskCacheFor {
		g.readAt = now
		f, err := g.free(g.dir)
		g.reading, g.ok = f, err == nil
	}
	return g.reading, g.ok
}

// Check says whether a write of size bytes in class may go ahead: nil, or
// a *store.NoSpaceError naming the free and the needed bytes. A nil Guard
// (nothing on disk to guard) lets every write through.
func (g *Guard) Check(class WriteClass, size int64) error {
	if g == nil {
		return nil
	}
	free, ok := g.Free()
	if !ok {
		// Cannot tell: let the write try; the store reports a failure.
		return nil
	}
	need := g.reserve
	if class == NewWork {
		need = g.minFree
	}
	if size > 0 {
		need += uint64(size)
	}
	if free < need {
		return &store.NoSpaceError{Dir: g.dir, Free: free, Needed: need, What: class.what()}
	}
	return nil
}

// Ready is nil while new work is accepted, else the reason it is not: what
// /readyz reports.
func (g *Guard) Ready() error { return g.Check(NewWork, 0) }
