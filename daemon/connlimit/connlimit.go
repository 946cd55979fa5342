// Package connlimit caps emberd's concurrent client connections, keeping a
// reserve for the worker API and the health probes.
//
// A Limiter counts the connections of the listeners it wraps. Up to Max
// they are served as usual. Past Max, an accept first closes the oldest
// idle keep-alive connection (one waiting between requests: its client
// reconnects when it needs to, as it must after an idle timeout anyway).
// When none is idle, the new connection is admitted into the reserve, up
// to Reserve more: such a connection serves only reserved routes (the
// worker API and /healthz, /readyz; Handler checks each request) and
// answers anything else 503 and closes. At Max+Reserve, an accept closes
// the oldest connection that has not sent a request yet; when there is
// none either, the new connection is closed at once.
//
// One listener for clients and workers, rather than a listener of their
// own for workers, because workers are handed one base URL (the RunPod
// SDKs reach both APIs through it) and emberd cannot tell a worker's
// connection from a client's before its first request: the reserve is
// decided per connection at accept and checked per request.
//
// Connections are tracked through http.Server's ConnState hook (idle or
// not) and ConnContext (which connection a request came on). A listener
// made by Listener rather than HTTPListener (gRPC) only counts against
// Max: its connections are never idle-closed here and get no reserve.
package connlimit

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// Limiter counts connections against Max, plus Reserve for reserved
// routes. Its zero value is not usable; call New.
type Limiter struct {
	max, reserve int

	mu   sync.Mutex
	open int
	// idle holds the HTTP connections between requests, oldest first;
	// fresh those that have not begun a request yet, oldest first.
	idle, fresh list.List
	// evicted counts connections closed to make room; refused those
	// closed at accept; rejected the requests answered 503 on a reserve
	// connection.
	evicted, refused, rejected int64
}

// New returns a limiter for max connections and reserve more. max must be
// positive; a negative reserve is taken as 0.
func New(max, reserve int) *Limiter {
	if max < 1 {
		max = 1
	}
	return &Limiter{max: max, reserve: maxInt(reserve, 0)}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// Stats is a snapshot of a Limiter.
type Stats struct {
	// Open is the number of connections counted now.
	Open int `json:"open"`
	// Max and Reserve are the limiter's settings.
	Max     int `json:"max"`
	Reserve int `json:"reserve"`
	// Evicted are idle or silent connections closed to make room, Refused
	// connections closed at accept, Rejected requests answered 503 on a
	// reserve connection; all since start.
	Evicted  int64 `json:"evicted"`
	Refused  int64 `json:"refused"`
	Rejected int64 `json:"rejected"`
}

// Stats returns the current counts.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Open: l.open, Max: l.max, Reserve: l.reserve, Evicted: l.evicted, Refused: l.refused, Rejected: l.rejected}
}

// Conn is a connection counted by a Limiter.
type Conn struct {
	net.Conn
	l *Limiter
	// http: tracked through ConnState (HTTPListener). Guarded by l.mu from
	// here on.
	http bool
	// reserve: admitted past Max; served reserved routes only.
	reserve bool
	// elem is the connection's place in l.idle or l.fresh, nil when it is
	// in neither (serving a request, or not HTTP).
	elem  *list.Element
	inIdl bool
	// released: no longer counted (closed, or evicted).
	released bool
}

// Close stops counting the connection and closes it.
func (c *Conn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// releaseLocked stops counting c; l.mu is held.
func (l *Limiter) releaseLocked(c *Conn) {
	if c.released {
		return
	}
	c.released = true
	l.open--
	l.unlistLocked(c)
}

func (l *Limiter) unlistLocked(c *Conn) {
	if c.elem == nil {
		return
	}
	if c.inIdl {
		l.idle.Remove(c.elem)
	} else {
		l.fresh.Remove(c.elem)
	}
	c.elem = nil
}

// evictLocked takes the oldest connection off from (l.idle or l.fresh),
// stops counting it and returns it to be closed once l.mu is released;
// nil when from is empty.
func (l *Limiter) evictLocked(from *list.List) *Conn {
	e := from.Front()
	if e == nil {
		return nil
	}
	c := e.Value.(*Conn)
	l.releaseLocked(c)
	l.evicted++
	return c
}

// admit decides on a new connection: counted (perhaps in the reserve), or
// nil when it must be closed. Connections evicted to make room are closed
// here, outside the lock.
func (l *Limiter) admit(nc net.Conn, isHTTP bool) *Conn {
	var victims []*Conn
	defer func() {
		for _, v := range victims {
			v.Conn.Close()
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max {
		if v := l.evictLocked(&l.idle); v != nil {
			victims = append(victims, v)
		}
	}
	limit := l.max
	if isHTTP {
		limit += l.reserve
	}
	if l.open >= limit && isHTTP {
		// Every slot is busy or silent: a silent one goes first. A
		// request that has begun is never cut.
		if v := l.evictLocked(&l.fresh); v != nil {
			victims = append(victims, v)
		}
	}
	if l.open >= limit {
		l.refused++
		return nil
	}
	c := &Conn{Conn: nc, l: l, http: isHTTP, reserve: l.open >= l.max}
	l.open++
	if isHTTP {
		c.elem = l.fresh.PushBack(c)
	}
	return c
}

// ConnState is http.Server.ConnState for servers whose listeners include
// an HTTPListener; connections of other listeners are ignored.
func (l *Limiter) ConnState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*Conn)
	if !ok || c.l != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	switch st {
	case http.StateActive:
		l.unlistLocked(c)
	case http.StateIdle:
		l.unlistLocked(c)
		c.elem = l.idle.PushBack(c)
		c.inIdl = true
	case http.StateHijacked, http.StateClosed:
		l.releaseLocked(c)
	}
}

type connKey struct{}

// ConnContext is http.Server.ConnContext: it lets Handler find the
// connection a request came on.
func (l *Limiter) ConnContext(ctx context.Context, nc net.Conn) context.Context {
	if c, ok := nc.(*Conn); ok && c.l == l {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// onReserve reports whether c serves reserved routes only. A reserve
// connection that finds the count back within Max is served as any other
// from then on.
func (l *Limiter) onReserve(c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.reserve && l.open <= l.max {
		c.reserve = false
	}
	if c.reserve {
		l.rejected++ // counted here: the caller answers 503 unless reserved
	}
	return c.reserve
}

// Handler serves next, except that a request on a reserve connection to a
// route reserved does not accept is answered 503 with a JSON error, and
// its connection is closed.
func (l *Limiter) Handler(next http.Handler, reserved func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*Conn)
		if c == nil || reserved(r) || !l.onReserve(c) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"emberd has ` + strconv.Itoa(l.max) + ` client connections open (--max-connections): this connection is held for the worker API and the health probes; retry on a new connection"}`))
	})
}

// HTTPListener wraps ln so that its connections are counted, idle ones
// closed first, and the reserve used (the server must use ConnState,
// ConnContext and Handler).
func (l *Limiter) HTTPListener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l, http: true}
}

// Listener wraps ln so that its connections are counted against Max, with
// no reserve and no idle tracking (gRPC).
func (l *Limiter) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l}
}

type listener struct {
	net.Listener
	l    *Limiter
	http bool
}

// Accept returns the next connection the limiter admits, closing those it
// refuses.
func (ln *listener) Accept() (net.Conn, error) {
	for {
		nc, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := ln.l.admit(nc, ln.http); c != nil {
			return c, nil
		}
		nc.Close()
	}
}
