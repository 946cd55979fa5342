package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

// daemonStatus is what "ember status" reports, and its --json shape.
type daemonStatus struct {
	Addr    string `json:"addr"`
	Version string `json:"version"`
	// Connection is how ember reached the daemon: plain HTTP or TLS, and
	// the certificates' fingerprints.
	Connection *client.Connection `json:"connection,omitempty"`
	// TLS and InsecureListen are the daemon's own account (/healthz): its
	// TLS mode and CA fingerprint, and whether it listens beyond loopback
	// without TLS. TLS is absent from a daemon that does not report it.
	TLS            *client.ServerTLS `json:"tls,omitempty"`
	InsecureListen bool              `json:"insecureListen"`
	// UptimeSeconds is absent from a daemon that predates /healthz.
	UptimeSeconds *int64 `json:"uptimeSeconds,omitempty"`
	Ready         bool   `json:"ready"`
	// NotReady is the daemon's reason when it is not ready.
	NotReady  string `json:"notReady,omitempty"`
	Endpoints int    `json:"endpoints"`
	// Jobs sums the endpoints' /health job counters.
	Jobs statusJobs `json:"jobs"`
	// Workers sums the endpoints' /health worker counters, by state
	// (RunPod's "ready", always equal to "idle", is left out).
	Workers map[string]int `json:"workers"`
	GPUs    statusGPUs     `json:"gpus"`
	// OpenFiles and Connections come from /healthz; absent from a daemon
	// that does not report them.
	OpenFiles   *client.FileLimits `json:"openFiles,omitempty"`
	Connections *client.ConnStats  `json:"connections,omitempty"`
	// ParkMemory is the host memory parked GPU workers may take and take
	// now (/healthz); absent from a daemon that does not report it.
	ParkMemory *client.ParkMemory `json:"parkMemory,omitempty"`
}

type statusJobs struct {
	InQueue    int `json:"inQueue"`
	InProgress int `json:"inProgress"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	Retried    int `json:"retried"`
}

type statusGPUs struct {
	Total int `json:"total"`
	// Used are held by a worker, Free are neither held nor unhealthy.
	Used      int `json:"used"`
	Free      int `json:"free"`
	Unhealthy int `json:"unhealthy"`
}

// statusWorkerStates orders the worker counters of /v2/{ep}/health.
var statusWorkerStates = []string{"initializing", "idle", "running", "throttled", "unhealthy"}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's health: readiness, endpoints, queues, workers, GPUs",
		Long: `Show how the daemon is doing: its version and uptime, whether the
connection is TLS and to which CA fingerprint, the daemon's own TLS mode (and
a warning when it listens beyond loopback without TLS), whether it is
ready (/readyz), how many endpoints it has, their queues and workers summed
(from each endpoint's /health), and its GPUs used and free. Exits with
status 1 when the daemon is not ready.

For a job's status use "ember job status ENDPOINT JOB".`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				hint := ""
				if len(args) == 2 {
					hint = fmt.Sprintf("\nFor a job's status use: ember job status %s %s", args[0], args[1])
				}
				return fmt.Errorf("status shows the daemon's status and takes no arguments, got %d%s", len(args), hint)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st := daemonStatus{Addr: c.BaseURL(), Workers: map[string]int{}}

				// Readiness first: it needs no key, so a daemon that is down
				// or starting is told apart from a wrong key. One that does not
				// answer in time is starting (emberd holds requests until it
				// has recovered): the other routes would wait as well.
				rctx, rcancel := context.WithTimeout(ctx, healthTimeout)
				err := c.Readyz(rctx)
				rcancel()
				st.Addr = c.BaseURL() // an address without a scheme is resolved now
				st.Connection = c.Connection()
				var nr *client.NotReadyError
				switch {
				case err == nil:
					st.Ready = true
				case errors.As(err, &nr):
					st.NotReady = nr.Reason
				case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
					st.NotReady = fmt.Sprintf("no answer within %s (still starting?)", healthTimeout)
					return a.printDaemonStatus(&st)
				default:
					return err
				}
				if l, err := c.Healthz(ctx); err == nil {
					st.UptimeSeconds = &l.UptimeSeconds
					st.OpenFiles, st.Connections = l.OpenFiles, l.Connections
					st.TLS, st.InsecureListen = l.TLS, l.InsecureListen
					st.ParkMemory = l.ParkMemory
				} else if !client.IsNotFound(err) {
					return err
				}
				h, err := c.Health(ctx)
				if err != nil {
					return err
				}
				st.Version = h.Version
				eps, err := c.ListEndpoints(ctx)
				if err != nil {
					return err
				}
				st.Endpoints = len(eps)
				for _, ep := range eps {
					eh, err := c.EndpointHealth(ctx, ep.ID)
					if client.IsNotFound(err) {
						continue // deleted meanwhile
					}
					if err != nil {
						return err
					}
					st.Jobs.InQueue += eh.Jobs.InQueue
					st.Jobs.InProgress += eh.Jobs.InProgress
					st.Jobs.Completed += eh.Jobs.Completed
					st.Jobs.Failed += eh.Jobs.Failed
					st.Jobs.Retried += eh.Jobs.Retried
					for state, n := range eh.Workers {
						if state != "ready" {
							st.Workers[state] += n
						}
					}
				}
				gpus, err := c.ListGPUs(ctx)
				if err != nil && !client.IsNotFound(err) { // 404: a daemon without /v1/gpus
					return err
				}
				for _, g := range gpus {
					st.GPUs.Total++
					switch {
					case g.Worker != "":
						st.GPUs.Used++
					case g.Unhealthy != "":
						st.GPUs.Unhealthy++
					default:
						st.GPUs.Free++
					}
				}

				return a.printDaemonStatus(&st)
			})
		},
	}
}

