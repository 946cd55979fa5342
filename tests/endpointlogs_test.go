package tests

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tickLine is what the test workers print: "ID | [TIME ]tick N ID".
var tickLine = regexp.MustCompile(`^(w-[0-9a-f]+) \| (?:(\S+) )?tick (\d) (w-[0-9a-f]+)$`)

type tick struct {
	prefix, at, n, id string
}

// ticks parses the tick lines of an endpoint log; a tick line whose
// prefix is not the worker that printed it fails the test.
func ticks(t *testing.T, out string) []tick {
	t.Helper()
	var ts []tick
	for _, l := range strings.Split(out, "\n") {
		m := tickLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if m[1] != m[4] {
			t.Errorf("line %q: prefixed with %s, printed by %s", l, m[1], m[4])
		}
		ts = append(ts, tick{m[1], m[2], m[3], m[4]})
	}
	return ts
}

// lockedBuffer collects a subprocess's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestEndpointLogs: `ember logs --endpoint` merges two process workers'
// output in time order, each line prefixed with its worker; -f picks up a
// worker that starts during the follow and ends the part of one that
// stops; --since leaves out what was written before.
func TestEndpointLogs(t *testing.T) {
	d := StartDaemon(t)
	env := []string{"EMBER_ADDR=" + d.URL, "EMBER_API_KEY=" + d.Key}
	// Each worker prints four ticks half a second apart, naming itself,
	// while the example worker serves.
	script := `for i in 1 2 3 4; do echo "tick $i $RUNPOD_POD_ID"; sleep 0.5; done & exec "$0"`
	ep := d.CreateEndpoint("logs-e2e", map[string]any{"workersMin": 2,
		"command": []string{"/bin/sh", "-c", script, workerBin}})
	waitFor(t, 30*time.Second, "two workers", func() bool { return live(d.Workers(ep)) == 2 })

	var out string
	waitFor(t, 30*time.Second, "eight ticks", func() bool {
		o, errOut, code := runEmber(t, env, "logs", "--endpoint", "logs-e2e", "-t")
		if code != 0 {
			t.Fatalf("ember logs --endpoint: exit %d: %s", code, errOut)
		}
		out = o
		return len(ticks(t, out)) == 8
	})
	ts := ticks(t, out)
	ids := map[string][]string{}
	switches := 0
	for i, tk := range ts {
		ids[tk.id] = append(ids[tk.id], tk.n)
		if i > 0 {
			if tk.at < ts[i-1].at {
				t.Errorf("not in time order: %v after %v", tk, ts[i-1])
			}
			if tk.id != ts[i-1].id {
				switches++
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, tk.at); err != nil {
			t.Errorf("line time %q: %v", tk.at, err)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("ticks of %d workers, want 2:\n%s", len(ids), out)
	}
	for id, ns := range ids {
		if strings.Join(ns, "") != "1234" {
			t.Errorf("worker %s's ticks in order %v", id, ns)
		}
	}
	if switches < 2 {
		t.Errorf("the two workers' lines are not interleaved:\n%s", out)
	}

	// Follow; then stop one worker: its part ends, and its replacement's
	// lines join the stream.
	follow := exec.Command(emberBin, "logs", "--endpoint", ep, "-f")
	follow.Env = append([]string{"HOME=" + t.TempDir()}, env...)
	var fout, ferr lockedBuffer
	follow.Stdout, follow.Stderr = &fout, &ferr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- follow.Wait() }()
	defer func() {
		follow.Process.Kill()
		<-done
	}()
	waitFor(t, 20*time.Second, "the follow's backlog", func() bool { return len(ticks(t, fout.String())) == 8 })

	// The ticks ended at least a second ago: since is past all of them.
	time.Sleep(1500 * time.Millisecond)
	since := time.Now().UTC()
	time.Sleep(500 * time.Millisecond)
	old := ts[0].id
	d.JSON("POST", "/v1/workers/"+old+":stop", nil, 200)
	var fresh string
	waitFor(t, 30*time.Second, "the replacement's ticks in the follow", func() bool {
		for _, tk := range ticks(t, fout.String()) {
			if _, ok := ids[tk.id]; !ok && tk.n == "4" {
				fresh = tk.id
				return true
			}
		}
		return false
	})
	waitFor(t, 20*time.Second, "the stopped worker's last line", func() bool {
		return strings.Contains(fout.String(), old+` | `) && strings.Contains(fout.String(), `msg="worker stopped" worker=`+old)
	})

	out, errOut, code := runEmber(t, env, "logs", "--endpoint", "logs-e2e", "--since", since.Format(time.RFC3339Nano))
	if code != 0 {
		t.Fatalf("ember logs --since: exit %d: %s", code, errOut)
	}
	got := map[string]int{}
	for _, tk := range ticks(t, out) {
		got[tk.id]++
	}
	if got[fresh] != 4 || len(got) != 1 {
		t.Errorf("--since %s: ticks %v, want only the 4 of %s:\n%s", since.Format(time.RFC3339Nano), got, fresh, out)
	}
	if !strings.Contains(out, `msg="worker stopped" worker=`+old) {
		t.Errorf("--since: the stopped worker's last line (after since) is missing:\n%s", out)
	}

	// Ctrl-C ends a follow without an error.
	follow.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("ember logs -f after Ctrl-C: %v: %s", err, ferr.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("ember logs -f: still running 10 s after SIGINT")
	}

	// Bad input: the field is named.
	if code, body := d.Do("GET", "/v1/endpoints/"+ep+"/logs?since=yesterday", nil); code != 400 || !strings.Contains(string(body), "since") {
		t.Errorf("since=yesterday: %d %s", code, body)
	}
	if _, errOut, code := runEmber(t, env, "logs", "--endpoint", "nope"); code == 0 || !strings.Contains(errOut, "nope") {
		t.Errorf("unknown endpoint: exit %d: %s", code, errOut)
	}
	// One worker's log still reads as before.
	if out, errOut, code := runEmber(t, env, "logs", fresh); code != 0 || !strings.Contains(out, "tick 4 "+fresh) || strings.Contains(out, " | ") {
		t.Errorf("ember logs %s: exit %d: %s%s", fresh, code, out, errOut)
	}
}
