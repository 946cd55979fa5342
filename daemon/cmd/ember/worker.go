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
	fmt.Fprintln(tw, "ID\tENDPOINT\tSTATE\tPID\tSTARTED\tJOBS\tSDK")
	for _, wk := range ws {
		state := cell(wk.State)
		if wk.Reason != "" {
			state += " (" + cell(wk.Reason) + ")"
		}
		pid := "-"
		if wk.PID > 0 {
			pid = strconv.Itoa(wk.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(wk.ID), cell(wk.EndpointID), state, pid,
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
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs WORKER",
		Short: "Print a worker's output (stdout and stderr)",
		Long: `Print the output of WORKER (an ID from "ember worker list"): all of its
current log file, up to its last 1 MiB, or its last --tail lines. With -f,
keep printing what it writes until it exits or Ctrl-C. A worker that has
exited can still be read while its log file is kept. The log is printed as
it is, --json or not.

"ember logs" is the same command.`,
		Example: `  ember worker logs w-3f2a9c1b7e04 --tail 50
  ember logs w-3f2a9c1b7e04 -f`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				err := c.WorkerLogs(ctx, args[0], follow, tail, a.stdout)
				if follow && errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
					return nil // Ctrl-C ends following; that is not a failure
				}
				return notFoundHint(err, listWorkersHint)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the worker exits or Ctrl-C")
	cmd.Flags().IntVar(&tail, "tail", -1, "print only the last `N` lines (default: all)")
	return cmd
}
