package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var (
	floodFor      = flag.Duration("flood", 30*time.Second, "stream part: how long the example worker floods job-stream")
	floodBaseline = flag.String("stream-baseline", "", "stream part: another emberd binary (e.g. built from main) flooded the same way first, as the same-run baseline")
	floodReadBase = flag.Bool("stream-read-baseline", false, "stream part: also read the baseline's flooded stream with one /stream call (an emberd without pages may answer gigabytes at once)")
)

// floodChunkSize is the size of each flooded chunk, as in the finding of
// issue 9 (60 KB).
const floodChunkSize = 60000

// floodResult is what one flood measured.
type floodResult struct {
	rssBefore, rssPeak  float64 // MB
	anonPeak            float64 // MB: the peak's anonymous part (heap), not mapped files
	jobs, failedAtCap   int
	read                bool
	readBytes           int
	readMs, rssReadPeak float64
	rejected            int64 // ember_stream_chunks_rejected_total, all reasons
}

// streamPart floods job-stream with the example worker for -flood while no
// client reads, then reads one job's stream once, on this emberd and, with
// -stream-baseline, on another build first.
func streamPart(tmp string) error {
	var base *floodResult
	if *floodBaseline != "" {
		bin, err := filepath.Abs(*floodBaseline)
		if err != nil {
			return err
		}
		if base, err = flood(filepath.Join(tmp, "flood-baseline"), bin, *floodReadBase); err != nil {
			return fmt.Errorf("baseline flood: %w", err)
		}
	}
	ours, err := flood(filepath.Join(tmp, "flood"), *emberdBin, true)
	if err != nil {
		return err
	}
	fmt.Printf("job-stream flood: %s, %d-byte chunks, one example worker, nobody reading /stream\n", *floodFor, floodChunkSize)
	fmt.Printf("%-52s %14s %14s\n", "figure", "ember", "baseline")
	row := func(name string, f func(r *floodResult) string) {
		b := "-"
		if base != nil {
			b = f(base)
		}
		fmt.Printf("%-52s %14s %14s\n", name, f(ours), b)
	}
	row("emberd RSS before the flood", func(r *floodResult) string { return fmt.Sprintf("%.0f MB", r.rssBefore) })
	row("emberd RSS peak during the flood", func(r *floodResult) string { return fmt.Sprintf("%.0f MB", r.rssPeak) })
	row("  of which anonymous (heap; the rest is mapped files)", func(r *floodResult) string { return fmt.Sprintf("%.0f MB", r.anonPeak) })
	row("flood jobs (failed at the unread cap)", func(r *floodResult) string { return fmt.Sprintf("%d (%d)", r.jobs, r.failedAtCap) })
	row("chunk posts refused (late or over the cap)", func(r *floodResult) string { return strconv.FormatInt(r.rejected, 10) })
	row("one /stream read of the last job: bytes", func(r *floodResult) string {
		if !r.read {
			return "not read"
		}
		return fmt.Sprintf("%.1f MB", float64(r.readBytes)/1e6)
	})
	row("  its time", func(r *floodResult) string {
		if !r.read {
			return "-"
		}
		return fmt.Sprintf("%.0f ms", r.readMs)
	})
	row("  emberd RSS peak during it", func(r *floodResult) string {
		if !r.read {
			return "-"
		}
		return fmt.Sprintf("%.0f MB", r.rssReadPeak)
	})
	return nil
}

// flood runs one emberd binary through the flood.
func flood(dir, bin string, read bool) (*floodResult, error) {
	d, err := startEmberdBin(bin, dir, "process")
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ep, err := d.createEndpoint(map[string]any{"name": "flood", "command": []string{*workerBin}, "gpuCount": 0,
		"workersMin": 1, "workersMax": 1, "idleTimeout": 3600})
	if err != nil {
		return nil, err
	}
	if err := d.waitIdleWorkers(ep, 1, 60*time.Second); err != nil {
		return nil, err
	}
	pid := d.cmd.Process.Pid
	r := &floodResult{rssBefore: rssMB(pid), read: read}
	var peak, anonPeak atomic.Int64 // kB
	sample := func() {
		if kb := int64(rssMB(pid) * 1024); kb > peak.Load() {
			peak.Store(kb)
		}
		if kb := int64(statusMB(pid, "RssAnon:") * 1024); kb > anonPeak.Load() {
			anonPeak.Store(kb)
		}
	}
	body := fmt.Sprintf(`{"input":{"stream_flood":{"chunks":100000000,"bytes":%d}}}`, floodChunkSize)
	end := time.Now().Add(*floodFor)
	var last string
	for time.Now().Before(end) {
		var v struct{ ID string }
		if err := d.post("/v2/"+ep+"/run", body, &v); err != nil {
			return nil, err
		}
		last = v.ID
		r.jobs++
		for {
			sample()
			var st struct{ Status, Error string }
			if err := d.do("GET", "/v2/"+ep+"/status/"+last, "", &st); err != nil {
				return nil, err
			}
			if st.Status == "FAILED" || st.Status == "COMPLETED" || st.Status == "CANCELLED" || st.Status == "TIMED_OUT" {
				if strings.Contains(st.Error, "unread limit") {
					r.failedAtCap++
				}
				break
			}
			if time.Now().After(end) {
				if err := d.post("/v2/"+ep+"/cancel/"+last, "", nil); err != nil {
					return nil, err
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r.rssPeak = float64(peak.Load()) / 1024
	r.anonPeak = float64(anonPeak.Load()) / 1024
	if read {
		peak.Store(0)
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				sample()
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		t0 := time.Now()
		n, err := d.readAll("/v2/" + ep + "/stream/" + last)
		r.readMs = ms(time.Since(t0))
		close(stop)
		<-sampled
		if err != nil {
			return nil, err
		}
		r.readBytes = n
		r.rssReadPeak = float64(peak.Load()) / 1024
	}
	r.rejected, err = d.rejectedChunks()
	return r, err
}

// readAll GETs path and counts the answer's bytes without keeping them.
func (d *daemon) readAll(path string) (int, error) {
	req, err := http.NewRequest("GET", d.url+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return int(n), err
}

// rejectedChunks sums ember_stream_chunks_rejected_total (0 where emberd
// does not export it).
func (d *daemon) rejectedChunks() (int64, error) {
	req, err := http.NewRequest("GET", d.url+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "ember_stream_chunks_rejected_total{"); ok {
			f := strings.Fields(rest)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += int64(v)
		}
	}
	return sum, sc.Err()
}
