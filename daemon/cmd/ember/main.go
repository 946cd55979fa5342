// Command ember is the command-line client of emberd, the Ember daemon.
//
// It manages endpoints, images, workers, GPUs and API keys through the
// daemon's admin API and runs jobs through its RunPod-compatible API, so
// that a machine running emberd can be driven without writing HTTP requests
// by hand.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultKeyFile is where emberd writes its admin key on first start.
const defaultKeyFile = "/var/lib/ember/api.key"

// defaultCAFile is where `emberd --tls auto` writes its CA certificate
// (DATA-DIR/tls/ca.pem, next to defaultKeyFile).
const defaultCAFile = "/var/lib/ember/tls/ca.pem"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one ember invocation and returns its exit code. Everything it
// touches is passed in, so tests drive the real command tree in-process and
// in parallel.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return newApp(stdin, stdout, stderr, getenv).execute(ctx, args)
}

// app is the state of one invocation: its streams, environment and global
// flags. A fresh app per run keeps invocations from leaking into each other.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	addr    string
	keyFile string
	jsonOut bool
	quiet   bool
	timeout time.Duration

	// keyFileSet records whether --api-key-file was given, because an
	// explicit flag beats EMBER_API_KEY while the default file does not.
	keyFileSet bool
	// keyFromEnv records where the key came from, so that a 401 points at
	// the right place to fix.
	keyFromEnv bool

	// caFile and fingerprint verify a daemon that serves TLS
	// (--ca-file, --tls-fingerprint). caFileSet and fingerprintSet record
	// whether they were given (flag or environment): only then does an
	// address without a scheme mean https://, and an unreadable CA file
	// is an error rather than skipped.
	caFile, fingerprint       string
	caFileSet, fingerprintSet bool
	// defaultCAFile is the --ca-file default; tests point it elsewhere so
	// that a CA file on the machine running them does not change them.
	defaultCAFile string
	// cl is the last client made, for messages naming the daemon's URL.
	cl *client.Client

	// pollInterval is the client's minimum gap between job polls; tests
	// lower it.
	pollInterval time.Duration
	// progress prints job state changes to stderr while `ember job run`
	// waits, and the upload bar of `ember image import`. It is on only when
	// stderr is a terminal (and neither --json nor --quiet is given; see
	// showProgress), so scripts and logs stay clean.
	progress bool
	// now is the clock of upload progress reports; tests stop it.
	now func() time.Time
}

func newApp(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	a := &app{
		stdin:         stdin,
		stdout:        stdout,
		stderr:        stderr,
		getenv:        getenv,
		pollInterval:  250 * time.Millisecond,
		now:           time.Now,
		defaultCAFile: defaultCAFile,
	}
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			a.progress = true
		}
	}
	return a
}

