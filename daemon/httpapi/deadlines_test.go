package httpapi

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestExtendDeadlines: behind a server whose read and write timeouts are
// short, a handler that holds its request longer answers only when it
// pushed its deadlines out; without, the client gets no answer. The
// request is never canceled by the deadlines: net/http clears the read
// deadline once the body is read.
func TestExtendDeadlines(t *testing.T) {
	const timeout, hold = 100 * time.Millisecond, 400 * time.Millisecond
	for _, tc := range []struct {
		name string
		kind holdKind
		want bool // an answer arrives
	}{
		{"no hold", holdNone, false},
		{"worker poll", holdWorkerPoll, true},
		{"wait", holdWait, true},
		{"forever", holdForever, true},
	} {
		canceled := make(chan bool, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			extendDeadlines(w, r, tc.kind)
			select {
			case <-time.After(hold):
				canceled <- false
			case <-r.Context().Done():
				canceled <- true
			}
			io.WriteString(w, "held")
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadTimeout: timeout, WriteTimeout: timeout}
		go srv.Serve(ln)
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + ln.Addr().String() + "/")
		got := false
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = string(b) == "held"
		}
		if got != tc.want {
			t.Errorf("%s: answered %v (err %v), want %v", tc.name, got, err, tc.want)
		}
		if <-canceled {
			t.Errorf("%s: request canceled while held", tc.name)
		}
		srv.Close()
	}
}
