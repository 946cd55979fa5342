package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

var (
	connsN        = flag.Int("idle-conns", 6000, "idle keep-alive connections opened for the connections figure")
	connsFiles    = flag.Int("conns-open-files", 4096, "open-files limit (soft and hard) emberd runs under for the connections figure")
	baselineEmber = flag.String("baseline-emberd", "", "emberd binary of the commit before, run the same way as the connections baseline (none: no baseline)")
)

// connsPart prints the connections figure: emberd under a small open-files
// limit, with its default --max-connections, while -idle-conns idle
// keep-alive connections without a key are opened (more than the limit);
// then whether /healthz and a /runsync served by a warm worker (its
// job-take and job-done: the worker API) still answer, and RSS. The same
// for -baseline-emberd, the same run.
func connsPart(tmp string) error {
	fmt.Printf("## Connections: %d idle keep-alive connections, emberd limited to %d open files\n\n", *connsN, *connsFiles)
	fmt.Println("| emberd | held open | /healthz | /runsync via a worker | RSS before → after (MB) | /healthz connections |")
	fmt.Println("|---|---|---|---|---|---|")
	bins := []struct{ name, bin string }{{"this build", *emberdBin}}
	if *baselineEmber != "" {
		bins = append(bins, struct{ name, bin string }{"baseline", *baselineEmber})
	}
	for i, b := range bins {
		if err := connsRun(filepath.Join(tmp, fmt.Sprintf("conns-%d", i)), b.name, b.bin); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	fmt.Println()
	return nil
}

func connsRun(dir, name, bin string) error {
	addr := freeAddr()
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return err
	}
	defer logf.Close()
	// dash's ulimit -n sets the soft and the hard limit.
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, *connsFiles), bin,
		"--data-dir", dir, "--listen", addr, "--grpc-listen", freeAddr(), "--runtime", "process", "--log-level", "warn", "--rate-limits", "off")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	d := &daemon{cmd: cmd, url: "http://" + addr, runtime: "process"}
	defer d.stop()
	for i := 0; ; i++ {
		if b, err := os.ReadFile(filepath.Join(dir, "api.key")); err == nil {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				d.key = strings.TrimSpace(string(b))
				break
			}
		}
		if i == 300 {
			return fmt.Errorf("emberd did not start; see %s.log", dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ep, err := d.createEndpoint(map[string]any{"name": "conns", "command": []string{*workerBin}, "gpuCount": 0,
		"workersMin": 1, "workersMax": 1, "idleTimeout": 3600})
	if err != nil {
		return err
	}
	if err := d.waitIdleWorkers(ep, 1, 60*time.Second); err != nil {
		return err
	}
	rssBefore := rssMB(cmd.Process.Pid)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	unanswered := 0
	for i := 0; i < *connsN && time.Now().Before(deadline); i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
		if unanswered >= 3 {
			continue // the daemon stopped answering: only connect
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET /v2/%s/health HTTP/1.1\r\nHost: x\r\n\r\n", ep)
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close() // 401 without a key; kept alive
		} else {
			unanswered++
		}
	}
	// How many the server still holds: those not closed on their side.
	held := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				held++
			}
		}
	}
	once := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	healthz, stats := "no answer", "-"
	if resp, err := once.Get(d.url + "/healthz"); err == nil {
		var live struct {
			Connections json.RawMessage `json:"connections"`
		}
		json.NewDecoder(resp.Body).Decode(&live)
		resp.Body.Close()
		healthz = fmt.Sprint(resp.StatusCode)
		if len(live.Connections) > 0 {
			stats = "`" + string(live.Connections) + "`"
		}
	}
	runsync := "no answer"
	req, _ := http.NewRequest("POST", d.url+"/v2/"+ep+"/runsync", strings.NewReader(`{"input":{"output":1}}`))
	req.Header.Set("Authorization", "Bearer "+d.key)
	start := time.Now()
	if resp, err := once.Do(req); err == nil {
		var v struct{ Status string }
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		runsync = fmt.Sprintf("%d %s in %.0f ms", resp.StatusCode, v.Status, ms(time.Since(start)))
	}
	fmt.Printf("| %s | %d of %d | %s | %s | %.0f → %.0f | %s |\n", name, held, len(conns), healthz, runsync, rssBefore, rssMB(cmd.Process.Pid), stats)
	return nil
}
