package httpapi

import (
	"net/http"
	"time"
)

// Connection timeouts. emberd's http.Server gives every request
// ReadTimeout to arrive whole and WriteTimeout to be answered, and closes
// a keep-alive connection idle for IdleTimeout. The routes that hold a
// request on purpose (long-polls, waits, streams) push their own
// connection's deadlines out with http.ResponseController, so that a
// slow or stalled client elsewhere cannot hold a connection for long
// while the long-polls keep working. What would cut a long-poll is the
// write deadline, set when its headers were read: its answer could not be
// written. The read deadline covers the body only (net/http clears it
// once the body is read, when it starts watching the connection for a
// client that goes away), so it is pushed out only for a request with a
// body, such as a runsync.
const (
	// ReadHeaderTimeout bounds the request line and headers.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds a whole request, headers and body (a 20 MiB
	// body needs 350 KB/s).
	ReadTimeout = time.Minute
	// WriteTimeout bounds the time from the end of the headers to the
	// end of the answer.
	WriteTimeout = time.Minute
	// IdleTimeout closes a keep-alive connection with no request. It is
	// above the 90 s after which Go's http.Client drops an idle
	// connection itself, so that Go clients close first.
	IdleTimeout = 2 * time.Minute

	// workerPollHold covers job-take and job-stop: --take-hold and
	// --stop-hold are below the worker SDK's 90 s request timeout.
	workerPollHold = 90 * time.Second
	// waitHold covers ?wait= (runsync, status-sync, stream: at most
	// 300 s), the /v1 twins of those, and a worker stop's drain.
	waitHold = 300 * time.Second
	// holdSlack is added to a hold for the body and the answer.
	holdSlack = 30 * time.Second
)

// holdKind is how long a route may hold its request.
type holdKind int

const (
	holdNone       holdKind = iota // ReadTimeout and WriteTimeout apply
	holdWorkerPoll                 // up to workerPollHold
	holdWait                       // up to waitHold
	// holdForever: `ember logs -f`, the OpenAI route (held until its job
	// ends, or streamed), image uploads, imports and pulls. The deadlines
	// are cleared: the request ends when it is done or when the client
	// goes away (net/http's background read sees the close, and TCP
	// keep-alive probes find a peer that vanished).
	holdForever
)

// extendDeadlines pushes the connection's write deadline, and its read
// deadline when r has a body still to come, out for a route that holds
// its request. Connections that cannot set deadlines (none in emberd;
// test recorders) are left alone.
func extendDeadlines(w http.ResponseWriter, r *http.Request, h holdKind) {
	var until time.Time // zero: no deadline
	switch h {
	case holdNone:
		return
	case holdWorkerPoll:
		until = time.Now().Add(workerPollHold + holdSlack)
	case holdWait:
		until = time.Now().Add(waitHold + holdSlack)
	}
	rc := http.NewResponseController(w)
	if r.Body != nil && r.Body != http.NoBody {
		_ = rc.SetReadDeadline(until)
	}
	_ = rc.SetWriteDeadline(until)
}
