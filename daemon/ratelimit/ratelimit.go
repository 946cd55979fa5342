// Package ratelimit limits RunPod's client operations per caller: for each
// (key id, endpoint id, operation) a request rate and a number of requests
// in flight at once, with RunPod's documented defaults (Defaults). Every
// transport (the /v2 routes, the /v1 job routes and gRPC's JobService) asks
// the same Limiter, so a caller's budget is one whichever way it comes in.
//
// The rate is a token bucket per (key, endpoint, operation): it holds up
// to Rate tokens and gains Rate tokens per Per; a request takes one. A
// token bucket rather than a sliding window because it needs two numbers
// per bucket whatever the rate (a sliding log of 2000 requests per 10 s
// would keep 2000 timestamps), costs O(1) per request, and gives an exact
// Retry-After: the time until the next token. Its long-run rate is exactly
// Rate per Per, and a caller idle for a whole Per may send Rate requests at
// once, as RunPod's "N per 10 s" reads.
//
// Memory is bounded whatever clients send: a bucket that is full and has
// nothing in flight is the same as no bucket, so such buckets are dropped
// (swept at most once per sweep interval per shard, on an insert; no
// goroutine), and at most limits.RateBuckets are kept. Past that cap an
// idle bucket is evicted to make room, the least recently used of a few
// sampled (the evicted caller gets a fresh allowance: the limit weakens
// for it rather than locking anyone out); when every sampled bucket has
// requests in flight, the new request is refused as over concurrency.
package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/scheduler/limits"
)

// Op is a limited operation: one row of RunPod's table.
type Op uint8

// The limited operations.
const (
	RunSync    Op = iota // /runsync
	Run                  // /run (and /retry, which queues the job again)
	Status               // /status and /status-sync
	Stream               // /stream
	Cancel               // /cancel
	PurgeQueue           // /purge-queue
	OpenAI               // /openai/*
	numOps
)

var opNames = [numOps]string{"runsync", "run", "status", "stream", "cancel", "purge-queue", "openai"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// ParseOp reads an operation's name (as String writes it).
func ParseOp(s string) (Op, error) {
	for i, n := range opNames {
		if n == s {
			return Op(i), nil
		}
	}
	return 0, fmt.Errorf("operation %q: want one of %s", s, strings.Join(opNames[:], ", "))
}

// Limit is one operation's limits. The zero Limit limits nothing.
type Limit struct {
	// Rate requests per Per; 0: no rate limit.
	Rate int
	Per  time.Duration
	// Concurrent requests in flight at once; 0: no cap.
	Concurrent int
}

func (l Limit) String() string {
	if l.Rate == 0 && l.Concurrent == 0 {
		return "off"
	}
	s := "-"
	if l.Rate > 0 {
		s = strconv.Itoa(l.Rate) + "/" + formatPer(l.Per)
	}
	if l.Concurrent > 0 {
		s += ":" + strconv.Itoa(l.Concurrent)
	}
	return s
}

// formatPer writes d as time.Duration does, without its zero tails: 10s,
// 1m, 1h, 1m30s.
func formatPer(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Limits holds every operation's limits, indexed by Op.
type Limits [numOps]Limit

// Window is the period of RunPod's documented rates.
const Window = 10 * time.Second

// Defaults are RunPod's documented limits per user and endpoint
// (docs/limits.md, Rate limits). /purge-queue has no concurrency cap there.
func Defaults() Limits {
	var l Limits
	l[RunSync] = Limit{Rate: 2000, Per: Window, Concurrent: 400}
	l[Run] = Limit{Rate: 1000, Per: Window, Concurrent: 200}
	l[Status] = Limit{Rate: 2000, Per: Window, Concurrent: 400}
	l[Stream] = Limit{Rate: 2000, Per: Window, Concurrent: 400}
	l[Cancel] = Limit{Rate: 100, Per: Window, Concurrent: 20}
	l[PurgeQueue] = Limit{Rate: 2, Per: Window}
	l[OpenAI] = Limit{Rate: 2000, Per: Window, Concurrent: 400}
	return l
}

// String writes l as Parse reads it: "off", or op=LIMIT for every
// operation, in Op order.
func (l Limits) String() string {
	if l == (Limits{}) {
		return "off"
	}
	parts := make([]string, 0, numOps)
	for op, lim := range l {
		parts = append(parts, Op(op).String()+"="+lim.String())
	}
	return strings.Join(parts, ",")
}

// Parse reads the --rate-limits flag: "" is Defaults(); "off" limits
// nothing; otherwise comma-separated overrides of the defaults, each
// OP=RATE[:CONCURRENT] or OP=off, where RATE is N/DURATION (5/10s, 100/1s,
// 6000/1m) or "-" for no rate limit and CONCURRENT is a count (0: no cap).
// Examples: "run=5/10s", "run=500/10s:50,cancel=off", "status=-:10".
func Parse(s string) (Limits, error) {
	s = strings.TrimSpace(s)
	l := Defaults()
	switch s {
	case "":
		return l, nil
	case "off":
		return Limits{}, nil
	}
	seen := make(map[Op]bool)
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Limits{}, fmt.Errorf("rate-limits: %q: want OP=N/DURATION[:CONCURRENT] or OP=off (for example run=1000/10s:200), or the whole value off", part)
		}
		op, err := ParseOp(strings.TrimSpace(name))
		if err != nil {
			return Limits{}, fmt.Errorf("rate-limits: %w", err)
		}
		if seen[op] {
			return Limits{}, fmt.Errorf("rate-limits: %s is given twice", op)
		}
		seen[op] = true
		lim, err := parseLimit(strings.TrimSpace(val))
		if err != nil {
			return Limits{}, fmt.Errorf("rate-limits: %s=%s: %w", op, val, err)
		}
		l[op] = lim
	}
	return l, nil
}

