package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) workerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "worker",
		Aliases: []string{"workers"},
		Short:   "List, read and stop the daemon's workers",
		Long: `Inspect the workers (containers or processes) that run endpoints' jobs,
read their output and stop them. Times are shown in UTC.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.workerListCmd(), a.workerLogsCmd(), a.workerStopCmd())
	return cmd
}

func (a *app) workerListCmd() *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the live workers, oldest first",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				epID := ""
				if endpoint != "" {
					ep, err := c.ResolveEndpoint(ctx, endpoint)
					if err != nil {
						return err
					}
					epID = ep.ID
				}
				ws, err := c.ListWorkers(ctx, epID)
				if err != nil {
					return err
				}
				return printList(a, "workers", ws, func(w client.Worker) json.RawMessage { return w.Raw }, writeWorkers, "No workers.")
			})
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only the workers of the endpoint with this `NAME|ID`")
	return cmd
}

// writeWorkers prints the worker table in the daemon's order.
func writeWorkers(w io.Writer, ws []client.Worker) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tENDPOINT\tGEN\tSTATE\tPID\tSTARTED\tJOBS\tSDK")
	for _, wk := range ws {
		state := cell(wk.State)
		if wk.ParkedBytes > 0 {
			state += " (" + formatBytes(wk.ParkedBytes) + " in host memory)"
		}
		if wk.Reason != "" {
			state += " (" + cell(wk.Reason) + ")"
		}
		pid := "-"
		if wk.PID > 0 {
			pid = strconv.Itoa(wk.PID)
		}
		gen := "-"
		if wk.Generation > 0 {
			gen = strconv.FormatInt(wk.Generation, 10)
			if wk.Outdated {
				gen += " (old)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(wk.ID), cell(wk.EndpointID), gen, state, pid,
			formatTime(wk.StartedAt), cell(strings.Join(wk.Jobs, ",")), cell(wk.SDKVersion))
	}
	return tw.Flush()
}

// listWorkersHint follows "not found" for a worker ID.
const listWorkersHint = "List workers with: ember worker list"

func (a *app) workerStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop WORKER",
		Short: "Drain a worker and stop it",
		Long: `Stop WORKER (an ID from "ember worker list") gracefully: it takes no new
job, the jobs it runs finish (up to the daemon's --stop-grace, then it is
killed and they go back to the queue), then it exits. If its endpoint still
needs a worker (workersMin, or jobs waiting), the daemon starts another.`,
		Example: `  ember worker stop w-3f2a9c1b7e04`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				w, err := c.StopWorker(ctx, args[0])
				if err != nil {
					return notFoundHint(err, listWorkersHint)
				}
				if a.jsonOut {
					return writeJSON(a.stdout, w.Raw)
				}
				msg := fmt.Sprintf("Stopping worker %s (endpoint %s): it takes no new job", w.ID, cell(w.EndpointID))
				switch n := len(w.Jobs); n {
				case 0:
					msg += " and exits now"
				case 1:
					msg += " and exits once its job (" + cell(w.Jobs[0]) + ") has finished"
				default:
					msg += fmt.Sprintf(" and exits once its %d jobs have finished", n)
				}
				_, err = fmt.Fprintln(a.stdout, msg)
				return err
			})
		},
	}
}

func (a *app) workerLogsCmd() *cobra.Command {
	var follow, timestamps bool
	var tail int
	var endpoint, since string
	cmd := &cobra.Command{
		Use:   "logs WORKER | --endpoint NAME|ID",
		Short: "Print a worker's output (stdout and stderr), or an endpoint's",
		Long: `Print the output of WORKER (an ID from "ember worker list"): all of its
current log file, up to its last 1 MiB, or its last --tail lines. With -f,
keep printing what it writes until it exits or Ctrl-C. A worker that has
exited can still be read while its log file is kept. The log is printed as
it is, --json or not.

With --endpoint, print the output of all of an endpoint's workers (the live
ones, and those that stopped since emberd started, while their logs are
kept; up to the last 1 MiB of each), merged in time order, each line
prefixed with its worker's ID. Line times come from marks emberd records
beside each log about every second (every 250 ms with the process
runtime): lines of different workers within one mark's interval keep each
worker's own order. With -f, workers that start join the output and
workers that stop end their part, until Ctrl-C. --since leaves out older
lines; -t shows each line's time (UTC).

"ember logs" is the same command.`,
		Example: `  ember worker logs w-3f2a9c1b7e04 --tail 50
  ember logs w-3f2a9c1b7e04 -f
  ember logs --endpoint echo -f
  ember logs --endpoint echo --since 10m -t`,
		Args: func(cmd *cobra.Command, args []string) error {
			if endpoint != "" && len(args) > 0 {
				return fmt.Errorf("%s: give WORKER or --endpoint, not both\nUsage: %s", subcommandPath(cmd), cmd.UseLine())
			}
			if endpoint != "" {
				return nil
			}
			return exactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" && (since != "" || timestamps) {
				return errors.New("--since and --timestamps work with --endpoint only")
			}
			if endpoint != "" && cmd.Flags().Changed("tail") {
				return errors.New("--tail reads one worker's log; with --endpoint use --since")
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var err error
				if endpoint != "" {
					var ep *client.Endpoint
					if ep, err = c.ResolveEndpoint(ctx, endpoint); err != nil {
						return err
					}
					err = c.EndpointLogs(ctx, ep.ID, client.LogOptions{Follow: follow, Since: since, Timestamps: timestamps}, a.stdout)
				} else {
					err = notFoundHint(c.WorkerLogs(ctx, args[0], follow, tail, a.stdout), listWorkersHint)
				}
				if follow && errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
					return nil // Ctrl-C ends following; that is not a failure
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the worker exits (with --endpoint: the endpoint is deleted) or Ctrl-C")
	cmd.Flags().IntVar(&tail, "tail", -1, "print only the last `N` lines (default: all)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "print the merged output of the endpoint `NAME|ID`'s workers")
	cmd.Flags().StringVar(&since, "since", "", "with --endpoint: only lines written since `TIME` (RFC 3339, Unix seconds, or a duration back from now: 10m)")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "with --endpoint: show each line's time (UTC)")
	return cmd
}
