package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
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
	cmd.AddCommand(a.endpointCreateCmd(), a.endpointListCmd(), a.endpointGetCmd(), a.endpointUpdateCmd(),
		a.endpointDeleteCmd(), a.endpointStatsCmd())
	return cmd
}

// createFlags are the endpoint fields settable from the command line. Only
// the flags a user actually sets are sent, so everything else gets the
// daemon's defaults (on create) or keeps its value (on update).
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
	initTimeout        secondsValue
	flashboot          bool
	init               bool
	flashbootWindow    secondsValue
	maxAttempts        int
	gpuMemoryMB        int
	gpuPark            string
	gpuParkDelay       secondsValue
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
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ep, err := c.CreateEndpoint(ctx, spec)
				if err != nil {
					return err
				}
				return a.printEndpoint(ep)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "read a JSON endpoint definition from `FILE` (\"-\" for stdin)")
	addSpecFlags(cmd, &f)
	return cmd
}

// addSpecFlags defines the endpoint field flags shared by create and
// update.
func addSpecFlags(cmd *cobra.Command, f *createFlags) {
	fl := cmd.Flags()
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
	fl.Var(&f.initTimeout, "init-timeout", "replace a new worker that has not made its first job-take or ping after this long: seconds or a duration such as 10m (default 7m)")
	fl.BoolVar(&f.init, "init", true, "run emberd's init as PID 1 of each worker container, in front of the image's entrypoint: it passes stop signals on to the entrypoint's process group and reaps zombies (--init=false: the entrypoint is PID 1)")
	fl.BoolVar(&f.flashboot, "flashboot", false, "freeze idle workers instead of stopping them, so that a job revives one in milliseconds (--flashboot=false turns it off)")
	fl.Var(&f.flashbootWindow, "flashboot-window", "stop a frozen worker after this long: seconds or a duration such as 10m (default 5m)")
	fl.IntVar(&f.maxAttempts, "max-attempts", 0, "times a job is handed to a worker before it fails when its workers keep dying (0: the daemon's --max-attempts)")
	fl.IntVar(&f.gpuMemoryMB, "gpu-memory-mb", 0, "place workers only on GPUs with at least this many MiB free (0: any)")
	fl.StringVar(&f.gpuPark, "gpu-park", "", "move an idle worker's GPU state to host memory and give its GPU away, to revive in seconds: never (default), onReclaim (when another endpoint needs the GPU) or idle (also after --gpu-park-delay)")
	fl.Var(&f.gpuParkDelay, "gpu-park-delay", "with --gpu-park idle, park a worker frozen this long: seconds or a duration such as 2m (default 1m)")
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
	if err := applySpecFlags(cmd, f, spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// applySpecFlags copies the flags that were given into spec. --env adds to
// the variables spec already has.
func applySpecFlags(cmd *cobra.Command, f *createFlags, spec *client.EndpointSpec) error {
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
				return fmt.Errorf("--env %q: want KEY=VALUE", kv)
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
			return fmt.Errorf("--scaler-type %q: want %s or %s", f.scalerType, client.ScalerQueueDelay, client.ScalerRequestCount)
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
	if set("init-timeout") {
		n := int(f.initTimeout)
		spec.InitTimeout = &n
	}
	if set("flashboot") {
		spec.Flashboot = &f.flashboot
	}
	if set("init") {
		spec.Init = &f.init
	}
	if set("flashboot-window") {
		n := int(f.flashbootWindow)
		spec.FlashbootWindow = &n
	}
	if set("max-attempts") {
		spec.MaxAttempts = &f.maxAttempts
	}
	if set("gpu-memory-mb") {
		spec.GPUMemoryMB = &f.gpuMemoryMB
	}
	if set("gpu-park") {
		spec.GPUPark = f.gpuPark
	}
	if set("gpu-park-delay") {
		n := int(f.gpuParkDelay)
		spec.GPUParkDelay = &n
	}
	return nil
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

// noEndpoints is what listings of endpoints print, on stderr, for none.
const noEndpoints = "No endpoints. Create one with: ember endpoint create NAME --image IMAGE"

func (a *app) endpointListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List endpoints",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				eps, err := c.ListEndpoints(ctx)
				if err != nil {
					return err
				}
				return printList(a, "endpoints", eps, func(e client.Endpoint) json.RawMessage { return e.Raw }, writeEndpoints, noEndpoints)
			})
		},
	}
}

