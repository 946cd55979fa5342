package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) endpointCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "endpoint",
		Aliases: []string{"endpoints", "ep"},
		Short:   "Manage endpoints",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRunE,
	}
	cmd.AddCommand(a.endpointCreateCmd(), a.endpointListCmd(), a.endpointGetCmd(), a.endpointDeleteCmd())
	return cmd
}

// createFlags are the endpoint fields settable from the command line. Only
// the flags a user actually sets are sent, so everything else gets the
// daemon's defaults.
type createFlags struct {
	file               string
	image              string
	env                []string
	workersMin         int
	workersMax         int
	idleTimeout        secondsValue
	executionTimeoutMs int64
	scalerType         string
	scalerValue        int
	gpuCount           int
	gpuTypes           []string
	memoryMB           int
	cpus               float64
	pidsLimit          int
	network            string
}

func (a *app) endpointCreateCmd() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create NAME [flags] [-- COMMAND ARG...]",
		Short: "Create an endpoint",
		Long: `Create an endpoint. Workers run IMAGE, or COMMAND (given after "--"), or
COMMAND inside IMAGE when both are given.

Only the flags you set are sent; the daemon fills in defaults for the rest.
--file reads a JSON endpoint definition ("-" for stdin), such as the output of
"ember endpoint get --json"; flags and NAME override what it says.`,
		Example: `  ember endpoint create echo --image ghcr.io/acme/echo:1 --workers-max 2
  ember endpoint create sd --gpu-types "NVIDIA H100 80GB HBM3,NVIDIA A100-SXM4-80GB" -- python -u handler.py
  ember endpoint create --file endpoint.json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if pos, _ := splitDash(cmd, args); len(pos) > 1 {
				return fmt.Errorf("%s takes one NAME, got %d arguments (put the worker command after \"--\")\nUsage: %s",
					subcommandPath(cmd), len(pos), cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := a.createSpec(cmd, args, &f)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.context(cmd)
			defer cancel()
			ep, err := c.CreateEndpoint(ctx, spec)
			if err != nil {
				return err
			}
			return a.printEndpoint(ep)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read a JSON endpoint definition from `FILE` (\"-\" for stdin)")
	fl.StringVar(&f.image, "image", "", "container image workers run")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable, `KEY=VALUE` (repeatable)")
	fl.IntVar(&f.workersMin, "workers-min", 0, "workers kept running even when idle")
	fl.IntVar(&f.workersMax, "workers-max", 0, "most workers run at once")
	fl.Var(&f.idleTimeout, "idle-timeout", "stop an idle worker after this long: seconds, or a duration such as 90s or 5m")
	fl.Int64Var(&f.executionTimeoutMs, "execution-timeout-ms", 0, "fail a job that runs longer than this many milliseconds")
	fl.StringVar(&f.scalerType, "scaler-type", "", "autoscaling rule: QUEUE_DELAY or REQUEST_COUNT")
	fl.IntVar(&f.scalerValue, "scaler-value", 0, "autoscaling threshold: seconds of queue delay, or requests per worker")
	fl.IntVar(&f.gpuCount, "gpu-count", 0, "GPUs per worker; 0 runs workers without a GPU")
	fl.StringSliceVar(&f.gpuTypes, "gpu-types", nil, "acceptable GPU models, comma-separated, in order of preference (default: any)")
	fl.IntVar(&f.memoryMB, "memory-mb", 0, "memory limit of each worker container in MiB (0: no limit)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit of each worker container, e.g. 1.5 (0: no limit)")
	fl.IntVar(&f.pidsLimit, "pids-limit", 0, "most processes in each worker container (default 4096)")
	fl.StringVar(&f.network, "network", "", "worker container network: host (default) or none")
	return cmd
}

// splitDash separates NAME from the worker command given after "--".
// command is nil when there was no "--".
func splitDash(cmd *cobra.Command, args []string) (pos, command []string) {
	if n := cmd.ArgsLenAtDash(); n >= 0 {
		return args[:n], args[n:]
	}
	return args, nil
}

// createSpec merges --file, NAME, the worker command and the set flags into
// the create request, in that order of precedence from lowest to highest.
func (a *app) createSpec(cmd *cobra.Command, args []string, f *createFlags) (*client.EndpointSpec, error) {
	spec := &client.EndpointSpec{}
	if f.file != "" {
		data, err := a.readFileArg(f.file)
		if err != nil {
			return nil, err
		}
		if spec, err = client.ParseEndpointSpec(data); err != nil {
			return nil, fmt.Errorf("--file %s: %w", f.file, err)
		}
	}
	pos, command := splitDash(cmd, args)
	if len(pos) == 1 {
		spec.Name = pos[0]
	}
	if spec.Name == "" {
		return nil, fmt.Errorf("missing endpoint NAME\nUsage: %s", cmd.UseLine())
	}
	if command != nil {
		if len(command) == 0 {
			return nil, errors.New(`nothing after "--": give the worker command, or leave out "--"`)
		}
		spec.Command = command
	}

	set := cmd.Flags().Changed
	if set("image") {
		spec.Image = f.image
	}
	if set("env") {
		if spec.Env == nil {
			spec.Env = make(map[string]string, len(f.env))
		}
		for _, kv := range f.env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("--env %q: want KEY=VALUE", kv)
			}
			spec.Env[k] = v
		}
	}
	if set("workers-min") {
		spec.WorkersMin = &f.workersMin
	}
	if set("workers-max") {
		spec.WorkersMax = &f.workersMax
	}
	if set("idle-timeout") {
		n := int(f.idleTimeout)
		spec.IdleTimeout = &n
	}
	if set("execution-timeout-ms") {
		spec.ExecutionTimeoutMs = &f.executionTimeoutMs
	}
	if set("scaler-type") {
		st := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(f.scalerType), "-", "_"))
		if st != client.ScalerQueueDelay && st != client.ScalerRequestCount {
			return nil, fmt.Errorf("--scaler-type %q: want %s or %s", f.scalerType, client.ScalerQueueDelay, client.ScalerRequestCount)
		}
		spec.ScalerType = st
	}
	if set("scaler-value") {
		spec.ScalerValue = &f.scalerValue
	}
	if set("gpu-count") {
		spec.GPUCount = &f.gpuCount
	}
	if set("memory-mb") {
		spec.MemoryMB = &f.memoryMB
	}
	if set("cpus") {
		spec.CPUs = &f.cpus
	}
	if set("pids-limit") {
		spec.PidsLimit = &f.pidsLimit
	}
	if set("network") {
		spec.Network = f.network
	}
	if set("gpu-types") {
		spec.GPUTypes = nil
		for _, t := range f.gpuTypes {
			if t = strings.TrimSpace(t); t != "" {
				spec.GPUTypes = append(spec.GPUTypes, t)
			}
		}
	}
	return spec, nil
}

// readFileArg reads a file, or stdin for "-".
func (a *app) readFileArg(name string) ([]byte, error) {
	if name == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading endpoint definition: %w", err)
	}
	return data, nil
}

func (a *app) endpointListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List endpoints",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.context(cmd)
			defer cancel()
			eps, err := c.ListEndpoints(ctx)
			if err != nil {
				return err
			}
			if a.jsonOut {
				// Always print the key, even when the daemon left it out
				// for an empty list, so that `jq '.endpoints[]'` works.
				raws := make([]json.RawMessage, len(eps))
				for i, e := range eps {
					raws[i] = e.Raw
				}
				return marshalJSON(a.stdout, struct {
					Endpoints []json.RawMessage `json:"endpoints"`
				}{raws})
			}
			if len(eps) == 0 {
				fmt.Fprintln(a.stderr, "No endpoints. Create one with: ember endpoint create NAME --image IMAGE")
				return nil
			}
			return writeEndpoints(a.stdout, eps)
		},
	}
}

func (a *app) endpointGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ENDPOINT",
		Short: "Show an endpoint, by ID or name",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.context(cmd)
			defer cancel()
			ep, err := c.ResolveEndpoint(ctx, args[0])
			if err != nil {
				return err
			}
			return a.printEndpoint(ep)
		},
	}
}

func (a *app) endpointDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ENDPOINT",
		Aliases: []string{"rm"},
		Short:   "Delete an endpoint, by ID or name",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.context(cmd)
			defer cancel()
			ep, err := c.ResolveEndpoint(ctx, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteEndpoint(ctx, ep.ID); err != nil {
				return err
			}
			if a.jsonOut {
				// The daemon answers a delete with an empty object.
				return writeJSON(a.stdout, []byte("{}"))
			}
			_, err = fmt.Fprintf(a.stdout, "Deleted endpoint %s (%s)\n", ep.ID, ep.Name)
			return err
		},
	}
}

func (a *app) printEndpoint(ep *client.Endpoint) error {
	if a.jsonOut {
		return writeJSON(a.stdout, ep.Raw)
	}
	return writeEndpoints(a.stdout, []client.Endpoint{*ep})
}

// secondsValue is a flag holding whole seconds. It takes a plain number of
// seconds, as the API does, or a Go duration, because "5m" is easier to get
// right than "300".
type secondsValue int

func (s *secondsValue) String() string { return strconv.Itoa(int(*s)) }
func (s *secondsValue) Type() string   { return "seconds" }

func (s *secondsValue) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return errors.New("must not be negative")
		}
		*s = secondsValue(n)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds or a duration such as 90s or 5m: %w", err)
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	if d%time.Second != 0 {
		return errors.New("must be whole seconds")
	}
	*s = secondsValue(d / time.Second)
	return nil
}
