// Package history keeps an endpoint's recent activity as a time series for
// the console's charts: the last hour (Window) in 10 s buckets
// (Resolution), each with job and cold-start counts, small log-scale
// histograms of delay, execution and cold-start times (from which p50 and
// p90 are read), and the queue depth and worker count sampled while the
// bucket was current.
//
// A Series has a fixed size whatever the traffic: Buckets buckets of
// BucketBytes each, SeriesBytes in all: 360 x 552 bytes, 198752 bytes
// (194 KiB) per endpoint on a 64-bit machine (docs/limits.md, checked by
// TestBoundedMemory). The scheduler
// keeps one per endpoint, beside its other stats, and drops it with the
// endpoint. Buckets roll lazily, on the next record or read, from the
// caller's clock, so the package runs no goroutine and tests drive it
// with a fake clock. A Series is not safe for concurrent use: the
// scheduler's mutex guards it.
package history

import (
	"math"
	"time"
	"unsafe"
)

const (
	// Resolution is one bucket's span.
	Resolution = 10 * time.Second
	// Buckets is how many buckets a Series keeps: an hour at Resolution.
	Buckets = 360
	// Window is the span a Series covers.
	Window = Buckets * Resolution
	// HistBuckets is the number of buckets of a bucket's histograms:
	// log-scale from HistMin to HistMax, so that each is about 1.47 times
	// as wide as the one before and a percentile read from one is within
	// that factor of the true value (tighter when the samples of a bucket
	// are close: the estimate is kept between the smallest and the
	// largest sample seen).
	HistBuckets = 40
	// HistMin and HistMax bound the histograms; samples outside fall in
	// the first or the last bucket.
	HistMin = time.Millisecond
	HistMax = time.Hour
)

// BucketBytes and SeriesBytes are what one bucket and one Series take in
// memory (a Series is its buckets plus a few words).
const (
	BucketBytes = int(unsafe.Sizeof(bucket{}))
	SeriesBytes = int(unsafe.Sizeof(Series{}))
)

// hist is a fixed-size histogram of durations in milliseconds.
type hist struct {
	n        [HistBuckets]uint32
	total    uint32
	min, max uint32 // ms, of the samples seen; valid when total > 0
}

// Gauges are the values sampled into the current bucket.
type Gauges struct {
	QueueDepth int
	Workers    int
}

type bucket struct {
	slot                                    int64 // start time / Resolution
	submitted, completed, failed, coldStart uint32
	queueDepth, workers                     uint32
	delay, execution, coldStartTime         hist
}

// Series is one endpoint's last hour. The zero value is not usable; use
// New.
type Series struct {
	b [Buckets]bucket
	// first is the slot of the first bucket: the endpoint's start of
	// history (created, or emberd started). cur is the current slot.
	first, cur int64
	// last are the gauges last sampled, carried into buckets that pass
	// without a sample.
	last Gauges
}

// New returns an empty Series whose history starts at now.
func New(now time.Time) *Series {
	s := &Series{}
	s.first = slotOf(now)
	s.cur = s.first
	s.b[s.cur%Buckets] = bucket{slot: s.cur}
	return s
}

func slotOf(t time.Time) int64 {
	return t.UnixNano() / int64(Resolution)
}

// at rolls the series forward to now and returns the current bucket. A
// clock that went back records into the current bucket.
func (s *Series) at(now time.Time) *bucket {
	n := slotOf(now)
	if n > s.cur {
		from := s.cur + 1
		if n-from >= Buckets {
			from = n - Buckets + 1
		}
		for k := from; k <= n; k++ {
			s.b[k%Buckets] = bucket{slot: k, queueDepth: clampU32(s.last.QueueDepth), workers: clampU32(s.last.Workers)}
		}
		s.cur = n
	}
	return &s.b[s.cur%Buckets]
}

// The recording methods do nothing on a nil Series (an endpoint state
// built by a unit test without one).

// Submitted counts a job submitted at now.
func (s *Series) Submitted(now time.Time) {
	if s == nil {
		return
	}
	b := s.at(now)
	b.submitted = addU32(b.submitted)
}

// Delay records a job's time in the queue, at its take.
func (s *Series) Delay(now time.Time, d time.Duration) {
	if s == nil {
		return
	}
	s.at(now).delay.add(d)
}

// Finished counts a job that ended at now: completed, or failed (failed
// and timed out; a cancelled job is neither), and records its execution
// time when it ran.
func (s *Series) Finished(now time.Time, completed, failed bool, exec time.Duration, ran bool) {
	if s == nil {
		return
	}
	b := s.at(now)
	switch {
	case completed:
		b.completed = addU32(b.completed)
	case failed:
		b.failed = addU32(b.failed)
	}
	if ran {
		b.execution.add(exec)
	}
}

