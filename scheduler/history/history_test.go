package history

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// t0 is a bucket start, so that offsets below land in known buckets.
var t0 = time.Unix(1_700_000_000, 0)

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func val(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// TestRoll: events land in the bucket of their time; buckets that pass
// without events are there with zero counts and the gauges carried; the
// series starts where it was created.
func TestRoll(t *testing.T) {
	s := New(t0)
	s.Sample(t0, Gauges{QueueDepth: 3, Workers: 1})
	s.Submitted(t0.Add(time.Second))
	s.Submitted(t0.Add(9 * time.Second))
	s.Submitted(t0.Add(10 * time.Second)) // the next bucket
	s.Finished(t0.Add(11*time.Second), true, false, ms(40), true)
	s.Finished(t0.Add(12*time.Second), false, true, ms(50), true)
	s.Finished(t0.Add(13*time.Second), false, false, 0, false) // cancelled while queued
	s.ColdStart(t0.Add(14*time.Second), ms(1500))
	// 30 s of nothing, then a read at t0+45s.
	pts := s.Points(t0.Add(45*time.Second), Gauges{QueueDepth: 0, Workers: 2})
	if len(pts) != 5 {
		t.Fatalf("%d points, want 5 (t0 .. t0+40s): %+v", len(pts), pts)
	}
	for i, p := range pts {
		if want := t0.Unix() + int64(i*10); p.T != want {
			t.Errorf("point %d at %d, want %d", i, p.T, want)
		}
	}
	if p := pts[0]; p.Submitted != 2 || p.Completed != 0 || p.QueueDepth != 3 || p.Workers != 1 {
		t.Errorf("bucket 0: %+v", p)
	}
	if p := pts[1]; p.Submitted != 1 || p.Completed != 1 || p.Failed != 1 || p.ColdStarts != 1 ||
		val(p.ExecutionP50Ms) != 40 || val(p.ExecutionP90Ms) != 50 || val(p.ColdStartP50Ms) != 1500 || p.DelayP50Ms != nil {
		t.Errorf("bucket 1: %+v", p)
	}
	// The gap: zero counts, no percentiles, the last gauges carried.
	for _, p := range pts[2:4] {
		if p.Submitted+p.Completed+p.Failed+p.ColdStarts != 0 || p.ExecutionP50Ms != nil || p.QueueDepth != 3 || p.Workers != 1 {
			t.Errorf("gap bucket %d: %+v", p.T, p)
		}
	}
	if p := pts[4]; p.Workers != 2 || p.QueueDepth != 0 {
		t.Errorf("current bucket: %+v, want the gauges sampled by the read", p)
	}
}

// TestWindow: after more than an hour the series holds exactly the last
// Buckets buckets, oldest first, and a gap longer than the window leaves
// only empty buckets; a clock that went back records into the current
// bucket.
func TestWindow(t *testing.T) {
	s := New(t0)
	end := t0.Add(2 * time.Hour)
	for at := t0; at.Before(end); at = at.Add(Resolution) {
		s.Submitted(at)
	}
	pts := s.Points(end.Add(-time.Second), Gauges{})
	if len(pts) != Buckets {
		t.Fatalf("%d points, want %d", len(pts), Buckets)
	}
	if first, want := pts[0].T, end.Add(-Window).Unix(); first != want {
		t.Errorf("oldest point at %d, want %d", first, want)
	}
	for i, p := range pts {
		if p.Submitted != 1 || (i > 0 && p.T != pts[i-1].T+10) {
			t.Fatalf("point %d: %+v", i, p)
		}
	}
	// Three hours of silence: every bucket empty.
	later := end.Add(3 * time.Hour)
	pts = s.Points(later, Gauges{})
	if len(pts) != Buckets || pts[len(pts)-1].T != later.Unix()/10*10 {
		t.Fatalf("%d points ending %d", len(pts), pts[len(pts)-1].T)
	}
	for _, p := range pts {
		if p.Submitted != 0 {
			t.Fatalf("stale bucket %+v after a gap longer than the window", p)
		}
	}
	// The clock goes back a minute: counted in the current bucket.
	s.Submitted(later.Add(-time.Minute))
	if pts = s.Points(later, Gauges{}); pts[len(pts)-1].Submitted != 1 {
		t.Errorf("current bucket %+v, want the back-dated job in it", pts[len(pts)-1])
	}
}

// TestPercentiles: p50 and p90 read from the histograms are within a
// bucket's width (a factor of about 1.47) of the exact nearest-rank
// percentiles of known samples, exact when all samples are equal, and
// absent without samples.
func TestPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	width := bounds[1] / bounds[0]
	cases := []struct {
		name    string
		samples []int64 // ms
	}{
		{"one", []int64{250}},
		{"equal", []int64{42, 42, 42, 42}},
		{"zero", []int64{0, 0, 0}},
		{"uniform 1..1000", func() []int64 {
			v := make([]int64, 1000)
			for i := range v {
				v[i] = int64(i + 1)
			}
			return v
		}()},
		{"log-normal", func() []int64 {
			v := make([]int64, 5000)
			for i := range v {
				v[i] = int64(math.Exp(r.NormFloat64()*1.5 + 5))
			}
			return v
		}()},
		{"above an hour", []int64{2 * 3600 * 1000, 3 * 3600 * 1000}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New(t0)
			for _, v := range c.samples {
				s.Delay(t0, ms(v))
			}
			p := s.Points(t0, Gauges{})[0]
			sorted := slices.Clone(c.samples)
			slices.Sort(sorted)
			for _, q := range []struct {
				q   float64
				got *int64
			}{{0.5, p.DelayP50Ms}, {0.9, p.DelayP90Ms}} {
				want := sorted[int(math.Ceil(q.q*float64(len(sorted))))-1]
				got := val(q.got)
				lo, hi := float64(want)/width-1, float64(want)*width+1
				switch {
				case sorted[0] == sorted[len(sorted)-1]:
					lo, hi = float64(want), float64(want)
				case want > int64(HistMax/time.Millisecond):
					// Past the last bound only the samples' range is known.
					lo, hi = float64(sorted[0]), float64(sorted[len(sorted)-1])
				}
				if float64(got) < lo || float64(got) > hi {
					t.Errorf("p%.0f = %d, want %d (within [%.1f, %.1f])", q.q*100, got, want, lo, hi)
				}
			}
		})
	}
	s := New(t0)
	if p := s.Points(t0, Gauges{})[0]; p.DelayP50Ms != nil || p.ExecutionP90Ms != nil || p.ColdStartP50Ms != nil {
		t.Errorf("percentiles without samples: %+v", p)
	}
}

