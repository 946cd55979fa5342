package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "key",
		Aliases: []string{"keys"},
		Short:   "Create, list and revoke named API keys",
		Long: `Manage named admin API keys, one per person or tool, so that each can be
revoked on its own. A key works everywhere the admin key does (ember, the
/v1 and /v2 APIs, RunPod clients). The daemon keeps only a hash: the key
itself is shown once, by "ember key create".

The bootstrap admin key (` + defaultKeyFile + `) is not listed and cannot
be revoked here: to change it, replace that file and restart emberd.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.keyCreateCmd(), a.keyListCmd(), a.keyRevokeCmd())
	return cmd
}

func (a *app) keyCreateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME",
		Short: "Create a named API key and print it, once",
		Long: `Create an admin API key named NAME (1 to 63 characters, unique) and print
it. Save it at once: the daemon keeps only its hash and cannot show it again.`,
		Example: `  ember key create ci
  ember key create grafana --json | jq -r .key > grafana.key`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.CreateKey(ctx, args[0])
				if err != nil {
					return err
				}
				if a.jsonOut {
					err = writeJSON(a.stdout, k.Raw)
				} else {
					fw := newFieldWriter(a.stdout)
					fw.row("ID:", cell(k.ID))
					fw.row("Name:", cell(k.Name))
					fw.row("Created:", formatTime(k.CreatedAt))
					fw.row("Key:", cell(k.Key))
					err = fw.Flush()
				}
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stderr, "Save this key now: it is not shown again. Use it with EMBER_API_KEY or --api-key-file, or as a RunPod client's API key.")
				return err
			})
		},
	}
}

func (a *app) keyListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the named API keys (never the keys themselves)",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ks, err := c.ListKeys(ctx)
				if err != nil {
					return err
				}
				return printList(a, "keys", ks, func(k client.APIKey) json.RawMessage { return k.Raw }, writeKeys,
					"No named API keys (only the bootstrap key in "+defaultKeyFile+"). Create one with: ember key create NAME")
			})
		},
	}
}

// writeKeys prints the key table, oldest first.
func writeKeys(w io.Writer, ks []client.APIKey) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED")
	for _, k := range ks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cell(k.ID), cell(k.Name), formatTime(k.CreatedAt))
	}
	return tw.Flush()
}

func (a *app) keyRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"rm"},
		Short:   "Revoke a named API key; it stops working at once",
		Example: `  ember key revoke k-1a2b3c4d5e6f`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.RevokeKey(ctx, args[0])
				if err != nil {
					return notFoundHint(err, "List keys with: ember key list")
				}
				if a.jsonOut {
					return writeJSON(a.stdout, k.Raw)
				}
				_, err = fmt.Fprintf(a.stdout, "Revoked API key %s (%s)\n", cell(k.ID), cell(k.Name))
				return err
			})
		},
	}
}