// ColdStart records a new worker's cold start, which ended at now.
func (s *Series) ColdStart(now time.Time, d time.Duration) {
	if s == nil {
		return
	}
	b := s.at(now)
	b.coldStart = addU32(b.coldStart)
	b.coldStartTime.add(d)
}

// Sample sets the current bucket's gauges: the last sample a bucket gets
// is the one it keeps.
func (s *Series) Sample(now time.Time, g Gauges) {
	if s == nil {
		return
	}
	b := s.at(now)
	s.last = g
	b.queueDepth, b.workers = clampU32(g.QueueDepth), clampU32(g.Workers)
}

// Point is one bucket as the history API returns it. Percentiles are in
// milliseconds, nil when the bucket had no sample of that kind.
type Point struct {
	T              int64  `json:"t"` // the bucket's start, Unix seconds
	Submitted      uint32 `json:"submitted"`
	Completed      uint32 `json:"completed"`
	Failed         uint32 `json:"failed"`
	DelayP50Ms     *int64 `json:"delayP50Ms,omitempty"`
	DelayP90Ms     *int64 `json:"delayP90Ms,omitempty"`
	ExecutionP50Ms *int64 `json:"executionP50Ms,omitempty"`
	ExecutionP90Ms *int64 `json:"executionP90Ms,omitempty"`
	ColdStarts     uint32 `json:"coldStarts"`
	ColdStartP50Ms *int64 `json:"coldStartP50Ms,omitempty"`
	QueueDepth     uint32 `json:"queueDepth"`
	Workers        uint32 `json:"workers"`
}

// Points samples g into the current bucket and returns the buckets since
// the series started, at most Buckets, oldest first; buckets that passed
// without activity are there with zero counts.
func (s *Series) Points(now time.Time, g Gauges) []Point {
	s.Sample(now, g)
	from := max(s.first, s.cur-Buckets+1)
	out := make([]Point, 0, s.cur-from+1)
	for k := from; k <= s.cur; k++ {
		b := &s.b[k%Buckets]
		p := Point{
			T:         k * int64(Resolution) / int64(time.Second),
			Submitted: b.submitted, Completed: b.completed, Failed: b.failed,
			ColdStarts: b.coldStart, QueueDepth: b.queueDepth, Workers: b.workers,
		}
		p.DelayP50Ms, p.DelayP90Ms = b.delay.quantile(0.5), b.delay.quantile(0.9)
		p.ExecutionP50Ms, p.ExecutionP90Ms = b.execution.quantile(0.5), b.execution.quantile(0.9)
		p.ColdStartP50Ms = b.coldStartTime.quantile(0.5)
		out = append(out, p)
	}
	return out
}

// bounds[i] is the upper bound (ms) of histogram bucket i:
// HistMin * ratio^i, the last one HistMax.
var bounds = func() [HistBuckets]float64 {
	var b [HistBuckets]float64
	lo, hi := float64(HistMin/time.Millisecond), float64(HistMax/time.Millisecond)
	r := math.Pow(hi/lo, 1/float64(HistBuckets-1))
	for i := range b {
		b[i] = lo * math.Pow(r, float64(i))
	}
	b[HistBuckets-1] = hi
	return b
}()

func (h *hist) add(d time.Duration) {
	ms := d.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	v := uint32(min(ms, math.MaxUint32))
	// The first bound at or above ms (a binary search over 40 bounds: a
	// few comparisons, cheaper than a logarithm).
	x := float64(ms)
	lo, hi := 0, HistBuckets-1
	for lo < hi {
		m := (lo + hi) / 2
		if bounds[m] < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo
	if h.total == math.MaxUint32 {
		return // 4 billion samples in 10 s: not reachable
	}
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n[i]++
	h.total++
}

// quantile is the nearest-rank q-quantile: the bucket holding the sample
// of rank ceil(q*count), read as its bounds' geometric midpoint, kept
// between the smallest and the largest sample. Nil without samples.
func (h *hist) quantile(q float64) *int64 {
	c := uint64(h.total)
	if c == 0 {
		return nil
	}
	rank := uint64(math.Ceil(q * float64(c)))
	rank = max(rank, 1)
	var seen uint64
	i := 0
	for ; i < HistBuckets; i++ {
		seen += uint64(h.n[i])
		if seen >= rank {
			break
		}
	}
	lo := 0.0
	if i > 0 {
		lo = bounds[i-1]
	}
	est := bounds[i]
	if lo > 0 {
		est = math.Sqrt(lo * bounds[i])
	}
	est = math.Min(math.Max(est, float64(h.min)), float64(h.max))
	v := int64(math.Round(est))
	return &v
}

func addU32(v uint32) uint32 {
	if v == math.MaxUint32 {
		return v
	}
	return v + 1
}

func clampU32(v int) uint32 {
	return uint32(min(max(v, 0), math.MaxUint32))
}
