package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) gpuCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "gpu",
		Aliases: []string{"gpus"},
		Short:   "Show the daemon's GPUs",
		Long: `Show the GPUs emberd found through NVML, who holds each (a worker of an
endpoint) and whether it is healthy, with live utilisation, memory and
temperature.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.gpuListCmd())
	return cmd
}

func (a *app) gpuListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the GPUs with their holders, health and live readings",
		Long: `List the GPUs in the daemon's inventory order. INDEX is the GPU's place
in that list (NVML order; GPUs left out at startup, MIG-enabled or failing,
are not listed). MEMORY is used / total; UTIL is the share of the last
sample period during which a kernel ran. HOLDER is WORKER/ENDPOINT, "-" for
a free GPU. A GPU taken out of placement shows why under HEALTH.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				gpus, err := c.ListGPUs(ctx)
				if err != nil {
					return notFoundHint(err, "This daemon has no GPU route; it is older than this ember")
				}
				return printList(a, "gpus", gpus, func(g client.GPU) json.RawMessage { return g.Raw }, writeGPUs,
					"No GPUs: emberd found none through NVML (no NVIDIA driver?). Endpoints with gpuCount 0 still run.")
			})
		},
	}
}

// writeGPUs prints the GPU table in the daemon's order.
func writeGPUs(w io.Writer, gpus []client.GPU) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "INDEX\tNAME\tMEMORY\tUTIL\tTEMP\tHOLDER\tHEALTH")
	for _, g := range gpus {
		used := "-"
		if g.MemoryUsedBytes != nil {
			used = formatBytes(*g.MemoryUsedBytes)
		}
		total := "-"
		if g.MemoryTotalBytes > 0 {
			total = formatBytes(g.MemoryTotalBytes)
		}
		util, temp := "-", "-"
		if g.UtilizationPercent != nil {
			util = strconv.Itoa(*g.UtilizationPercent) + "%"
		}
		if g.TemperatureC != nil {
			temp = strconv.Itoa(*g.TemperatureC) + "C"
		}
		holder := "-"
		if g.Worker != "" {
			holder = cell(g.Worker) + "/" + cell(g.EndpointID)
		}
		health := "ok"
		if g.Unhealthy != "" {
			health = "unhealthy: " + cell(g.Unhealthy)
		}
		if g.StatsError != "" && g.Unhealthy == "" {
			health = "ok (no readings: " + cell(g.StatsError) + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s / %s\t%s\t%s\t%s\t%s\n", g.Index, cell(g.Name), used, total, util, temp, holder, health)
	}
	return tw.Flush()
}
