package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/store"
)

// TestOutboxRetries: a webhook is posted until it succeeds or has used up
// its attempts, and it leaves the store only then.
func TestOutboxRetries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codes []int // answers in order; 200 once they run out
		posts int   // POSTs expected in all
	}{
		{"first attempt succeeds", nil, 1},
		{"second attempt succeeds", []int{500}, 2},
		{"third attempt succeeds", []int{500, 503}, 3},
		{"gives up after three", []int{500, 500, 500, 500}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var bodies []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				buf := make([]byte, 64)
				n, _ := r.Body.Read(buf)
				mu.Lock()
				i := len(bodies)
				bodies = append(bodies, string(buf[:n]))
				mu.Unlock()
				if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
					t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
				}
				if i < len(tc.codes) {
					w.WriteHeader(tc.codes[i])
				}
			}))
			defer srv.Close()
			st, err := store.OpenBadger(store.BadgerOptions{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			d := &store.Delivery{JobID: "j1", URL: srv.URL, Body: []byte(`{"id":"j1"}`)}
			b := st.NewBatch()
			if err := b.PutDelivery(d); err != nil {
				t.Fatal(err)
			}
			if err := st.Commit(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			o := NewOutbox(Config{Store: st, Client: srv.Client(), Attempts: 3,
				RetryDelay: func() time.Duration { return 10 * time.Millisecond }, Logger: slog.New(slog.DiscardHandler)})
			if err := o.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { o.Run(ctx); close(done) }()
			deadline := time.Now().Add(5 * time.Second)
			for {
				ds, err := st.Deliveries(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(ds) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("delivery still pending after 5 s: %+v", ds)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // room for a wrong extra attempt
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != tc.posts {
				t.Errorf("%d POSTs, want %d", len(bodies), tc.posts)
			}
			for _, got := range bodies {
				if got != `{"id":"j1"}` {
					t.Errorf("body %q", got)
				}
			}
		})
	}
}
