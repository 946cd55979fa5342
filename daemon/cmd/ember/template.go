package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) templateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "template",
		Aliases: []string{"templates"},
		Short:   "List, manage and deploy endpoint templates (Quick Deploy)",
		Long: `Templates are named, versioned endpoint presets: an image, a start command,
the environment with a description and default for each variable, GPUs,
container limits and scaling defaults. "ember template deploy" creates an
endpoint from one, asking only for what has no default.

Ember ships built-in templates (basic, vllm, text-embeddings) that cannot be
changed or deleted; add your own with "ember template create", or as
*.template.json files in the daemon's preload folder. Their images must be
imported (ember image load, ember image pull) before a deploy.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.templateListCmd(), a.templateShowCmd(), a.templateCreateCmd(), a.templateUpdateCmd(),
		a.templateDeleteCmd(), a.templateDeployCmd())
	return cmd
}

func (a *app) templateListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the templates: built-in ones first",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ts, err := c.ListTemplates(ctx)
				if err != nil {
					return err
				}
				return printList(a, "templates", ts, func(t client.Template) json.RawMessage { return t.Raw }, writeTemplates,
					"No templates. Create one with: ember template create -f FILE")
			})
		},
	}
}

// writeTemplates prints the template table: the variables a deploy must
// give are under REQUIRED.
func writeTemplates(w io.Writer, ts []client.Template) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tVERSION\tKIND\tCATEGORY\tGPUS\tIMAGE\tREQUIRED")
	for _, t := range ts {
		kind := "custom"
		if t.Builtin {
			kind = "built-in"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", cell(t.Name), t.Version, kind, orDash(t.Category), t.GPUCount,
			cell(t.Image), orDash(strings.Join(requiredVars(t), ",")))
	}
	return tw.Flush()
}

// requiredVars are the names of t's variables that a deploy must give.
func requiredVars(t client.Template) []string {
	var out []string
	for _, e := range t.Env {
		if e.Required {
			out = append(out, e.Name)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

func (a *app) templateShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a template and its variables",
		Long: `Show a template: what a deploy creates, and its variables with their