func (a *app) execute(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(a.stderr, "ember: %v\n", a.explain(err))
		return 1
	}
	return 0
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ember",
		Short: "Control emberd, the RunPod-Serverless-compatible Ember daemon",
		Long: `ember manages endpoints, images, workers, GPUs and API keys and runs
jobs on emberd, the Ember daemon.

The daemon's address comes from --addr or EMBER_ADDR (default ` + client.DefaultAddr + `).
The admin key is read from --api-key-file (default ` + defaultKeyFile + `);
EMBER_API_KEY, when set, is used instead of the default file.

TLS: an https:// address is verified with the CA in --ca-file
(EMBER_CA_FILE; default ` + defaultCAFile + `, used when readable), or by
--tls-fingerprint SHA256 (EMBER_TLS_FINGERPRINT), which pins the CA's (or
the server's) certificate and replaces CA and host name checks, for reaching
emberd from another machine by any address. An address without a scheme
means https:// when --ca-file or --tls-fingerprint (or their variables) is
given; otherwise, when the default CA file is readable, TLS if the daemon
speaks it and plain HTTP if not; otherwise plain HTTP.

Every command prints tables for people, or the daemon's JSON with --json.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			a.keyFileSet = cmd.Flags().Changed("api-key-file")
			a.caFileSet = cmd.Flags().Changed("ca-file") || a.getenv("EMBER_CA_FILE") != ""
			a.fingerprintSet = a.fingerprint != ""
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w\nRun '%s --help' for usage.", err, cmd.CommandPath())
	})

	addr := a.getenv("EMBER_ADDR")
	if addr == "" {
		addr = client.DefaultAddr
	}
	pf := root.PersistentFlags()
	caFile := a.getenv("EMBER_CA_FILE")
	if caFile == "" {
		caFile = a.defaultCAFile
	}
	pf.StringVar(&a.addr, "addr", addr, "emberd address, HOST:PORT or an http:// or https:// URL (env EMBER_ADDR)")
	pf.StringVar(&a.keyFile, "api-key-file", defaultKeyFile, "file holding the admin API key (env EMBER_API_KEY overrides the default file)")
	pf.StringVar(&a.caFile, "ca-file", caFile, "PEM file of the CA that signed emberd's TLS certificate, DATA-DIR/tls/ca.pem (env EMBER_CA_FILE; the default is used when readable; empty: the system's CAs)")
	pf.StringVar(&a.fingerprint, "tls-fingerprint", a.getenv("EMBER_TLS_FINGERPRINT"), "pin emberd's TLS certificate or its CA by SHA-256 fingerprint, instead of --ca-file and host name checks (env EMBER_TLS_FINGERPRINT)")
	pf.BoolVar(&a.jsonOut, "json", false, "print the daemon's JSON instead of tables")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print no progress (upload bar, job states) on stderr")
	pf.DurationVar(&a.timeout, "timeout", 0, "give up after this long, e.g. 30s or 5m (0: no limit)")

	root.AddCommand(a.statusCmd(), a.endpointCmd(), a.jobCmd(), a.imageCmd(), a.workerCmd(), a.gpuCmd(), a.keyCmd(), a.templateCmd(), a.versionCmd())
	// Kept from before "job" and "worker" gathered them. (No cobra command
	// groups: packaging's man page test reads "Available Commands:".)
	run, logs := a.jobRunCmd(), a.workerLogsCmd()
	run.Short += " (same as: ember job run)"
	logs.Short += " (same as: ember worker logs)"
	root.AddCommand(run, logs)
	return root
}

// exactArgs is cobra.ExactArgs with a message that shows the usage line,
// since "accepts 2 arg(s), received 1" alone does not say which are missing.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument(s), got %d\nUsage: %s",
				subcommandPath(cmd), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

// subcommandPath names a command without the root, for messages that are
// already prefixed with "ember: ".
func subcommandPath(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// groupRunE makes a command that only groups subcommands reject unknown
// subcommands; without a RunE cobra would print help and exit 0, hiding the
// typo from scripts.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q for %q\nRun '%s --help' for usage.",
			args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}

// showProgress says whether to draw progress on stderr: on a terminal,
// unless --json or --quiet.
func (a *app) showProgress() bool {
	return a.progress && !a.jsonOut && !a.quiet
}

// context bounds one command by --timeout.
func (a *app) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if a.timeout > 0 {
		return context.WithTimeout(cmd.Context(), a.timeout)
	}
	return context.WithCancel(cmd.Context())
}

// apiKey finds the admin key: an explicit --api-key-file first, then
// EMBER_API_KEY, then the default key file.
func (a *app) apiKey() (string, error) {
	if !a.keyFileSet {
		if k := strings.TrimSpace(a.getenv("EMBER_API_KEY")); k != "" {
			a.keyFromEnv = true
			return k, nil
		}
	}
	data, err := os.ReadFile(a.keyFile)
	if err != nil {
		reason := err
		var pe *fs.PathError
		if errors.As(err, &pe) {
			reason = pe.Err
		}
		hint := "set EMBER_API_KEY to the key or pass --api-key-file FILE"
		if errors.Is(err, fs.ErrPermission) {
			hint = "run ember as a user that can read it (e.g. with sudo), or " + hint
		}
		return "", &hintError{
			msg: fmt.Sprintf("cannot read API key file %s: %v; %s", a.keyFile, reason, hint),
			err: err,
		}
	}
	key := strings.TrimSpace(string(data))
	if key == "" {
		return "", fmt.Errorf("API key file %s is empty; set EMBER_API_KEY to the key or pass --api-key-file FILE", a.keyFile)
	}
	return key, nil
}

// client connects to the daemon with the configured address and key. When
// there is no key to read, the key-less /healthz probe says first whether
// emberd runs at all: "not running" is the more useful news, and the key
// error stands when it does.
func (a *app) client(ctx context.Context) (*client.Client, error) {
	key, err := a.apiKey()
	if err != nil {
		if down := a.unreachable(ctx); down != nil {
			return nil, down
		}
		return nil, err
	}
	return a.newClient(key)
}

// unreachable probes /healthz without a key and returns the explained
// error when the daemon cannot be reached (refused, no route, no answer
// in healthTimeout); nil when it answers, whatever the answer.
func (a *app) unreachable(ctx context.Context) error {
	c, err := a.newClient("")
	if err != nil {
		return nil // the address or TLS settings are wrong: the key error is no less true
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	_, err = c.Healthz(ctx)
	var ae *client.APIError
	if err == nil || errors.As(err, &ae) {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return nil // slow, not down (emberd holds requests while it recovers)
	}
	return a.explain(err)
}

// withClient runs fn with a client of the daemon and the command's context,
// which is bounded by --timeout and cancelled when fn returns.
func (a *app) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, cancel := a.context(cmd)
	defer cancel()
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	return fn(ctx, c)
}

// withEndpoint is withClient for commands on one endpoint: it resolves
// endpoint, an ID or name, before running fn.
func (a *app) withEndpoint(cmd *cobra.Command, endpoint string, fn func(ctx context.Context, c *client.Client, ep *client.Endpoint) error) error {
	return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
		ep, err := c.ResolveEndpoint(ctx, endpoint)
		if err != nil {
			return err
		}
		return fn(ctx, c, ep)
	})
}

// notFoundHint adds hint, on a line of its own, to a 404 from the daemon;
// other errors (and nil) pass unchanged.
func notFoundHint(err error, hint string) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("%w\n%s", err, hint)
	}
	return err
}

func (a *app) newClient(key string) (*client.Client, error) {
	opts := []client.Option{
		client.WithUserAgent("ember/" + cliVersion()),
		client.WithPollInterval(a.pollInterval),
	}
	tlsOpts, err := a.tlsOptions()
	if err != nil {
		return nil, err
	}
	c, err := client.New(a.addr, key, append(opts, tlsOpts...)...)
	if err != nil {
		return nil, err
	}
	a.cl = c
	return c, nil
}

// tlsOptions turns --ca-file and --tls-fingerprint into client options,
// including what an address without a scheme means (see the root's help).
func (a *app) tlsOptions() ([]client.Option, error) {
	if _, err := client.New(a.addr, ""); err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	explicit := a.caFileSet || a.fingerprintSet
	if explicit && strings.HasPrefix(strings.ToLower(a.addr), "http://") {
		return nil, fmt.Errorf("--addr %s is plain HTTP, but --ca-file or --tls-fingerprint (or EMBER_CA_FILE, EMBER_TLS_FINGERPRINT) asks for TLS: use https://%s, or drop them",
			a.addr, a.addr[len("http://"):])
	}
	var opts []client.Option
	if a.fingerprintSet {
		if _, err := client.ParseFingerprint(a.fingerprint); err != nil {
			return nil, fmt.Errorf("--tls-fingerprint: %w", err)
		}
		opts = append(opts, client.WithFingerprint(a.fingerprint))
	}
	// The default file is used only when it is there and readable: a
	// daemon without --tls auto has none. An empty --ca-file leaves the
	// system's CAs.
	caFile := false
	if a.caFile != "" {
		f, err := os.Open(a.caFile)
		switch {
		case err == nil:
			f.Close()
			caFile = true
		case a.caFileSet:
			reason := err
			var pe *fs.PathError
			if errors.As(err, &pe) {
				reason = pe.Err
			}
			return nil, &hintError{
				msg: fmt.Sprintf("cannot read CA file %s (--ca-file or EMBER_CA_FILE): %v; copy DATA-DIR/tls/ca.pem from the daemon's machine, or pin the daemon with --tls-fingerprint", a.caFile, reason),
				err: err,
			}
		}
	}
	if caFile {
		opts = append(opts, client.WithCAFile(a.caFile))
	}
	switch {
	case explicit:
		opts = append(opts, client.WithSchemeless(client.SchemeHTTPS))
	case caFile:
		opts = append(opts, client.WithSchemeless(client.SchemeAuto))
	}
	return opts, nil
}

// hintError replaces a low-level error's text with advice while keeping the
// original reachable through errors.Is and errors.As.
type hintError struct {
	msg string
	err error
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }

// explain turns the failures people actually hit (daemon down, wrong key,
// deadline) into messages that say what to do about them.
func (a *app) explain(err error) error {
	var he *hintError
	if errors.As(err, &he) {
		return err // already explained
	}
	var oe *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &hintError{
			msg: fmt.Sprintf("emberd is not running at %s (connection refused): start it with `sudo systemctl start emberd` (or `make run` from a checkout)", a.baseURL()),
			err: err,
		}
	case errors.As(err, &oe) && oe.Op == "dial":
		return &hintError{msg: fmt.Sprintf("cannot reach emberd at %s: %v", a.baseURL(), oe), err: err}
	case client.IsUnauthorized(err):
		// Which key was refused (the key file actually read, flag or
		// default, or EMBER_API_KEY), then where the right one is.
		which := "the API key in " + a.keyFile
		hint := fmt.Sprintf("it is not a key of the emberd at %s: pass that daemon's admin key (DATA-DIR/api.key of its --data-dir) with --api-key-file, or a key it issued in EMBER_API_KEY", a.baseURL())
		if a.keyFromEnv {
			which = "the API key in EMBER_API_KEY"
			hint = fmt.Sprintf("set EMBER_API_KEY to a valid key, or unset it to read the key file %s (--api-key-file)", a.keyFile)
		}
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Reason == "expired" {
			id := ""
			if ae.KeyID != "" {
				id = " (" + ae.KeyID + ")"
			}
			return &hintError{
				msg: fmt.Sprintf("the daemon refused %s%s: it expired at %s; ask an admin for a new one (ember key create NAME --scope ... --expires ...)", which, id, formatTime(ae.ExpiresAt)),
				err: err,
			}
		}
		return &hintError{msg: fmt.Sprintf("the daemon refused %s: %s", which, hint), err: err}
	case errors.Is(err, context.DeadlineExceeded) && a.timeout > 0:
		return &hintError{msg: fmt.Sprintf("timed out after %s (raise --timeout): %v", a.timeout, err), err: err}
	case errors.Is(err, context.Canceled):
		return &hintError{msg: "interrupted", err: err}
	}
	return err
}

// baseURL is the daemon's address as a URL, for messages.
func (a *app) baseURL() string {
	if a.cl != nil {
		return a.cl.BaseURL()
	}
	if c, err := client.New(a.addr, ""); err == nil {
		return c.BaseURL()
	}
	return a.addr
}

// cliVersion is the linker-set version, or the module version when ember
// was installed with "go install".
func cliVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