func parseLimit(v string) (Limit, error) {
	if v == "off" {
		return Limit{}, nil
	}
	rate, conc, hasConc := strings.Cut(v, ":")
	var lim Limit
	if rate != "-" {
		n, per, ok := strings.Cut(rate, "/")
		if !ok {
			return Limit{}, errors.New(`the rate must be N/DURATION (for example 1000/10s), or "-" for none`)
		}
		r, err := strconv.Atoi(n)
		if err != nil || r < 1 || r > 1_000_000_000 {
			return Limit{}, fmt.Errorf("rate %q: must be a whole number from 1 to 1000000000", n)
		}
		d, err := time.ParseDuration(per)
		if err != nil || d < time.Millisecond || d > 24*time.Hour {
			return Limit{}, fmt.Errorf("period %q: must be a duration from 1ms to 24h (10s, 1m)", per)
		}
		lim.Rate, lim.Per = r, d
	}
	if hasConc {
		c, err := strconv.Atoi(conc)
		if err != nil || c < 0 || c > 1_000_000 {
			return Limit{}, fmt.Errorf("concurrent %q: must be a whole number from 0 (no cap) to 1000000", conc)
		}
		lim.Concurrent = c
	}
	return lim, nil
}

// Refusal says why a request was refused and when to try again.
type Refusal struct {
	// Reason is auth.ReasonRate or auth.ReasonConcurrency.
	Reason string
	// RetryAfter is when a retry may pass: the time to the next token for
	// the rate, one second for concurrency (a slot frees when a request
	// ends, which the limiter cannot foresee).
	RetryAfter time.Duration
	// Op is the limited operation, and Limit its limits then.
	Op    Op
	Limit Limit
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1:
// the Retry-After header's unit.
func (r *Refusal) RetryAfterSeconds() int {
	s := int(math.Ceil(r.RetryAfter.Seconds()))
	return max(s, 1)
}

// Error says what was exceeded, without the caller's key or key id.
func (r *Refusal) Error() string {
	if r.Reason == auth.ReasonConcurrency {
		return fmt.Sprintf("too many concurrent %s requests: at most %d in flight per key and endpoint; retry after %d s", r.Op, r.Limit.Concurrent, r.RetryAfterSeconds())
	}
	return fmt.Sprintf("too many %s requests: at most %d per %s per key and endpoint; retry after %d s", r.Op, r.Limit.Rate, formatPer(r.Limit.Per), r.RetryAfterSeconds())
}

type bucketKey struct {
	key, endpoint string
	op            Op
}

type bucket struct {
	tokens   float64 // as of last
	last     int64   // clock reading (ns) of the last refill
	inflight int
}

const (
	numShards = 16
	// evictSample is how many buckets are looked at to find one to evict
	// past the cap.
	evictSample = 8
	// overlongEndpoint stands for every endpoint id over
	// limits.RateEndpointID.
	overlongEndpoint = "\x00overlong"
)

type shard struct {
	mu        sync.Mutex
	buckets   map[bucketKey]*bucket
	lastSweep int64
}

// Limiter is the limits and the buckets. Its methods are safe for
// concurrent use.
type Limiter struct {
	limits   atomic.Pointer[Limits]
	seed     maphash.Seed
	shards   [numShards]shard
	perShard int
	start    time.Time
	// now is the clock in ns since start; tests replace it.
	now func() int64
}

// New returns a limiter with limits, tracking at most limits.RateBuckets
// buckets.
func New(l Limits) *Limiter {
	return newLimiter(l, limits.RateBuckets)
}

func newLimiter(l Limits, maxBuckets int) *Limiter {
	lim := &Limiter{seed: maphash.MakeSeed(), perShard: max(maxBuckets/numShards, 1), start: time.Now()}
	lim.now = func() int64 { return int64(time.Since(lim.start)) }
	for i := range lim.shards {
		lim.shards[i].buckets = make(map[bucketKey]*bucket)
	}
	lim.limits.Store(&l)
	return lim
}

// SetLimits replaces the limits (a reload). Buckets keep their state:
// tokens are capped to the new rate at their next use, and requests in
// flight still count against the new concurrency cap.
func (l *Limiter) SetLimits(n Limits) {
	l.limits.Store(&n)
}

// Limits returns the limits in force.
func (l *Limiter) Limits() Limits {
	return *l.limits.Load()
}

// Len is the number of buckets tracked.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

func noRelease() {}

// Allow asks for one request of op by the caller with key id key on
// endpoint. Allowed, it returns release, which the caller must call once
// when the request ends (it frees the concurrency slot), and a nil
// Refusal. Refused, release is nil.
func (l *Limiter) Allow(key, endpoint string, op Op) (release func(), refused *Refusal) {
	if op >= numOps {
		return noRelease, nil
	}
	lim := l.limits.Load()[op]
	if lim.Rate == 0 && lim.Concurrent == 0 {
		return noRelease, nil
	}
	if len(endpoint) > limits.RateEndpointID {
		endpoint = overlongEndpoint
	}
	k := bucketKey{key: key, endpoint: endpoint, op: op}
	s := &l.shards[l.shardOf(k)]
	now := l.now()
	s.mu.Lock()
	b, ok := s.buckets[k]
	if !ok {
		if len(s.buckets) >= l.perShard || now-s.lastSweep >= int64(l.sweepEvery()) {
			l.sweep(s, now)
		}
		if len(s.buckets) >= l.perShard && !l.evictOne(s) {
			s.mu.Unlock()
			return nil, &Refusal{Reason: auth.ReasonConcurrency, RetryAfter: time.Second, Op: op, Limit: lim}
		}
		b = &bucket{tokens: float64(lim.Rate), last: now}
		s.buckets[k] = b
	}
	if lim.Rate > 0 {
		b.refill(lim, now)
		if b.tokens < 1 {
			// To the millisecond: float noise must not turn 2 s into 2.000000001 s
			// (3 s in whole seconds).
			wait := max(time.Duration((1-b.tokens)/ratePerNs(lim)).Round(time.Millisecond), time.Millisecond)
			s.mu.Unlock()
			return nil, &Refusal{Reason: auth.ReasonRate, RetryAfter: wait, Op: op, Limit: lim}
		}
	} else {
		// No rate: the bucket stays full, should a reload bring one.
		b.tokens, b.last = math.Inf(1), now
	}
	if lim.Concurrent > 0 && b.inflight >= lim.Concurrent {
		s.mu.Unlock()
		return nil, &Refusal{Reason: auth.ReasonConcurrency, RetryAfter: time.Second, Op: op, Limit: lim}
	}
	if lim.Rate > 0 {
		b.tokens--
	}
	if lim.Concurrent == 0 {
		s.mu.Unlock()
		return noRelease, nil
	}
	b.inflight++
	s.mu.Unlock()
	released := false
	return func() {
		if released {
			return
		}
		released = true
		s.mu.Lock()
		b.inflight--
		s.mu.Unlock()
	}, nil
}

func (l *Limiter) shardOf(k bucketKey) int {
	return int(maphash.Comparable(l.seed, k) % numShards)
}

func ratePerNs(lim Limit) float64 {
	return float64(lim.Rate) / float64(lim.Per)
}

// refill adds the tokens earned since b.last, up to the bucket's size.
func (b *bucket) refill(lim Limit, now int64) {
	if el := now - b.last; el > 0 {
		b.tokens += float64(el) * ratePerNs(lim)
		b.last = now
	}
	b.tokens = min(b.tokens, float64(lim.Rate))
}

// sweepEvery is how often a shard's idle buckets are looked for: the
// longest period among the limits (a bucket idle that long is full).
func (l *Limiter) sweepEvery() time.Duration {
	d := Window
	for _, lim := range l.limits.Load() {
		d = max(d, lim.Per)
	}
	return d
}

// idle reports whether b is the same as no bucket: nothing in flight and,
// with a rate, full again.
func (l *Limiter) idle(k bucketKey, b *bucket, now int64) bool {
	if b.inflight > 0 {
		return false
	}
	lim := l.limits.Load()[k.op]
	if lim.Rate == 0 {
		return true
	}
	return b.tokens+float64(now-b.last)*ratePerNs(lim) >= float64(lim.Rate)
}

// sweep drops s's idle buckets. s.mu is held.
func (l *Limiter) sweep(s *shard, now int64) {
	s.lastSweep = now
	for k, b := range s.buckets {
		if l.idle(k, b, now) {
			delete(s.buckets, k)
		}
	}
}

// evictOne drops the least recently used of up to evictSample buckets
// with nothing in flight, among the first 4*evictSample it comes across
// (map iteration order is random, so this is a random sample), and reports
// whether it found one. s.mu is held.
func (l *Limiter) evictOne(s *shard) bool {
	var victim bucketKey
	var oldest int64
	candidates, looked := 0, 0
	for k, b := range s.buckets {
		looked++
		if b.inflight == 0 {
			if candidates == 0 || b.last < oldest {
				victim, oldest = k, b.last
			}
			candidates++
		}
		if candidates >= evictSample || looked >= 4*evictSample {
			break
		}
	}
	if candidates > 0 {
		delete(s.buckets, victim)
	}
	return candidates > 0
}