defaults. --json prints the template as the API has it, which "ember
template create -f" takes back (rename it first).`,
		Example: `  ember template show vllm
  ember template show vllm --json > my-llm.template.json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.GetTemplate(ctx, args[0])
				if err != nil {
					return err
				}
				if a.jsonOut {
					return writeJSON(a.stdout, t.Raw)
				}
				return writeTemplateDetail(a.stdout, t)
			})
		},
	}
}

// writeTemplateDetail prints a template a field per line, then its
// variables as a table.
func writeTemplateDetail(w io.Writer, t *client.Template) error {
	fw := newFieldWriter(w)
	row := fw.row
	kind := "no (ember template update changes it)"
	if t.Builtin {
		kind = "yes (cannot be changed or deleted)"
	}
	gpuTypes := []string{"any"}
	if len(t.GPUTypes) > 0 {
		gpuTypes = cells(t.GPUTypes)
	}
	orDefault := func(n int64, unit string) string {
		if n == 0 {
			return "endpoint default"
		}
		return strconv.FormatInt(n, 10) + unit
	}
	row("Name:", cell(t.Name))
	row("Version:", strconv.Itoa(t.Version))
	row("Built in:", kind)
	row("Category:", orDash(t.Category))
	row("Description:", orDash(t.Description))
	row("Image:", cell(t.Image))
	row("Command:", argv(t.Command))
	row("GPUs:", strconv.Itoa(t.GPUCount))
	row("GPU types:", gpuTypes...)
	row("Workers:", fmt.Sprintf("min %d, max %s", t.WorkersMin, orDefault(int64(t.WorkersMax), "")))
	idle := "endpoint default"
	if t.IdleTimeout > 0 {
		idle = formatDuration(time.Duration(t.IdleTimeout) * time.Second)
	}
	row("Idle timeout:", idle)
	if t.ExecutionTimeoutMs > 0 {
		row("Execution timeout:", formatMs(t.ExecutionTimeoutMs))
	}
	if t.MemoryMB > 0 {
		row("Memory:", strconv.Itoa(t.MemoryMB)+" MiB")
	}
	if t.CPUs > 0 {
		row("CPUs:", strconv.FormatFloat(t.CPUs, 'f', -1, 64))
	}
	if t.ScalerType != "" || t.ScalerValue != 0 {
		row("Scaler:", fmt.Sprintf("%s %s", orDash(t.ScalerType), orDefault(int64(t.ScalerValue), "")))
	}
	if t.Flashboot {
		row("FlashBoot:", "on")
	}
	if t.CreatedAt > 0 {
		row("Created:", time.UnixMilli(t.CreatedAt).UTC().Format("2006-01-02 15:04"))
		row("Updated:", time.UnixMilli(t.UpdatedAt).UTC().Format("2006-01-02 15:04"))
	}
	if err := fw.Flush(); err != nil {
		return err
	}
	if len(t.Env) == 0 {
		_, err := fmt.Fprintln(w, "\nNo variables.")
		return err
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "VARIABLE\tREQUIRED\tDEFAULT\tDESCRIPTION")
	for _, e := range t.Env {
		req, def := "no", orDash(e.Default)
		if e.Required {
			req = "yes"
		}
		if e.Secret && e.Default != "" {
			def = "(secret)"
		}
		desc := orDash(e.Description)
		if e.Secret {
			desc += " (secret)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(e.Name), req, def, desc)
	}
	return tw.Flush()
}

// readTemplateFile reads a template definition (FILE, or stdin for "-")
// and checks that it is one JSON object, so that a typo is reported here
// with the file's name.
func (a *app) readTemplateFile(name string) (json.RawMessage, error) {
	if name == "" {
		return nil, errors.New("-f FILE is required: a JSON template definition (\"-\" for stdin), such as the output of \"ember template show NAME --json\"")
	}
	b, err := a.readFileArg(name)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("%s is not a JSON template definition: %v", name, err)
	}
	return b, nil
}

func (a *app) templateCreateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a template from a JSON definition",
		Long: `Create a template from FILE ("-" for stdin): a JSON object with "name" and
"image", and optionally "description", "category", "command", "env"
([{"name","description","default","required","secret"}]), "gpuCount",
"gpuTypes", "memoryMb", "cpus", "workersMin", "workersMax", "idleTimeout",
"executionTimeoutMs", "scalerType", "scalerValue" and "flashboot". The daemon
checks it as it checks an endpoint, and refuses unknown fields.`,
		Example: `  ember template show basic --json | grep -v '"builtin"' | sed 's/"basic"/"my-worker"/' > my.template.json
  ember template create -f my.template.json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			def, err := a.readTemplateFile(file)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.CreateTemplate(ctx, def)
				if err != nil {
					return err
				}
				if a.jsonOut {
					return writeJSON(a.stdout, t.Raw)
				}
				_, err = fmt.Fprintf(a.stdout, "Created template %s (version %d). Deploy it with: ember template deploy %s --name ENDPOINT\n", cell(t.Name), t.Version, cell(t.Name))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the JSON template definition from `FILE` (\"-\" for stdin)")
	return cmd
}

func (a *app) templateUpdateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "update NAME -f FILE",
		Short: "Replace a template with a JSON definition; its version grows by one",
		Long: `Replace the template NAME with FILE ("-" for stdin), as a whole: fields the
file leaves out are reset, not kept. If the file gives "version" (as
"ember template show --json" writes it), it must be the current one, so that
an edit of an older copy does not undo a newer change. Endpoints deployed
earlier keep what they were given. Built-in templates cannot be updated.`,
		Example: `  ember template show my-worker --json > t.json && $EDITOR t.json && ember template update my-worker -f t.json`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			def, err := a.readTemplateFile(file)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.UpdateTemplate(ctx, args[0], def)
				if err != nil {
					return err
				}
				if a.jsonOut {
					return writeJSON(a.stdout, t.Raw)
				}
				_, err = fmt.Fprintf(a.stdout, "Updated template %s to version %d\n", cell(t.Name), t.Version)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the JSON template definition from `FILE` (\"-\" for stdin)")
	return cmd
}

