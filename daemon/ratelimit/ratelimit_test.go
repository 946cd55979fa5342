package ratelimit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/auth"
)

// fakeClock returns a limiter whose clock moves only by advance.
func fakeClock(l *Limiter) (advance func(time.Duration)) {
	var mu sync.Mutex
	var now int64
	l.now = func() int64 { mu.Lock(); defer mu.Unlock(); return now }
	return func(d time.Duration) { mu.Lock(); now += int64(d); mu.Unlock() }
}

func mustParse(t *testing.T, s string) Limits {
	t.Helper()
	l, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParse(t *testing.T) {
	def := Defaults()
	withRun := def
	withRun[Run] = Limit{Rate: 5, Per: 10 * time.Second}
	mixed := def
	mixed[Run] = Limit{Rate: 500, Per: 10 * time.Second, Concurrent: 50}
	mixed[Cancel] = Limit{}
	mixed[Status] = Limit{Concurrent: 10}
	mixed[OpenAI] = Limit{Rate: 6000, Per: time.Minute}
	for _, tc := range []struct {
		in   string
		want Limits
		err  string
	}{
		{in: "", want: def},
		{in: "off", want: Limits{}},
		{in: "run=5/10s", want: withRun},
		{in: " run=500/10s:50 , cancel=off,status=-:10,openai=6000/1m", want: mixed},
		{in: "run", err: "want OP=N/DURATION"},
		{in: "requests=1/10s", err: `operation "requests": want one of runsync, run, status`},
		{in: "run=0/10s", err: "rate \"0\": must be a whole number from 1"},
		{in: "run=5/soon", err: `period "soon"`},
		{in: "run=5/0s", err: `period "0s"`},
		{in: "run=5", err: "the rate must be N/DURATION"},
		{in: "run=5/10s:-1", err: `concurrent "-1"`},
		{in: "run=5/10s,run=6/10s", err: "run is given twice"},
	} {
		got, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		// String writes what Parse reads back.
		if back := mustParse(t, got.String()); back != got {
			t.Errorf("Parse(%q).String() = %q reads back as %v", tc.in, got.String(), back)
		}
	}
	if s := def.String(); s != "runsync=2000/10s:400,run=1000/10s:200,status=2000/10s:400,stream=2000/10s:400,cancel=100/10s:20,purge-queue=2/10s,openai=2000/10s:400" {
		t.Errorf("Defaults().String() = %q", s)
	}
}

func TestRate(t *testing.T) {
	l := New(mustParse(t, "run=5/10s"))
	advance := fakeClock(l)
	for i := range 5 {
		release, ref := l.Allow("k-1", "ep1", Run)
		if ref != nil {
			t.Fatalf("request %d refused: %v", i+1, ref)
		}
		release()
	}
	release, ref := l.Allow("k-1", "ep1", Run)
	if ref == nil || release != nil {
		t.Fatal("6th request in the window allowed")
	}
	// One token every 2 s.
	if ref.Reason != auth.ReasonRate || ref.RetryAfter != 2*time.Second || ref.RetryAfterSeconds() != 2 {
		t.Errorf("refusal = %+v, want reason rate after 2 s", ref)
	}
	if msg := ref.Error(); !strings.Contains(msg, "at most 5 per 10s") || strings.Contains(msg, "k-1") {
		t.Errorf("refusal message %q", msg)
	}
	// Other keys, endpoints and operations have budgets of their own.
	for _, c := range []struct {
		key, ep string
		op      Op
	}{{"k-2", "ep1", Run}, {"k-1", "ep2", Run}, {"k-1", "ep1", Status}} {
		if _, ref := l.Allow(c.key, c.ep, c.op); ref != nil {
			t.Errorf("%v refused: %v", c, ref)
		}
	}
	advance(1500 * time.Millisecond)
	if _, ref := l.Allow("k-1", "ep1", Run); ref == nil || ref.RetryAfter != 500*time.Millisecond || ref.RetryAfterSeconds() != 1 {
		t.Errorf("after 1.5 s: refusal %+v, want retry after 0.5 s (1 s in whole seconds)", ref)
	}
	advance(500 * time.Millisecond)
	if _, ref := l.Allow("k-1", "ep1", Run); ref != nil {
		t.Errorf("after 2 s: refused: %v", ref)
	}
	// A full window refills the whole bucket, and no more.
	advance(time.Hour)
	for i := range 6 {
		_, ref := l.Allow("k-1", "ep1", Run)
		if (ref == nil) != (i < 5) {
			t.Fatalf("after an hour, request %d: refusal %v", i+1, ref)
		}
	}
}

func TestConcurrency(t *testing.T) {
	l := New(mustParse(t, "runsync=-:2"))
	fakeClock(l)
	r1, _ := l.Allow("k", "ep", RunSync)
	r2, _ := l.Allow("k", "ep", RunSync)
	if r1 == nil || r2 == nil {
		t.Fatal("first two refused")
	}
	if _, ref := l.Allow("k", "ep", RunSync); ref == nil || ref.Reason != auth.ReasonConcurrency || ref.RetryAfterSeconds() != 1 {
		t.Fatalf("third in flight: refusal %+v, want concurrency", ref)
	}
	r1()
	r1() // a second call frees nothing more
	r3, ref := l.Allow("k", "ep", RunSync)
	if ref != nil {
		t.Fatalf("after a release: %v", ref)
	}
	if _, ref := l.Allow("k", "ep", RunSync); ref == nil {
		t.Fatal("a double release freed two slots")
	}
	r2()
	r3()
}

func TestOff(t *testing.T) {
	l := New(Limits{})
	for range 10_000 {
		release, ref := l.Allow("k", "ep", PurgeQueue)
		if ref != nil {
			t.Fatal(ref)
		}
		release()
	}
	if n := l.Len(); n != 0 {
		t.Errorf("off keeps %d buckets", n)
	}
}

func TestBucketsBounded(t *testing.T) {
	const maxBuckets = 64
	l := newLimiter(mustParse(t, "run=5/10s:1"), maxBuckets)
	advance := fakeClock(l)
	// Distinct endpoint ids, each request ended: idle buckets are evicted
	// to make room, and every request passes.
	for i := range 10_000 {
		release, ref := l.Allow("k", fmt.Sprintf("ep%d", i), Run)
		if ref != nil {
			t.Fatalf("request %d: %v", i, ref)
		}
		release()
		if n := l.Len(); n > maxBuckets {
			t.Fatalf("after %d endpoints: %d buckets, cap %d", i+1, n, maxBuckets)
		}
	}
	// An overlong endpoint id is not kept.
	l.Allow("k", strings.Repeat("x", 1<<20), Run)
	for i := range l.shards {
		for k := range l.shards[i].buckets {
			if len(k.endpoint) > 64 {
				t.Fatalf("a bucket keeps an endpoint id of %d bytes", len(k.endpoint))
			}
		}
	}
	// Requests held in flight: the tracked buckets stay at the cap, and
	// past it a new bucket is refused as concurrency rather than grown.
	advance(time.Hour)
	var held []func()
	refused := 0
	for i := range 10 * maxBuckets {
		release, ref := l.Allow("k", fmt.Sprintf("held%d", i), Run)
		if ref != nil {
			if ref.Reason != auth.ReasonConcurrency {
				t.Fatalf("refusal %v, want concurrency", ref)
			}
			refused++
			continue
		}
		held = append(held, release)
	}
	if n := l.Len(); n > maxBuckets || refused == 0 || len(held) > maxBuckets {
		t.Errorf("%d buckets, %d held, %d refused; cap %d", n, len(held), refused, maxBuckets)
	}
	for _, r := range held {
		r()
	}
	// Once the requests end and a window passes, the buckets go.
	advance(11 * time.Second)
	for i := range 4 * numShards {
		release, _ := l.Allow("k2", fmt.Sprintf("late%d", i), Run)
		if release != nil {
			release()
		}
	}
	if n := l.Len(); n > 4*numShards {
		t.Errorf("after the window: %d buckets left, want at most the %d new ones", n, 4*numShards)
	}
}

func TestSetLimits(t *testing.T) {
	l := New(mustParse(t, "cancel=10/10s:3"))
	fakeClock(l)
	r1, _ := l.Allow("k", "ep", Cancel)
	r2, _ := l.Allow("k", "ep", Cancel)
	// Lower: the bucket's 8 tokens are capped to 2, and the 2 in flight
	// count against the new cap of 2.
	l.SetLimits(mustParse(t, "cancel=2/10s:2"))
	if _, ref := l.Allow("k", "ep", Cancel); ref == nil || ref.Reason != auth.ReasonConcurrency {
		t.Fatalf("after the reload, with 2 in flight: %v", ref)
	}
	r1()
	r2()
	for i := range 3 {
		release, ref := l.Allow("k", "ep", Cancel)
		if (ref == nil) != (i < 2) {
			t.Fatalf("request %d after the reload: %v", i+1, ref)
		}
		if ref == nil {
			release()
		}
	}
	if got := l.Limits()[Cancel]; got != (Limit{Rate: 2, Per: Window, Concurrent: 2}) {
		t.Errorf("Limits() = %v", got)
	}
	l.SetLimits(Limits{})
	if _, ref := l.Allow("k", "ep", Cancel); ref != nil {
		t.Errorf("off: %v", ref)
	}
	// A bucket kept without a rate is full when a reload brings one.
	l.SetLimits(mustParse(t, "cancel=-:5"))
	release, _ := l.Allow("k", "ep", Cancel)
	release()
	l.SetLimits(mustParse(t, "cancel=3/10s:5"))
	for i := range 4 {
		release, ref := l.Allow("k", "ep", Cancel)
		if (ref == nil) != (i < 3) {
			t.Fatalf("request %d after a rate was set: %v", i+1, ref)
		}
		if ref == nil {
			release()
		}
	}
}

// TestConcurrentUse runs under -race: slots taken and released from many
// goroutines add up.
func TestConcurrentUse(t *testing.T) {
	l := New(mustParse(t, "stream=1000000/10s:8"))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				release, ref := l.Allow("k", fmt.Sprintf("ep%d", (g+i)%3), Stream)
				if ref == nil {
					release()
				}
			}
		}()
	}
	wg.Wait()
	for i := range l.shards {
		for k, b := range l.shards[i].buckets {
			if b.inflight != 0 {
				t.Errorf("%v: %d in flight after all released", k, b.inflight)
			}
		}
	}
}

// BenchmarkAllow is the limiter's cost per request (Allow and release) on
// a rate-and-concurrency operation, against a limiter that limits nothing
// (same run): one caller and endpoint serially, and many callers in
// parallel across the shards.
func BenchmarkAllow(b *testing.B) {
	big := Limits{}
	big[Status] = Limit{Rate: 1_000_000_000, Per: Window, Concurrent: 1_000_000}
	for _, bc := range []struct {
		name string
		l    Limits
	}{{"limits=off", Limits{}}, {"limits=on", big}} {
		b.Run(bc.name+"/serial", func(b *testing.B) {
			l := New(bc.l)
			b.ReportAllocs()
			for b.Loop() {
				release, ref := l.Allow("k-1", "8f3k2mz9q1xw0a", Status)
				if ref != nil {
					b.Fatal(ref)
				}
				release()
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			l := New(bc.l)
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("k-%d", i)
			}
			var next sync.Mutex
			n := 0
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				next.Lock()
				key := keys[n%len(keys)]
				n++
				next.Unlock()
				for pb.Next() {
					release, ref := l.Allow(key, "8f3k2mz9q1xw0a", Status)
					if ref != nil {
						b.Fatal(ref)
					}
					release()
				}
			})
		})
	}
}