func (a *app) endpointGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ENDPOINT",
		Short: "Show an endpoint, by ID or name",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withEndpoint(cmd, args[0], func(_ context.Context, _ *client.Client, ep *client.Endpoint) error {
				return a.printEndpoint(ep)
			})
		},
	}
}

func (a *app) endpointUpdateCmd() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "update ENDPOINT [flags] [-- COMMAND ARG...]",
		Short: "Change an endpoint, by ID or name",
		Long: `Change the fields of ENDPOINT (an ID or name) given as flags, and a new worker
command when one follows "--"; every other field keeps its value. --env adds
or changes variables and keeps the others. New values apply to workers
started from now on.`,
		Example: `  ember endpoint update echo --workers-max 4 --idle-timeout 2m
  ember endpoint update sd --flashboot --flashboot-window 10m
  ember endpoint update sd -- python -u handler.py --fp16`,
		Args: func(cmd *cobra.Command, args []string) error {
			if pos, _ := splitDash(cmd, args); len(pos) != 1 {
				return fmt.Errorf("%s takes one ENDPOINT, got %d arguments (put the worker command after \"--\")\nUsage: %s",
					subcommandPath(cmd), len(pos), cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, command := splitDash(cmd, args)
			spec := &client.EndpointSpec{}
			if command != nil {
				if len(command) == 0 {
					return errors.New(`nothing after "--": give the worker command, or leave out "--"`)
				}
				spec.Command = command
			}
			if err := applySpecFlags(cmd, &f, spec); err != nil {
				return err
			}
			if reflect.ValueOf(*spec).IsZero() {
				return fmt.Errorf("nothing to change: give at least one flag, or a worker command after \"--\"\nUsage: %s", cmd.UseLine())
			}
			return a.withEndpoint(cmd, pos[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
				if spec.Env != nil {
					// The daemon replaces the whole map; keep the variables
					// the flags do not name.
					for k, v := range ep.Env {
						if _, ok := spec.Env[k]; !ok {
							spec.Env[k] = v
						}
					}
				}
				ep, err := c.UpdateEndpoint(ctx, ep.ID, spec)
				if err != nil {
					return err
				}
				return a.printEndpoint(ep)
			})
		},
	}
	addSpecFlags(cmd, &f)
	return cmd
}

func (a *app) endpointDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ENDPOINT",
		Aliases: []string{"rm"},
		Short:   "Delete an endpoint, by ID or name",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withEndpoint(cmd, args[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
				if err := c.DeleteEndpoint(ctx, ep.ID); err != nil {
					return err
				}
				if a.jsonOut {
					// The daemon answers a delete with an empty object.
					return writeJSON(a.stdout, []byte("{}"))
				}
				_, err := fmt.Fprintf(a.stdout, "Deleted endpoint %s (%s)\n", ep.ID, ep.Name)
				return err
			})
		},
	}
}

