package tests

// End-to-end tests of webhook delivery (docs/compat.md, Webhooks): one POST
// of the status object when a job ends, retried up to 3 attempts in all,
// and kept across a daemon restart.

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"
)

// whHit is one POST a receiver got.
type whHit struct {
	at          time.Time
	body        []byte
	contentType string
	method      string
}

// whReceiver records webhook posts and answers each with the next code of
// codes (200 once they run out).
type whReceiver struct {
	mu    sync.Mutex
	hits  []whHit
	codes []int
}

func (r *whReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.hits)
	r.hits = append(r.hits, whHit{at: time.Now(), body: b, contentType: req.Header.Get("Content-Type"), method: req.Method})
	code := 200
	if n < len(r.codes) {
		code = r.codes[n]
	}
	r.mu.Unlock()
	w.WriteHeader(code)
}

func (r *whReceiver) snapshot() []whHit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]whHit(nil), r.hits...)
}

// waitHits waits until at least n posts arrived, within timeout.
func (r *whReceiver) waitHits(t testing.TB, n int, timeout time.Duration) []whHit {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if h := r.snapshot(); len(h) >= n {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	h := r.snapshot()
	t.Fatalf("webhook receiver got %d posts within %v, want %d", len(h), timeout, n)
	return nil
}

func whDecode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("webhook body is not a JSON object: %v: %q", err, b)
	}
	return m
}

// TestWebhook_Retries: a receiver that fails twice gets exactly three posts,
// a retry delay apart, each carrying the job's status object.
func TestWebhook_Retries(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t) // --webhook-retry-delay 300ms
	rcv := &whReceiver{codes: []int{500, 500, 200}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()

	ep := d.CreateEndpoint("webhook", nil)
	input := map[string]any{"hook": "me"}
	id := d.Submit(ep, map[string]any{"input": input, "webhook": srv.URL + "/hook?token=abc"})
	d.WaitStatus(ep, id, 20*time.Second, "COMPLETED")

	hits := rcv.waitHits(t, 3, 15*time.Second)
	// No fourth attempt after the success: give the outbox time to misbehave.
	time.Sleep(1200 * time.Millisecond)
	if hits = rcv.snapshot(); len(hits) != 3 {
		t.Fatalf("receiver got %d posts, want exactly 3 (500, 500, 200)", len(hits))
	}
	_, status := caDo(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, "Bearer "+d.Key)
	want := whDecode(t, status)
	for i, h := range hits {
		if h.method != "POST" {
			t.Errorf("attempt %d used %s", i+1, h.method)
		}
		if h.contentType != "application/json" {
			t.Errorf("attempt %d Content-Type %q", i+1, h.contentType)
		}
		if got := whDecode(t, h.body); !reflect.DeepEqual(got, want) {
			t.Errorf("attempt %d body %s, want the /status object %s", i+1, h.body, status)
		}
		if i > 0 {
			if gap := h.at.Sub(hits[i-1].at); gap < 250*time.Millisecond {
				t.Errorf("attempt %d came %v after the previous one, want >= the 300 ms retry delay", i+1, gap)
			}
		}
	}
	if want["status"] != "COMPLETED" || want["id"] != id {
		t.Errorf("/status %v", want)
	}

	// A failed job is reported too, once, to a receiver that accepts it.
	ok := &whReceiver{}
	srv2 := httptest.NewServer(ok)
	defer srv2.Close()
	fid := d.Submit(ep, map[string]any{"input": map[string]any{"fail": "nope"}, "webhook": srv2.URL})
	d.WaitStatus(ep, fid, 20*time.Second, "FAILED")
	h := ok.waitHits(t, 1, 10*time.Second)
	time.Sleep(700 * time.Millisecond)
	if h = ok.snapshot(); len(h) != 1 {
		t.Fatalf("receiver answering 200 got %d posts, want 1", len(h))
	}
	if m := whDecode(t, h[0].body); m["id"] != fid || m["status"] != "FAILED" || m["error"] != "nope" {
		t.Errorf("FAILED webhook body %s", h[0].body)
	}
	// A job without a webhook posts nothing anywhere (nothing to check but
	// that the receivers stay quiet).
	nid := d.Submit(ep, map[string]any{"input": map[string]any{}})
	d.WaitStatus(ep, nid, 20*time.Second, "COMPLETED")
	time.Sleep(400 * time.Millisecond)
	if n1, n2 := len(rcv.snapshot()), len(ok.snapshot()); n1 != 3 || n2 != 1 {
		t.Errorf("receivers got %d and %d posts after a job without webhook, want 3 and 1", n1, n2)
	}
}

// TestWebhook_SurvivesRestart: the receiver is down when the job ends;
// emberd is stopped (SIGTERM) and started again; the receiver then comes up
// on the same port and still gets the delivery.
func TestWebhook_SurvivesRestart(t *testing.T) {
	t.Parallel()
	// A long retry delay keeps the attempts from running out before the
	// receiver is up.
	d := StartDaemon(t, "--webhook-retry-delay", "4s")
	addr := freePort(t) // nothing listens here yet: connection refused

	ep := d.CreateEndpoint("webhook-durable", nil)
	id := d.Submit(ep, map[string]any{"input": map[string]any{"durable": true}, "webhook": "http://" + addr + "/late"})
	final := d.WaitStatus(ep, id, 20*time.Second, "COMPLETED")

	d.Stop()
	d.Restart()

	rcv := &whReceiver{}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("receiver cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(rcv)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	hits := rcv.waitHits(t, 1, 20*time.Second)
	got := whDecode(t, hits[0].body)
	if got["id"] != id || got["status"] != "COMPLETED" {
		t.Fatalf("delivery after restart: %s", hits[0].body)
	}
	if !reflect.DeepEqual(got, final) {
		t.Errorf("delivered body %v, want the job's status object %v", got, final)
	}
	_, status := caDo(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, "Bearer "+d.Key)
	if after := whDecode(t, status); !reflect.DeepEqual(after, got) {
		t.Errorf("/status after restart %v differs from the delivered body %v", after, got)
	}
	// Delivered once; the answer 200 ends it.
	time.Sleep(1 * time.Second)
	if n := len(rcv.snapshot()); n != 1 {
		t.Errorf("receiver got %d posts, want 1", n)
	}
}
