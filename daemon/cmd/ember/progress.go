package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// redrawEvery bounds how often the progress bar is redrawn: 10 times a
// second at most.
const redrawEvery = 100 * time.Millisecond

// progressBar shows an upload on a terminal: one line redrawn in place with
// \r, from the bytes read through Reader. Draw it only when stderr is a
// terminal (app.showProgress); elsewhere nothing is drawn at all.
type progressBar struct {
	w     io.Writer
	label string
	total int64 // -1: unknown
	now   func() time.Time

	mu       sync.Mutex
	start    time.Time
	lastDraw time.Time
	sent     int64
	sentAt   time.Time // when the last byte was read
	drawn    bool
	finished bool
}

func newProgressBar(w io.Writer, label string, total int64, now func() time.Time) *progressBar {
	if now == nil {
		now = time.Now
	}
	t := now()
	return &progressBar{w: w, label: label, total: total, now: now, start: t, sentAt: t}
}

// Reader wraps r so that what is read through it moves the bar.
func (p *progressBar) Reader(r io.Reader) io.Reader { return &progressReader{r: r, p: p} }

type progressReader struct {
	r io.Reader
	p *progressBar
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 {
		pr.p.add(int64(n))
	}
	return n, err
}

// add counts n more bytes sent and redraws when the last draw is at least
// redrawEvery old, or the upload is complete (the daemon then imports,
// which the bar says).
func (p *progressBar) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return // the transport may still read after the request ended
	}
	t := p.now()
	p.sent += n
	p.sentAt = t
	done := p.total > 0 && p.sent >= p.total
	if !done && p.drawn && t.Sub(p.lastDraw) < redrawEvery {
		return
	}
	p.lastDraw = t
	line := renderProgress(p.label, p.sent, p.total, t.Sub(p.start))
	if done {
		line += "  importing..."
	}
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	p.drawn = true
}

// finish ends the bar's line: redrawn one last time with the final count
// (and without "importing...") on success, so that the error of a failure
// starts on a line of its own either way.
func (p *progressBar) finish(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = true
	if !p.drawn {
		return
	}
	if ok {
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", renderProgress(p.label, p.sent, p.total, p.sentAt.Sub(p.start)))
		return
	}
	fmt.Fprintln(p.w)
}

// barWidth is the bar's width in characters, between the brackets.
const barWidth = 24

// maxLabel bounds the label so that the line fits 80 columns.
const maxLabel = 20

// renderProgress is the bar's text for sent of total bytes (total <= 0:
// unknown) after elapsed: the label, a bar and the percentage when the
// total is known, bytes sent (of total), and the mean rate.
//
//	Uploading echo.tar  [============>           ]  50%  2 MiB / 4 MiB  1 MiB/s
func renderProgress(label string, sent, total int64, elapsed time.Duration) string {
	if r := []rune(label); len(r) > maxLabel {
		label = string(r[:maxLabel-3]) + "..."
	}
	var b strings.Builder
	b.WriteString("Uploading " + label + "  ")
	if total > 0 {
		frac := min(max(float64(sent)/float64(total), 0), 1)
		fill := int(frac * barWidth)
		b.WriteString("[" + strings.Repeat("=", fill))
		if fill < barWidth {
			b.WriteString(">" + strings.Repeat(" ", barWidth-fill-1))
		}
		fmt.Fprintf(&b, "] %3d%%  %s / %s", int(frac*100), formatBytes(sent), formatBytes(total))
	} else {
		b.WriteString(formatBytes(sent))
	}
	if r := rate(sent, elapsed); r != "" {
		b.WriteString("  " + r)
	}
	return b.String()
}

// rate is bytes per second over d, or "" when d is too short to say.
func rate(n int64, d time.Duration) string {
	if d < time.Millisecond {
		return ""
	}
	return formatBytes(int64(float64(n)/d.Seconds())) + "/s"
}
