package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Manage the daemon's container images",
		Long: `Manage the images that endpoints run with the runc runtime.

Images are imported without a registry: from "docker save" tarballs, OCI
archives and OCI image layout directories, as files or from a pipe (load);
or pulled from a registry on the daemon's network. Layers and archives may
be gzip- or zstd-compressed. Times are shown in UTC.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.imageImportCmd(), a.imageLoadCmd(), a.imagePullCmd(), a.imageListCmd(), a.imageInspectCmd(), a.imageRemoveCmd())
	return cmd
}

func (a *app) imagePullCmd() *cobra.Command {
	var opts client.PullOptions
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Have the daemon pull an image from a registry on its network",
		Long: `Have the daemon pull REF from a registry it can reach (the OCI
distribution API, registry v2) and import it, verifying every digest.

REF names the registry: HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]; the tag
defaults to "latest". There is no default registry. From a multi-platform
image the linux image for the daemon's architecture is pulled. An image
pulled by digest alone is unnamed; address it by digest or ID.

The daemon speaks HTTPS unless --plain-http allows unencrypted HTTP, and
trusts a registry's own CA and presents a client certificate from its
certs.d folder (emberd --registry-certs-dir, HOST[:PORT]/ca.crt,
client.cert, client.key). With --username, the password is read from stdin
(--password-stdin); without, the daemon's docker config.json
(emberd --registry-auth-file) gives the credentials, if any. Connection
errors, timeouts, 429 and 5xx answers are retried, 4 attempts in all per
request, with backoff; each retry is logged by the daemon.`,
		Example: `  ember image pull registry.lan:5000/acme/echo:1
  ember image pull 10.0.0.5:5000/acme/echo:1 --plain-http
  echo "$TOKEN" | ember image pull registry.lan/acme/echo:1 --username ci --password-stdin`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if passwordStdin {
				if opts.Username == "" {
					return fmt.Errorf("--password-stdin needs --username")
				}
				b, err := io.ReadAll(io.LimitReader(a.stdin, 64<<10))
				if err != nil {
					return fmt.Errorf("reading password from stdin: %w", err)
				}
				opts.Password = strings.TrimRight(string(b), "\r\n")
			} else if opts.Username != "" {
				return fmt.Errorf("--username needs --password-stdin (the password is read from stdin)")
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				img, err := c.PullImage(ctx, args[0], opts)
				if err != nil {
					return err
				}
				return a.printImages([]client.Image{*img}, img.Raw)
			})
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&opts.PlainHTTP, "plain-http", false, "let the daemon reach the registry over unencrypted HTTP")
	fl.StringVar(&opts.Username, "username", "", "authenticate to the registry as `USER`")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the registry password from stdin")
	return cmd
}

func (a *app) imageImportCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import FILE|DIR",
		Short: "Upload an image archive or OCI layout to the daemon and import it",
		Long: `Upload an image to the daemon, which verifies and imports it.

FILE is a "docker save" tarball or an OCI archive, compressed with gzip or
zstd or not, sent as it is. DIR is an OCI image layout, sent as an OCI
archive packed on the fly. The daemon may be on another machine: the image
travels in the request. To read an archive from a pipe, use "ember image
load".

The image is imported under the names the archive gives, or under --name,
which is needed when the archive names no image and picks one when it holds
several.

On a terminal a progress bar shows the upload on stderr (not with --json or
--quiet).`,
		Example: `  docker save ghcr.io/acme/echo:1 -o echo.tar && ember image import echo.tar
  ember image import ./echo-layout --name acme/echo:1`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			body, size, err := client.ImageArchive(args[0])
			if err != nil {
				return fmt.Errorf("reading image: %w", err)
			}
			defer body.Close()
			return a.uploadImage(cmd, c, body, size, filepath.Base(filepath.Clean(args[0])), name,
				"ember image import "+args[0]+" --name NAME:TAG")
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "import the image under `NAME` (e.g. acme/echo:1)")
	return cmd
}

func (a *app) imageLoadCmd() *cobra.Command {
	var name, input string
	cmd := &cobra.Command{
		Use:   "load [-i FILE]",
		Short: "Upload an image archive from standard input or a file to the daemon and import it",
		Long: `Read a "docker save" tarball or an OCI archive (compressed with gzip or
zstd or not) from standard input, or from FILE with -i, and stream it to the
daemon, which verifies and imports it, as "docker load" does. The archive is
sent as it is read, never held in memory, so it can come straight from
"docker save" on another machine. Directories (OCI layouts) are imported
with "ember image import DIR".