// TestBoundedMemory: the series' size is a constant of the type, and a
// heavy load (a million events in one bucket, then a day of them) does
// not allocate.
func TestBoundedMemory(t *testing.T) {
	if SeriesBytes > Buckets*BucketBytes+64 {
		t.Errorf("SeriesBytes %d: more than the buckets (%d x %d) and a few words", SeriesBytes, Buckets, BucketBytes)
	}
	pkgDoc, err := os.ReadFile("history.go")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("360 x %d bytes, %d bytes\n// (%d KiB) per endpoint", BucketBytes, SeriesBytes, SeriesBytes>>10); !strings.Contains(string(pkgDoc), want) {
		t.Errorf("the package doc does not say %q", want)
	}
	doc, err := os.ReadFile("../../docs/limits.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("buckets of %d bytes", BucketBytes); !strings.Contains(string(doc), want) {
		t.Errorf("docs/limits.md does not say %q", want)
	}
	if want := fmt.Sprintf("%d bytes (%d KiB) per endpoint", SeriesBytes, SeriesBytes>>10); !strings.Contains(string(doc), want) {
		t.Errorf("docs/limits.md does not say %q", want)
	}
	s := New(t0)
	allocs := testing.AllocsPerRun(3, func() {
		for i := range 1_000_000 {
			s.Delay(t0, ms(int64(i%5000)))
		}
		for at := t0; at.Before(t0.Add(24 * time.Hour)); at = at.Add(time.Second) {
			s.Submitted(at)
			s.Finished(at, true, false, ms(30), true)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations recording", allocs)
	}
}

// TestNilSeries: recording on a nil series (an endpoint state a unit test
// built by hand) does nothing.
func TestNilSeries(t *testing.T) {
	var s *Series
	s.Submitted(t0)
	s.Delay(t0, time.Second)
	s.Finished(t0, true, false, time.Second, true)
	s.ColdStart(t0, time.Second)
	s.Sample(t0, Gauges{})
}

// TestBounds: the histogram's bounds run from HistMin to HistMax, each a
// constant factor above the last, and every sample falls in the bucket
// whose range holds it.
func TestBounds(t *testing.T) {
	if bounds[0] != 1 || bounds[HistBuckets-1] != float64(HistMax/time.Millisecond) {
		t.Fatalf("bounds %v .. %v", bounds[0], bounds[HistBuckets-1])
	}
	for _, v := range []int64{0, 1, 2, 3, 10, 99, 100, 101, 1000, 59_999, 3_600_000, 3_600_001, math.MaxInt32} {
		var h hist
		h.add(ms(v))
		i := slices.IndexFunc(h.n[:], func(n uint32) bool { return n == 1 })
		x := float64(v)
		inRange := x <= bounds[i] && (i == 0 || x > bounds[i-1])
		if !inRange && !(i == HistBuckets-1 && x > bounds[i]) {
			t.Errorf("%d ms in bucket %d (%v, %v]", v, i, bounds[max(i-1, 0)], bounds[i])
		}
	}
}
