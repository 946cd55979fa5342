package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// server is a real http.Server on 127.0.0.1 behind a Limiter. /hold and
// /w/hold block until release is closed; /healthz and /w/ are reserved.
type server struct {
	l       *Limiter
	addr    string
	release chan struct{}
	holding chan struct{}
}

func startServer(t *testing.T, max, reserve int) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{l: New(max, reserve), addr: ln.Addr().String(), release: make(chan struct{}), holding: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	hold := func(w http.ResponseWriter, r *http.Request) {
		s.holding <- struct{}{}
		<-s.release
	}
	mux.HandleFunc("/hold", hold)
	mux.HandleFunc("/w/hold", hold) // a reserved long-poll, as job-take

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	reserved := func(r *http.Request) bool { return r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/w/") }
	hs := &http.Server{Handler: s.l.Handler(mux, reserved), ConnState: s.l.ConnState, ConnContext: s.l.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(s.l.HTTPListener(ln))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		hs.Close()
	})
	return s
}

// conn is a raw client connection that sends requests by hand, so the
// test decides when a connection is new, idle or busy.
type conn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (s *server) dial(t *testing.T) *conn {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &conn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *conn) send(path string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		c.t.Fatalf("send %s: %v", path, err)
	}
}

// get sends a request and reads its answer: the status, or 0 with the
// error when the connection was closed instead.
func (c *conn) get(path string) (int, string, error) {
	c.t.Helper()
	c.send(path)
	return c.read()
}

func (c *conn) read() (int, string, error) {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

// closed reports whether the server closed the connection (within 5 s).
func (c *conn) closed() bool {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// waitStats polls until ok accepts the limiter's stats (5 s at most).
func (s *server) waitStats(t *testing.T, what string, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.l.Stats()
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitIdle polls until n connections are on the limiter's idle list (5 s
// at most).
func (s *server) waitIdle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.l.mu.Lock()
		got := s.l.idle.Len()
		s.l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleClosedOldestFirst(t *testing.T) {
	s := startServer(t, 2, 1)
	a, b := s.dial(t), s.dial(t)
	for i, c := range []*conn{a, b} {
		if code, _, err := c.get("/"); code != 200 {
			t.Fatalf("first requests: %d %v", code, err)
		}
		// The server marks a connection idle after it has written the
		// answer, so the client can read it first: wait, or b may go
		// idle before a under load and "oldest" would be b.
		s.waitIdle(t, i+1)
	}
	s.waitStats(t, "two idle", func(st Stats) bool { return st.Open == 2 })
	c := s.dial(t)
	if code, body, err := c.get("/"); code != 200 || body != "ok" {
		t.Fatalf("third connection: %d %q %v; want 200 (an idle one closed to make room)", code, body, err)
	}
	if !a.closed() {
		t.Error("the oldest idle connection was not closed")
	}
	if code, _, err := b.get("/"); code != 200 {
		t.Errorf("the newer idle connection: %d %v; want it kept", code, err)
	}
	if st := s.l.Stats(); st.Evicted != 1 || st.Open != 2 {
		t.Errorf("stats %+v, want 1 evicted and 2 open", st)
	}
}

func TestReserveServesReservedRoutesOnly(t *testing.T) {
	s := startServer(t, 2, 1)
	for i := 0; i < 2; i++ {
		s.dial(t).send("/hold")
		<-s.holding
	}
	c := s.dial(t)
	code, body, err := c.get("/other")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "--max-connections") {
		t.Fatalf("non-reserved route on a reserve connection: %d %q %v; want 503 naming --max-connections", code, body, err)
	}
	if !c.closed() {
		t.Error("the reserve connection was not closed after its 503")
	}
	s.waitStats(t, "503 connection released", func(st Stats) bool { return st.Open == 2 })
	p := s.dial(t)
	for i := 0; i < 3; i++ { // keep-alive: the reserve connection goes on serving probes
		if code, _, err := p.get("/healthz"); code != 200 {
			t.Fatalf("probe %d on a reserve connection: %d %v", i, code, err)
		}
	}
	if st := s.l.Stats(); st.Rejected != 1 || st.Open != 3 {
		t.Errorf("stats %+v, want 1 rejected and 3 open", st)
	}
}

func TestReservePromotedWhenRoomReturns(t *testing.T) {
	s := startServer(t, 1, 1)
	h := s.dial(t)
	h.send("/hold")
	<-s.holding
	r := s.dial(t)
	if code, _, _ := r.get("/healthz"); code != 200 {
		t.Fatalf("probe on the reserve: %d", code)
	}
	close(s.release)
	if code, _, err := h.read(); code != 200 {
		t.Fatalf("held request: %d %v", code, err)
	}
	h.nc.Close()
	s.waitStats(t, "holder gone", func(st Stats) bool { return st.Open == 1 })
	if code, body, err := r.get("/other"); code != 200 || body != "ok" {
		t.Errorf("reserve connection after room returned: %d %q %v; want it served as any other", code, body, err)
	}
}

func TestFullClosesSilentThenRefuses(t *testing.T) {
	s := startServer(t, 1, 1)
	silent1, silent2 := s.dial(t), s.dial(t)
	s.waitStats(t, "two silent", func(st Stats) bool { return st.Open == 2 })
	c := s.dial(t)
	if code, _, err := c.get("/healthz"); code != 200 {
		t.Fatalf("probe with every slot silent: %d %v; want the oldest silent one closed for it", code, err)
	}
	if !silent1.closed() {
		t.Error("the oldest silent connection was not closed")
	}
	_ = silent2

	// Now every slot is busy: the next connection is refused.
	s2 := startServer(t, 1, 1)
	for _, p := range []string{"/hold", "/w/hold"} {
		s2.dial(t).send(p)
		<-s2.holding
	}
	x := s2.dial(t)
	if !x.closed() {
		t.Fatal("a connection past Max+Reserve with every slot busy was not closed")
	}
	if st := s2.l.Stats(); st.Refused != 1 || st.Open != 2 {
		t.Errorf("stats %+v, want 1 refused, 2 open", st)
	}
}

func TestPlainListenerCountsWithoutReserve(t *testing.T) {
	l := New(2, 5)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pl := l.Listener(ln)
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	got := []net.Conn{<-accepted, <-accepted}
	// The third is refused: closed by the listener, never returned.
	clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[2].Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("third connection: read %v, want it closed", err)
	}
	if st := l.Stats(); st.Open != 2 || st.Refused != 1 {
		t.Errorf("stats %+v, want 2 open, 1 refused", st)
	}
	got[0].Close()
	got[0].Close() // counted once
	if st := l.Stats(); st.Open != 1 {
		t.Errorf("after a close: %+v, want 1 open", st)
	}
}
