package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "key",
		Aliases: []string{"keys"},
		Short:   "Create, list and revoke named API keys; rotate the admin key",
		Long: `Manage named API keys, one per person or tool, so that each can be revoked
on its own. Each key has a scope:

  admin   everything
  invoke  the RunPod client routes (/v2) and the OpenAI route, of the
          endpoints given with --endpoint or of all endpoints
  read    status, health, stats, metrics, GPUs, workers and logs

and may expire. The daemon keeps only a hash: the key itself is shown once,
by "ember key create".

The bootstrap admin key (` + defaultKeyFile + `) is not listed and cannot
be revoked; "ember key rotate-admin" replaces it without a restart.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.keyCreateCmd(), a.keyListCmd(), a.keyRevokeCmd(), a.keyRotateAdminCmd())
	return cmd
}

// daysPrefix is the whole-days part the daemon accepts before a Go
// duration in expiresIn ("30d", "1d12h").
var daysPrefix = regexp.MustCompile(`^([0-9]+)d`)

// checkExpiry rejects an --expires the daemon would reject, so that the
// message names the flag.
func checkExpiry(s string) error {
	bad := fmt.Errorf("--expires %q: want a positive duration such as 30d, 12h or 90m", s)
	var total time.Duration
	rest := s
	if m := daysPrefix.FindStringSubmatch(s); m != nil {
		days, err := strconv.Atoi(m[1])
		if err != nil || days > 100*365 {
			return bad
		}
		total, rest = time.Duration(days)*24*time.Hour, s[len(m[0]):]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return bad
		}
		total += d
	}
	if total <= 0 {
		return bad
	}
	return nil
}

// createdKey is the --json answer of "ember key create".
type createdKey struct {
	ID        string   `json:"id"`
	Key       string   `json:"key"`
	Scope     string   `json:"scope"`
	Endpoints []string `json:"endpoints"`
	ExpiresAt string   `json:"expiresAt"`
}

func (a *app) keyCreateCmd() *cobra.Command {
	var (
		scope     string
		endpoints []string
		expires   string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --scope admin|invoke|read",
		Short: "Create a named API key and print it, once",
		Long: `Create an API key named NAME (1 to 63 characters, unique) with a scope,
and print it. Save it at once: the daemon keeps only its hash and cannot
show it again.

--scope is required: admin (everything), invoke (the /v2 RunPod routes and
the OpenAI route; with --endpoint, of those endpoints only) or read (status,
health, stats, metrics, GPUs, workers, logs). --expires ends the key after a
duration: 30d, 12h, 90m.