The image is imported under the names the archive gives, or under --name,
which is needed when the archive names no image and picks one when it holds
several. The daemon refuses an archive over its upload limit (64 GiB) with
a message naming the limit.

On a terminal a progress bar shows the bytes sent on stderr (not with --json
or --quiet); otherwise only the imported image is printed.`,
		Example: `  docker save ghcr.io/acme/echo:1 | ssh appliance ember image load
  docker save ghcr.io/acme/echo:1 | zstd | ember image load
  ember image load -i echo.tar.zst --name acme/echo:1`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, size, label, err := a.loadInput(input)
			if err != nil {
				return err
			}
			defer body.Close()
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			hint := "ember image load --name NAME:TAG"
			if input != "" && input != "-" {
				hint = "ember image load -i " + input + " --name NAME:TAG"
			}
			return a.uploadImage(cmd, c, body, size, label, name, hint)
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read the archive from `FILE` instead of standard input")
	cmd.Flags().StringVar(&name, "name", "", "import the image under `NAME` (e.g. acme/echo:1)")
	return cmd
}

// loadInput opens what "image load" reads: FILE, or standard input ("" or
// "-"). size is the bytes still to read when that is known (a regular
// file, also as a redirected stdin), else -1: the upload is then sent in
// chunks as it is read. An empty or interactive standard input is refused
// before anything is sent.
func (a *app) loadInput(input string) (rc io.ReadCloser, size int64, label string, err error) {
	if input != "" && input != "-" {
		f, err := os.Open(input)
		if err != nil {
			return nil, 0, "", fmt.Errorf("reading image: %w", err)
		}
		st, err := f.Stat()
		if err == nil && !st.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file (import an OCI layout directory with: ember image import %s)", input, input)
		}
		if err != nil {
			f.Close()
			return nil, 0, "", fmt.Errorf("reading image: %w", err)
		}
		return f, st.Size(), filepath.Base(input), nil
	}
	size = -1
	if f, ok := a.stdin.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			// Reading would wait for someone to type an archive.
			return nil, 0, "", errors.New("standard input is a terminal: pipe an image archive in (docker save IMAGE | ember image load) or give one with -i FILE")
		}
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				size = st.Size() - off
			}
		}
	}
	br := bufio.NewReaderSize(a.stdin, 64<<10)
	if _, err := br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, "", errors.New("standard input is empty: pipe an image archive in (docker save IMAGE | ember image load) or give one with -i FILE")
		}
		return nil, 0, "", fmt.Errorf("reading standard input: %w", err)
	}
	return io.NopCloser(br), size, "stdin", nil
}

// uploadImage streams an archive of size bytes (-1: unknown) to the daemon,
// with a progress bar labelled label on a terminal, and prints the image.
// hint is the command that gives an unnamed image a name.
func (a *app) uploadImage(cmd *cobra.Command, c *client.Client, body io.Reader, size int64, label, name, hint string) error {
	ctx, cancel := a.context(cmd)
	defer cancel()
	upload := body
	var bar *progressBar
	if a.showProgress() {
		bar = newProgressBar(a.stderr, label, size, a.now)
		upload = bar.Reader(body)
	}
	img, err := c.UploadImage(ctx, upload, size, name, nil)
	if bar != nil {
		bar.finish(err == nil) // before anything else is printed
	}
	if err != nil {
		if name == "" && strings.Contains(err.Error(), "image name required") {
			return fmt.Errorf("%w\nGive it one with: %s", err, hint)
		}
		return err
	}
	return a.printImages([]client.Image{*img}, img.Raw)
}

func (a *app) imageListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				imgs, err := c.ListImages(ctx)
				if err != nil {
					return err
				}
				return printList(a, "images", imgs, func(img client.Image) json.RawMessage { return img.Raw }, writeImages,
					"No images. Import one with: ember image import FILE")
			})
		},
	}
}

func (a *app) imageInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an image, by name, ID or digest",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				img, err := c.GetImage(ctx, args[0])
				if err != nil {
					return refHint(err)
				}
				if a.jsonOut {
					return writeJSON(a.stdout, img.Raw)
				}
				return writeImageDetail(a.stdout, img)
			})
		},
	}
}

func (a *app) imageRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "remove REF",
		Aliases: []string{"rm"},
		Short:   "Remove an image name, or a whole image by ID",
		Long: `Remove REF. A name removes only that name; the image stays while other
