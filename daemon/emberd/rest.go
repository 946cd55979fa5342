package emberd

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory at rest. A burst of /run traffic leaves the Go heap with free
// spans that the runtime hands back to the kernel only slowly (its
// background scavenger works at about 1 % of a CPU), and Badger's
// compactions briefly hold tens of MB of table-building buffers. Between
// bursts RSS would stay near the burst's peak for minutes. Once emberd has
// been quiet for a while, returnAtRest gives the free pages back at once:
// one forced collection (debug.FreeOSMemory), at most once per quiet spell.
const (
	// restTick is how often the allocation rate is sampled.
	restTick = time.Second
	// restQuietTicks: this many ticks in a row under restAllocRate make
	// emberd "at rest".
	restQuietTicks = 3
	// restAllocRate is the allocation rate (bytes per tick) under which a
	// tick counts as quiet: a few long-polls and pings, not a burst.
	restAllocRate = 1 << 20
	// restMinFree is how much free, unreturned heap makes a forced
	// collection worth its cost (a full GC: milliseconds per 100 MB).
	restMinFree = 16 << 20
)

// restSampler reads the runtime's cumulative allocations and the heap
// memory that is free but still held from the kernel.
type restSampler struct {
	s [2]metrics.Sample
}

func newRestSampler() *restSampler {
	r := &restSampler{}
	r.s[0].Name = "/gc/heap/allocs:bytes"
	r.s[1].Name = "/memory/classes/heap/free:bytes"
	return r
}

func (r *restSampler) read() (allocs, free uint64) {
	metrics.Read(r.s[:])
	return r.s[0].Value.Uint64(), r.s[1].Value.Uint64()
}

// restState decides, tick by tick, when to return memory: after
// restQuietTicks quiet ticks with at least restMinFree bytes free, once,
// and again only after a busy tick.
type restState struct {
	lastAllocs uint64
	quiet      int
	returned   bool
}

// tick takes the cumulative allocations and free heap bytes now, and says
// whether to return free memory to the kernel.
func (st *restState) tick(allocs, free uint64) bool {
	delta := allocs - st.lastAllocs
	st.lastAllocs = allocs
	if delta >= restAllocRate {
		st.quiet, st.returned = 0, false
		return false
	}
	st.quiet++
	if st.returned || st.quiet < restQuietTicks || free < restMinFree {
		return false
	}
	st.returned = true
	return true
}

// returnAtRest runs until ctx ends, returning free heap memory to the
// kernel each time emberd comes to rest after a busy spell.
func returnAtRest(ctx context.Context, log *slog.Logger) {
	smp := newRestSampler()
	var st restState
	st.lastAllocs, _ = smp.read()
	t := time.NewTicker(restTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st.tick(smp.read()) {
			_, before := smp.read()
			start := time.Now()
			debug.FreeOSMemory()
			log.Debug("at rest: free heap returned to the kernel", "free_bytes", before, "took", time.Since(start))
		}
	}
}
