package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emberhq/ember/daemon/client"
)

// jobPoll is how long each status-sync of `ember job run` is held while it
// shows the job's state: short, so that IN_QUEUE turning into IN_PROGRESS
// shows within about a second. The daemon answers at once when the job
// ends, so this costs no latency.
const jobPoll = time.Second

// jobWatch shows a waiting job's id, state and times on stderr: on a
// terminal one live line redrawn every second, otherwise a plain line per
// state change. Its methods are safe for concurrent use (the redraw runs
// in its own goroutine, owned by start and stop).
type jobWatch struct {
	w    io.Writer
	live bool
	now  func() time.Time

	mu        sync.Mutex
	st        *client.JobStatus
	submitted time.Time // when the job was queued
	started   time.Time // when it was first seen IN_PROGRESS
	waited    time.Duration
	drawn     bool // a live line is on the screen

	done chan struct{}
	wg   sync.WaitGroup
}

func newJobWatch(w io.Writer, live bool, now func() time.Time) *jobWatch {
	return &jobWatch{w: w, live: live, now: now, submitted: now()}
}

// update records a status and shows it when it is a change.
func (p *jobWatch) update(st *client.JobStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.st == nil || p.st.Status != st.Status
	p.st = st
	if st.Terminal() {
		return // the output or the error says how it ended
	}
	if changed && st.Status == client.StatusInProgress {
		p.started = p.now()
		p.waited = p.started.Sub(p.submitted)
		if st.DelayTime > 0 {
			p.waited = time.Duration(st.DelayTime) * time.Millisecond
		}
	}
	if changed && st.Status == client.StatusInQueue {
		p.started = time.Time{} // taken back from its worker: waiting again
	}
	if p.live {
		p.drawLocked()
	} else if changed {
		fmt.Fprintln(p.w, p.lineLocked())
	}
}

// start redraws the live line every second, so that the times move while
// the job waits; stop ends it.
func (p *jobWatch) start() {
	if !p.live {
		return
	}
	p.done = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.mu.Lock()
				p.drawLocked()
				p.mu.Unlock()
			}
		}
	}()
}

// stop ends the redraws and clears the live line, so that what follows
// (the output, an error) starts on a clean line.
func (p *jobWatch) stop() {
	if p.done != nil {
		close(p.done)
		p.wg.Wait()
		p.done = nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// summary is the last state and times, for the message on an interrupt.
func (p *jobWatch) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st == nil {
		return ""
	}
	return p.stateLocked()
}

func (p *jobWatch) drawLocked() {
	if p.st == nil || p.st.Terminal() {
		return
	}
	fmt.Fprint(p.w, "\r\033[K"+p.lineLocked())
	p.drawn = true
}

func (p *jobWatch) lineLocked() string {
	return fmt.Sprintf("job %s: %s", p.st.ID, p.stateLocked())
}

// stateLocked is e.g. "IN_QUEUE, waiting 12s" or "IN_PROGRESS on worker
// w-1a2b, waited 12s, running 3s".
func (p *jobWatch) stateLocked() string {
	now := p.now()
	switch {
	case p.st.Status == client.StatusInProgress && !p.started.IsZero():
		on := ""
		if p.st.WorkerID != "" {
			on = " on worker " + p.st.WorkerID
		}
		return fmt.Sprintf("%s%s, waited %s, running %s", p.st.Status, on, seconds(p.waited), seconds(now.Sub(p.started)))
	case p.st.Status == client.StatusInQueue:
		return fmt.Sprintf("%s, waiting %s", p.st.Status, seconds(now.Sub(p.submitted)))
	}
	return p.st.Status
}

// seconds rounds d to whole seconds for people.
func seconds(d time.Duration) string {
	return max(d, 0).Round(time.Second).String()
}