func (a *app) printEndpoint(ep *client.Endpoint) error {
	if a.jsonOut {
		return writeJSON(a.stdout, ep.Raw)
	}
	return writeEndpointDetail(a.stdout, ep)
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

// minWatch is the shortest --watch interval: each refresh asks the daemon
// for every endpoint's stats.
const minWatch = 100 * time.Millisecond

func (a *app) endpointStatsCmd() *cobra.Command {
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "stats [ENDPOINT...]",
		Short: "Show job and worker metrics of endpoints, by ID or name",
		Long: `Show the metrics of each ENDPOINT (an ID or name), or of every endpoint when
none is given: jobs queued and in progress now, jobs finished by status and
workers by state, and the p50/p90/p99 of four durations in milliseconds:

  DELAY       a job's submission to its take by a worker
  EXECUTION   a job's take to its end
  COLD_START  a new worker's start to its first job-take or ping
  REVIVAL     a frozen (FlashBoot) worker's revival until it runs again

Quantiles are over each endpoint's most recent 1024 samples, counters since
the daemon started; "-" means no sample yet. --json prints the daemon's stats
objects as {"stats": [...]}. --watch redraws every DURATION until Ctrl-C.`,
		Example: `  ember endpoint stats
  ember endpoint stats echo sd --watch 2s
  ember endpoint stats echo --json`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if watch != 0 && watch < minWatch {
				return fmt.Errorf("--watch %s: want at least %s", watch, minWatch)
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ids, err := a.resolveEndpoints(cmd, c, args)
			if err != nil {
				return err
			}
			if watch == 0 {
				return a.showStats(cmd, c, ids)
			}
			return a.watchStats(cmd, c, ids, watch)
		},
	}
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "redraw every `DURATION` (e.g. 2s) until Ctrl-C")
	return cmd
}

// resolveEndpoints turns IDs and names into IDs, once, in the order given
// and without repeats. No arguments gives nil: every endpoint.
func (a *app) resolveEndpoints(cmd *cobra.Command, c *client.Client, args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	ctx, cancel := a.context(cmd)
	defer cancel()
	var ids []string
	for _, arg := range args {
		ep, err := c.ResolveEndpoint(ctx, arg)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ids, ep.ID) {
			ids = append(ids, ep.ID)
		}
	}
	return ids, nil
}

// fetchStats gets the stats of ids, or of every endpoint (in the daemon's
// order, as "ember endpoint list") when ids is nil.
func (a *app) fetchStats(cmd *cobra.Command, c *client.Client, ids []string) ([]client.EndpointStats, error) {
	ctx, cancel := a.context(cmd)
	defer cancel()
	all := ids == nil
	if all {
		eps, err := c.ListEndpoints(ctx)
		if err != nil {
			return nil, err
		}
		for _, e := range eps {
			ids = append(ids, e.ID)
		}
	}
	out := make([]client.EndpointStats, 0, len(ids))
	for _, id := range ids {
		st, err := c.EndpointStats(ctx, id)
		if all && client.IsNotFound(err) {
			continue // deleted since the list
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (a *app) showStats(cmd *cobra.Command, c *client.Client, ids []string) error {
	sts, err := a.fetchStats(cmd, c, ids)
	if err != nil {
		return err
	}
	return printList(a, "stats", sts, func(st client.EndpointStats) json.RawMessage { return st.Raw }, writeStats, noEndpoints)
}

// watchStats redraws the stats every interval until Ctrl-C, which ends it
// with status 0. On a terminal each refresh replaces the screen; otherwise
// tables follow each other, each under a timestamp, and --json prints one
// object per refresh.
func (a *app) watchStats(cmd *cobra.Command, c *client.Client, ids []string, interval time.Duration) error {
	tty := isTerminal(a.stdout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for first := true; ; first = false {
		if !a.jsonOut {
			switch {
			case tty:
				io.WriteString(a.stdout, "\x1b[H\x1b[2J") // home, clear screen
			case !first:
				io.WriteString(a.stdout, "\n")
			}
			fmt.Fprintf(a.stdout, "%s  every %s\n\n", a.now().UTC().Format("2006-01-02 15:04:05"), interval)
		}
		err := a.showStats(cmd, c, ids)
		if cmd.Context().Err() != nil {
			return nil // Ctrl-C ends watching; that is not a failure
		}
		if err != nil {
			return err
		}
		select {
		case <-cmd.Context().Done():
			return nil
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
