package main

import (
	"fmt"
	"sync"
	"time"
)

// burst submits n jobs of jobMs each at once to an endpoint that scales
// from zero to max workers (REQUEST_COUNT 1), and reports the time until
// all are done against the ideal n*jobMs/max.
func burst(d *daemon, spec map[string]any, n, jobMs, max int) error {
	spec["scalerType"], spec["scalerValue"], spec["workersMax"], spec["idleTimeout"] = "REQUEST_COUNT", 1, max, 30
	ep, err := d.createEndpoint(spec)
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`{"input":{"sleep_ms":%d}}`, jobMs)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	sem := make(chan struct{}, 32)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := d.post("/v2/"+ep+"/run", body, nil); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	submitted := time.Since(start)
	deadline := start.Add(10 * time.Minute)
	var first, at10, at90 time.Duration
	for {
		c, err := d.completed(ep)
		if err != nil {
			return err
		}
		el := time.Since(start)
		if first == 0 && c > 0 {
			first = el
		}
		if at10 == 0 && c >= n/10 {
			at10 = el
		}
		if at90 == 0 && c >= n*9/10 {
			at90 = el
		}
		if c >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("burst: %d of %d done after 10 min", c, n)
		}
		// Polled lightly: the machine has 2 cores, and every poll is CPU
		// taken from emberd and the workers.
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	ideal := time.Duration(n*jobMs/max) * time.Millisecond
	fmt.Printf("%-52s %12s %12s %8s\n", fmt.Sprintf("burst (%s): %d x %d ms jobs, 0 -> %d workers (ideal)", d.runtime, n, jobMs, max),
		fmt.Sprintf("%.2f s", took.Seconds()), fmt.Sprintf("%.2f s", ideal.Seconds()), fmt.Sprintf("%.2fx", took.Seconds()/ideal.Seconds()))
	fmt.Printf("%-52s %12s\n", "  submitting all jobs took", fmt.Sprintf("%.2f s", submitted.Seconds()))
	fmt.Printf("%-52s %12s\n", "  first result seen (polling starts once submitted)", fmt.Sprintf("%.2f s", first.Seconds()))
	cycle := (at90 - at10) * time.Duration(max) / time.Duration(n*8/10)
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("  per-job cycle of a worker, 10%%-90%% (job %d ms)", jobMs), ms3(cycle))
	return d.do("DELETE", "/v1/endpoints/"+ep, "", nil)
}

// revivals measures FlashBoot: a frozen worker to the first result, n
// times, against a cold start (zero workers to the first result) and a
// warm worker's job in the same run.
func revivals(d *daemon, image string, n int) error {
	ep, err := d.createEndpoint(map[string]any{"name": "flash", "image": image, "gpuCount": 0, "workersMax": 1,
		"idleTimeout": 1, "flashboot": true, "flashbootWindow": 3600})
	if err != nil {
		return err
	}
	// A first job starts the worker that is then frozen and revived.
	if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, nil); err != nil {
		return err
	}
	var revive, warm []time.Duration
	for i := 0; i < n; i++ {
		if err := d.waitFrozen(ep, 30*time.Second); err != nil {
			return err
		}
		t := time.Now()
		var v map[string]any
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, &v); err != nil {
			return err
		}
		if v["status"] != "COMPLETED" {
			return fmt.Errorf("revival %d: %v", i, v)
		}
		revive = append(revive, time.Since(t))
		t = time.Now()
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, nil); err != nil {
			return err
		}
		warm = append(warm, time.Since(t))
	}
	var st struct {
		WorkersStarted string `json:"workersStarted"`
		Revival        struct {
			P50 float64 `json:"p50Seconds"`
		} `json:"revival"`
	}
	if err := d.do("GET", "/v1/endpoints/"+ep+"/stats", "", &st); err != nil {
		return err
	}
	fmt.Printf("%-52s %12s %12s %8s\n", fmt.Sprintf("revival: frozen worker to first result (median of %d; baseline warm)", n),
		ms3(median(revive)), ms3(median(warm)), fmt.Sprintf("%.2fx", float64(median(revive))/float64(median(warm))))
	fmt.Printf("%-52s %12s\n", "  of which thaw (emberd's revival p50)", fmt.Sprintf("%.1f ms", st.Revival.P50*1000))
	fmt.Printf("%-52s %12s\n", "  workers started for all of them", st.WorkersStarted)
	return nil
}

// waitFrozen waits until the endpoint's only worker is frozen.
func (d *daemon) waitFrozen(ep string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var resp struct {
			Workers []struct {
				State string `json:"state"`
			} `json:"workers"`
		}
		if err := d.do("GET", "/v1/workers?endpoint="+ep, "", &resp); err != nil {
			return err
		}
		if len(resp.Workers) == 1 && resp.Workers[0].State == "frozen" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("endpoint %s: no frozen worker within %v", ep, timeout)
}