--json prints {"id","key","scope","endpoints","expiresAt"} (expiresAt ""
for a key that never expires).`,
		Example: `  ember key create ci --scope admin
  ember key create app --scope invoke --endpoint echo --endpoint sdxl --expires 30d
  ember key create grafana --scope read --json | jq -r .key > grafana.key`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch scope {
			case client.ScopeAdmin, client.ScopeInvoke, client.ScopeRead:
			case "":
				return fmt.Errorf("--scope is required: admin (everything), invoke (run jobs: /v2 and the OpenAI route) or read (status, stats, logs, metrics)\nUsage: %s", cmd.UseLine())
			default:
				return fmt.Errorf("--scope %q: want admin, invoke or read", scope)
			}
			if len(endpoints) > 0 && scope != client.ScopeInvoke {
				return fmt.Errorf("--endpoint limits an invoke key; a key with scope %s cannot be limited to endpoints", scope)
			}
			if expires != "" {
				if err := checkExpiry(expires); err != nil {
					return err
				}
			}
			spec := client.KeySpec{Name: args[0], Scope: scope, Endpoints: endpoints, ExpiresIn: expires}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.CreateKey(ctx, spec)
				if err != nil {
					return err
				}
				if a.jsonOut {
					out := createdKey{ID: k.ID, Key: k.Key, Scope: k.Scope, Endpoints: k.Endpoints, ExpiresAt: k.ExpiresAt}
					if out.Endpoints == nil {
						out.Endpoints = []string{}
					}
					err = marshalJSON(a.stdout, out)
				} else {
					fw := newFieldWriter(a.stdout)
					fw.row("ID:", cell(k.ID))
					fw.row("Name:", cell(k.Name))
					fw.row("Scope:", cell(k.Scope))
					fw.row("Endpoints:", endpointsCell(k))
					fw.row("Created:", formatTime(k.CreatedAt))
					fw.row("Expires:", a.expiresCell(k.ExpiresAt))
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
	f := cmd.Flags()
	f.StringVar(&scope, "scope", "", "what the key may do: admin, invoke or read (required)")
	f.StringSliceVar(&endpoints, "endpoint", nil, "limit an invoke key to this endpoint, ID or name (repeat or comma-separate; default: all endpoints)")
	f.StringVar(&expires, "expires", "", "the key stops working after this long, e.g. 30d, 12h, 90m (default: never)")
	return cmd
}

// endpointsCell is an invoke key's endpoints, "all" when it has none;
// "-" for the other scopes, which endpoints do not limit.
func endpointsCell(k *client.APIKey) string {
	switch {
	case len(k.Endpoints) > 0:
		return cell(strings.Join(k.Endpoints, ","))
	case k.Scope == client.ScopeInvoke:
		return "all"
	}
	return "-"
}

// expiresCell is when a key expires, "never", or the time marked
// "(expired)" once past.
func (a *app) expiresCell(s string) string {
	if s == "" {
		return "never"
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil && !t.After(a.now()) {
		return formatTime(s) + " (expired)"
	}
	return formatTime(s)
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
				return printList(a, "keys", ks, func(k client.APIKey) json.RawMessage { return k.Raw }, a.writeKeys,
					"No named API keys (only the bootstrap key in "+defaultKeyFile+"). Create one with: ember key create NAME --scope admin|invoke|read")
			})
		},
	}
}

// writeKeys prints the key table, oldest first.
func (a *app) writeKeys(w io.Writer, ks []client.APIKey) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tENDPOINTS\tCREATED\tEXPIRES\tLAST USED")
	for _, k := range ks {
		lastUsed := "never"
		if k.LastUsedAt != "" {
			lastUsed = formatTime(k.LastUsedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(k.ID), cell(k.Name), cell(k.Scope),
			endpointsCell(&k), formatTime(k.CreatedAt), a.expiresCell(k.ExpiresAt), lastUsed)
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

func (a *app) keyRotateAdminCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-admin",
		Short: "Replace the bootstrap admin key; the old one stops working at once",
		Long: `Replace the bootstrap admin key without restarting emberd. The daemon writes
the new key to its key file (` + defaultKeyFile + `, mode 0600) and
refuses the old one from then on. This prints where the key was written, not
the key; --json prints {"key","file"}.

Everything that holds the old key must be given the new one: EMBER_API_KEY,
copies of the key file, RunPod clients configured with it.`,
		Example: `  sudo ember key rotate-admin
  ember key rotate-admin --json | jq -r .key`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				k, err := c.RotateAdminKey(ctx)
				if err != nil {
					return err
				}
				if a.jsonOut {
					err = marshalJSON(a.stdout, k)
				} else {
					_, err = fmt.Fprintf(a.stdout, "New admin key written to %s on the daemon's machine; the old key no longer works.\n", cell(k.File))
				}
				if err != nil {
					return err
				}
				warn := "Update everything that used the old admin key: EMBER_API_KEY, copies of the key file, RunPod clients."
				if a.keyFromEnv {
					warn = "EMBER_API_KEY holds the old admin key: set it to the new one (" + cell(k.File) + "). Update RunPod clients and copies of the key file too."
				}
				_, err = fmt.Fprintln(a.stderr, warn)
				return err
			})
		},
	}
}