names point at it. An ID or digest removes the image with all its names.
The daemon then frees the disk space no image uses. An image that an
endpoint uses is refused.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				d, err := c.DeleteImage(ctx, args[0])
				if err != nil {
					return refHint(err)
				}
				if a.jsonOut {
					return writeJSON(a.stdout, d.Raw)
				}
				var freed string
				switch {
				case d.LayersRemoved > 0:
					freed = fmt.Sprintf("freed %d layer%s, %s", d.LayersRemoved, plural(d.LayersRemoved), formatBytes(d.BytesFreed))
				case d.BytesFreed > 0:
					freed = "freed " + formatBytes(d.BytesFreed) + "; its layers are still in use"
				default:
					freed = "nothing freed: its layers are still in use"
				}
				_, err = fmt.Fprintf(a.stdout, "Removed image %s (%s)\n", args[0], freed)
				return err
			})
		},
	}
}

// refHint explains an ambiguous ID: images that differ only in their
// manifest (say, the same image saved by docker and as an OCI layout) share
// their config and so their ID.
func refHint(err error) error {
	if strings.Contains(err.Error(), "is ambiguous") {
		return fmt.Errorf("%w\nSeveral images share that ID; name one by a name or by its manifest digest (the Digest line of \"ember image inspect NAME\")", err)
	}
	return err
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// printImages prints images as a table, or raw (the daemon's JSON) with
// --json.
func (a *app) printImages(imgs []client.Image, raw json.RawMessage) error {
	if a.jsonOut {
		return writeJSON(a.stdout, raw)
	}
	return writeImages(a.stdout, imgs)
}

// writeImages prints the image table in the daemon's order.
func writeImages(w io.Writer, imgs []client.Image) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAMES\tSIZE\tLAYERS\tCREATED\tIMPORTED")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", shortID(img.ID), cell(strings.Join(img.Names, ",")),
			formatBytes(img.Size), len(img.Layers), formatTime(img.Created), formatTime(img.Imported))
	}
	return tw.Flush()
}

// writeImageDetail prints one image, a field per line.
func writeImageDetail(w io.Writer, img *client.Image) error {
	fw := newFieldWriter(w)
	row := fw.row
	row("ID:", cell(img.ID))
	row("Names:", cells(img.Names)...)
	row("Digest:", cell(img.Digest))
	row("Size:", fmt.Sprintf("%s (%d bytes)", formatBytes(img.Size), img.Size))
	row("Created:", formatTime(img.Created))
	row("Imported:", formatTime(img.Imported))
	row("Entrypoint:", argv(img.Config.Entrypoint))
	row("Cmd:", argv(img.Config.Cmd))
	row("WorkingDir:", cell(img.Config.WorkingDir))
	row("User:", cell(img.Config.User))
	row("Env:", cells(img.Config.Env)...)
	row("Layers:", cells(img.Layers)...)
	return fw.Flush()
}

// argv shows a command line as "ember endpoint create" would take it.
func argv(args []string) string {
	if len(args) == 0 {
		return "-"
	}
	q := make([]string, len(args))
	for i, s := range args {
		q[i] = quoteArg(s)
	}
	return strings.Join(q, " ")
}

// shortID is Docker's short image ID: 12 hex digits.
func shortID(id string) string {
	hex := strings.TrimPrefix(id, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return cell(hex)
}

// formatTime shows an RFC 3339 time in UTC to the minute.
func formatTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return cell(s)
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// formatBytes prints a size in binary units with one decimal ("1.5 MiB").
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	s := strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + " " + string("KMGTPE"[exp]) + "iB"
}
