package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// healthTimeout bounds the daemon check in "ember version", which must stay
// quick and succeed even when the daemon is down: people run it precisely
// when something is wrong.
const healthTimeout = 3 * time.Second

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of ember and of the daemon",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.context(cmd)
			defer cancel()
			ctx, cancelHealth := context.WithTimeout(ctx, healthTimeout)
			defer cancelHealth()

			out := struct {
				Version     string          `json:"version"`
				Daemon      json.RawMessage `json:"daemon"`
				DaemonError string          `json:"daemonError,omitempty"`
			}{Version: cliVersion(), Daemon: json.RawMessage("null")}

			// Health may be open to anyone, so a missing key is no reason
			// not to ask.
			key, _ := a.apiKey()
			c, err := a.newClient(key)
			if err != nil {
				return err
			}
			h, err := c.Health(ctx)
			if err != nil {
				out.DaemonError = a.explain(err).Error()
			} else {
				out.Daemon = h.Raw
			}

			if a.jsonOut {
				return marshalJSON(a.stdout, out)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "ember\t%s\n", out.Version)
			if err != nil {
				fmt.Fprintf(tw, "emberd\tunavailable: %s\n", out.DaemonError)
			} else {
				fmt.Fprintf(tw, "emberd\t%s (%s at %s)\n", cell(h.Version), cell(h.Status), a.addr)
			}
			return tw.Flush()
		},
	}
}