func (a *app) templateDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a template (endpoints deployed from it are kept)",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.DeleteTemplate(ctx, args[0])
				if err != nil {
					return err
				}
				if a.jsonOut {
					return writeJSON(a.stdout, t.Raw)
				}
				_, err = fmt.Fprintf(a.stdout, "Deleted template %s\n", cell(t.Name))
				return err
			})
		},
	}
}

func (a *app) templateDeployCmd() *cobra.Command {
	var (
		name        string
		env         []string
		gpuCount    int
		gpuTypes    []string
		workersMin  int
		workersMax  int
		idleTimeout secondsValue
	)
	cmd := &cobra.Command{
		Use:   "deploy TEMPLATE --name ENDPOINT [--env KEY=VALUE ...]",
		Short: "Create an endpoint from a template (Quick Deploy)",
		Long: `Create the endpoint ENDPOINT from TEMPLATE: its image, command, scaling and
GPU settings, and its variables' defaults. Give the variables that have no
default with --env (ember template show TEMPLATE lists them); --env also
overrides a default or adds a variable of your own. --gpu-count,
--gpu-types, --workers-min, --workers-max and --idle-timeout override the
template's.

The template's image must be imported first; if it is not, the daemon says
how to import it. The endpoint is printed as "ember endpoint get" prints it.`,
		Example: `  ember template deploy basic --name hello
  ember template deploy vllm --name qwen --env MODEL_NAME=Qwen/Qwen2.5-0.5B-Instruct --env MAX_MODEL_LEN=4096
  ember template deploy text-embeddings --name embed --env MODEL_NAMES=BAAI/bge-small-en-v1.5 --workers-max 2`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set := cmd.Flags().Changed
			if name == "" {
				return fmt.Errorf("--name is required: the new endpoint's name\nUsage: %s", cmd.UseLine())
			}
			req := client.DeployRequest{Name: name}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				if req.Env == nil {
					req.Env = map[string]string{}
				}
				req.Env[k] = v
			}
			if set("gpu-count") {
				req.GPUCount = &gpuCount
			}
			if set("gpu-types") {
				req.GPUTypes = gpuTypes
			}
			if set("workers-min") {
				req.WorkersMin = &workersMin
			}
			if set("workers-max") {
				req.WorkersMax = &workersMax
			}
			if set("idle-timeout") {
				n := int(idleTimeout)
				req.IdleTimeout = &n
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ep, err := c.DeployTemplate(ctx, args[0], req)
				if err != nil {
					return deployHint(err, args[0])
				}
				return a.printEndpoint(ep)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the new endpoint's name (required)")
	fl.StringArrayVarP(&env, "env", "e", nil, "set a variable, `KEY=VALUE` (repeatable)")
	fl.IntVar(&gpuCount, "gpu-count", 0, "GPUs per worker (default: the template's)")
	fl.StringSliceVar(&gpuTypes, "gpu-types", nil, "acceptable GPU models, comma-separated, in order of preference (default: the template's)")
	fl.IntVar(&workersMin, "workers-min", 0, "workers kept running even when idle (default: the template's)")
	fl.IntVar(&workersMax, "workers-max", 0, "most workers run at once (default: the template's)")
	fl.Var(&idleTimeout, "idle-timeout", "stop an idle worker after this long: seconds or a duration such as 5m (default: the template's)")
	return cmd
}

// deployHint adds to a refused deploy how to give a missing variable. (A
// template not found says itself where templates are listed.)
func deployHint(err error, tmpl string) error {
	var ae *client.APIError
	if errors.As(err, &ae) && strings.HasPrefix(ae.Message, "env.") && strings.Contains(ae.Message, ": required") {
		v, _, _ := strings.Cut(strings.TrimPrefix(ae.Message, "env."), ":")
		return fmt.Errorf("%w\nGive it with: --env %s=VALUE (ember template show %s lists the variables)", err, v, tmpl)
	}
	return err
}