// printDaemonStatus prints st and fails when the daemon is not ready.
func (a *app) printDaemonStatus(st *daemonStatus) error {
	var err error
	if a.jsonOut {
		err = marshalJSON(a.stdout, st)
	} else {
		err = writeDaemonStatus(a.stdout, st)
	}
	if err == nil && !st.Ready {
		err = fmt.Errorf("emberd is not ready: %s", st.NotReady)
	}
	return err
}

// writeDaemonStatus prints the status, a field per line.
func writeDaemonStatus(w io.Writer, st *daemonStatus) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Daemon:\t%s at %s\n", cell(st.Version), st.Addr)
	fmt.Fprintf(tw, "Connection:\t%s\n", connectionCell(st.Connection))
	fmt.Fprintf(tw, "TLS:\t%s\n", serverTLSCell(st.TLS))
	if st.InsecureListen {
		fmt.Fprintf(tw, "Warning:\t%s\n", insecureListenWarning)
	}
	uptime := "-"
	if st.UptimeSeconds != nil {
		uptime = formatUptime(time.Duration(*st.UptimeSeconds) * time.Second)
	}
	fmt.Fprintf(tw, "Uptime:\t%s\n", uptime)
	ready := "yes"
	if !st.Ready {
		ready = "no: " + cell(st.NotReady)
	}
	fmt.Fprintf(tw, "Ready:\t%s\n", ready)
	fmt.Fprintf(tw, "Endpoints:\t%d\n", st.Endpoints)
	fmt.Fprintf(tw, "Jobs:\t%d in queue, %d in progress, %d completed, %d failed, %d retried\n",
		st.Jobs.InQueue, st.Jobs.InProgress, st.Jobs.Completed, st.Jobs.Failed, st.Jobs.Retried)
	fmt.Fprintf(tw, "Workers:\t%s\n", countsCell(st.Workers, statusWorkerStates))
	gpus := "none"
	if st.GPUs.Total > 0 {
		gpus = fmt.Sprintf("%d: %d used, %d free", st.GPUs.Total, st.GPUs.Used, st.GPUs.Free)
		if st.GPUs.Unhealthy > 0 {
			gpus += fmt.Sprintf(", %d unhealthy", st.GPUs.Unhealthy)
		}
	}
	fmt.Fprintf(tw, "GPUs:\t%s\n", gpus)
	if p := st.ParkMemory; p != nil {
		fmt.Fprintf(tw, "Park memory:\t%s used of %s (--park-memory-mb)\n", formatBytes(p.UsedBytes), formatBytes(p.BudgetBytes))
	}
	files := "-"
	if f := st.OpenFiles; f != nil {
		files = fmt.Sprintf("limit %d (hard limit %d)", f.Soft, f.Hard)
	}
	fmt.Fprintf(tw, "Open files:\t%s\n", files)
	conns := "-"
	if c := st.Connections; c != nil {
		conns = fmt.Sprintf("%d open of %d (+%d for workers and probes)", c.Open, c.Max, c.Reserve)
		if c.Evicted+c.Refused+c.Rejected > 0 {
			conns += fmt.Sprintf("; %d idle closed, %d refused, %d answered 503", c.Evicted, c.Refused, c.Rejected)
		}
	}
	fmt.Fprintf(tw, "Connections:\t%s\n", conns)
	return tw.Flush()
}

// insecureListenWarning is what status says of a daemon started with
// --insecure-listen.
const insecureListenWarning = "emberd listens beyond loopback without TLS (--insecure-listen): keys and job data cross the network in cleartext; restart it with --tls auto or --tls-cert/--tls-key"

// connectionCell says how ember reached the daemon.
func connectionCell(c *client.Connection) string {
	switch {
	case c == nil:
		return "-"
	case !c.TLS:
		return "plain HTTP (not encrypted)"
	}
	s := cell(c.Version)
	if c.CAFingerprint != "" {
		s += ", CA sha256 " + c.CAFingerprint
	}
	switch {
	case c.VerifiedBy == "pin":
		s += ", pinned with --tls-fingerprint"
	case strings.HasPrefix(c.VerifiedBy, "ca-file "):
		s += ", verified with " + cell(strings.TrimPrefix(c.VerifiedBy, "ca-file "))
	case c.VerifiedBy != "":
		s += ", verified with the " + cell(c.VerifiedBy)
	}
	return s
}

// serverTLSCell is the daemon's TLS setup: "off", or its mode and CA
// fingerprint ("auto, CA sha256 <hex>") and the certificate's expiry.
func serverTLSCell(t *client.ServerTLS) string {
	switch {
	case t == nil:
		return "-"
	case !t.Enabled:
		return "off"
	}
	s := cell(t.Mode)
	if t.CAFingerprint != "" {
		s += ", CA sha256 " + t.CAFingerprint
	}
	if t.CertNotAfter != "" {
		s += ", certificate valid until " + formatTime(t.CertNotAfter)
	}
	return s
}

// countsCell lists the non-zero counts in order, then any other key
// sorted; "none" when all are zero.
func countsCell(counts map[string]int, order []string) string {
	var extra []string
	for k := range counts {
		if !slices.Contains(order, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	var parts []string
	for _, k := range append(slices.Clone(order), extra...) {
		if n := counts[k]; n != 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, cell(k)))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// formatUptime prints a duration to the minute past an hour, to the second
// below ("3d4h", "2h5m", "4m10s").
func formatUptime(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	}
	return d.Truncate(time.Second).String()
}
