package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) jobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "job",
		Aliases: []string{"jobs"},
		Short:   "Run, inspect, stream, cancel and retry jobs",
		Long: `Run and manage jobs through the daemon's RunPod-compatible API
(/v2/ENDPOINT/...). ENDPOINT is an endpoint's ID or name; JOB is a job ID
as "ember job run" or a RunPod client printed it.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(a.jobRunCmd(), a.jobStatusCmd(), a.jobStreamCmd(), a.jobCancelCmd(), a.jobRetryCmd(), a.jobPurgeCmd())
	return cmd
}

func (a *app) jobRunCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run ENDPOINT JSON",
		Short: "Run a job and wait for its output",
		Long: `Run a job on ENDPOINT (an ID or name) and wait until it finishes.

JSON is the job's input, or a full request body when it is an object with an
"input" key (to pass "webhook" or "policy" too). "-" reads it from stdin.

On COMPLETED the output is printed as JSON. On FAILED, CANCELLED or
TIMED_OUT the status and error go to stderr and ember exits with status 1.
--json prints the final status object instead of the output.

While it waits, the job's id and state (IN_QUEUE, IN_PROGRESS) and how long
it has waited are shown on stderr: a live line on a terminal, a line per
change otherwise; -q hides them. Interrupted (Ctrl-C), ember exits with
status 1 and prints the job's id and how to follow or cancel it: the job
goes on without ember.

"ember run" is the same command.`,
		Example: `  ember job run echo '{"prompt": "hello"}'
  ember job run echo '"just a string"'
  ember run echo - < request.json`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.requestBody(args[1])
			if err != nil {
				return err
			}
			return a.withEndpoint(cmd, args[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
				st, err := a.runJob(ctx, c, ep, body, args[0])
				if err != nil {
					return err
				}
				if a.jsonOut {
					if err := writeJSON(a.stdout, st.Raw); err != nil {
						return err
					}
				}
				if st.Status != client.StatusCompleted {
					return jobFailure(st)
				}
				if a.jsonOut {
					return nil
				}
				return writeJSON(a.stdout, st.Output)
			})
		},
	}
}

// jobFailure describes a job that ended without completing.
func jobFailure(st *client.JobStatus) error {
	msg := st.Error
	if msg == "" {
		msg = "no error message"
	}
	return fmt.Errorf("job %s %s: %s", st.ID, st.Status, msg)
}

// requestBody reads the JSON argument of "ember job run" and wraps it as
// the job input unless it is already a full request body.
func (a *app) requestBody(arg string) (json.RawMessage, error) {
	data := []byte(arg)
	if arg == "-" {
		var err error
		if data, err = io.ReadAll(a.stdin); err != nil {
			return nil, fmt.Errorf("reading input from stdin: %w", err)
		}
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("input is not valid JSON (%w); quote strings ('\"hello\"') or pass an object ('{\"prompt\": \"hello\"}')", err)
	}
	return client.RequestBody(data)
}

// runJob queues a job and waits for its end, showing its state on stderr
// (see jobWatch) unless --quiet. endpoint is the name the user gave, for
// the commands it suggests. An interrupt or a failure to keep waiting says
// which job goes on and how to follow or cancel it.
func (a *app) runJob(ctx context.Context, c *client.Client, ep *client.Endpoint, body json.RawMessage, endpoint string) (*client.JobStatus, error) {
	st, err := c.Submit(ctx, ep.ID, body)
	if err != nil {
		return nil, err
	}
	var prog *jobWatch
	update, poll := func(*client.JobStatus) {}, client.MaxWait
	if !a.quiet {
		prog = newJobWatch(a.stderr, a.progress, a.now)
		update, poll = prog.update, jobPoll
		prog.update(st)
		prog.start()
	}
	st, err = c.Wait(ctx, ep.ID, st, poll, update)
	if prog != nil {
		prog.stop()
	}
	var we *client.WaitError
	if errors.As(err, &we) {
		follow := fmt.Sprintf("Follow it with: ember job status %s %s\nCancel it with: ember job cancel %s %s", endpoint, we.Last.ID, endpoint, we.Last.ID)
		last := "last status " + we.Last.Status
		if prog != nil {
			last = prog.summary()
		}
		if errors.Is(err, context.Canceled) {
			return nil, &hintError{msg: fmt.Sprintf("interrupted; job %s goes on (%s)\n%s", we.Last.ID, last, follow), err: err}
		}
		// The job exists and may still finish; say how to find out
		// rather than leaving people to resubmit it.
		return nil, fmt.Errorf("stopped waiting for job %s (%s): %w\n%s", we.Last.ID, last, a.explain(we.Err), follow)
	}
	return st, err
}

// jobStatusRunE is the RunE of the commands "ENDPOINT JOB" that do one
// thing to a job and print the job's status that the daemon answers with.
// op is a method expression such as (*client.Client).Cancel.
func (a *app) jobStatusRunE(op func(*client.Client, context.Context, string, string) (*client.JobStatus, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return a.withEndpoint(cmd, args[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
			st, err := op(c, ctx, ep.ID, args[1])
			if err != nil {
				return jobNotFound(err, args[0], args[1])
			}
			return a.printJobStatus(st)
		})
	}
}

// jobNotFound explains a 404 for a job.
func jobNotFound(err error, endpoint, job string) error {
	if client.IsNotFound(err) {
		return &hintError{msg: fmt.Sprintf("no job %q on endpoint %s (or its result has expired)", job, endpoint), err: err}
	}
	return err
}

func (a *app) jobStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status ENDPOINT JOB",
		Short: "Show a job's status",
		Long:  "Show the status of job JOB on ENDPOINT (an ID or name), without waiting.",
		Args:  exactArgs(2),
		RunE:  a.jobStatusRunE((*client.Client).Status),
	}
}

// printJobStatus prints a status object as a table, or raw with --json.
func (a *app) printJobStatus(st *client.JobStatus) error {
	if a.jsonOut {
		return writeJSON(a.stdout, st.Raw)
	}
	return writeJobStatus(a.stdout, st)
}

func (a *app) jobStreamCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stream ENDPOINT JOB",
		Short: "Print a job's streamed output until it ends",
		Long: `Follow the stream of job JOB on ENDPOINT: print the output of every
chunk the job yields (a handler that is a generator), one JSON value per
line, until the job ends. Chunks are handed out once: what another client
has read from the stream is not printed again.

When the job ends FAILED, CANCELLED or TIMED_OUT its status and error go to
stderr and ember exits with status 1. With --json each line is the chunk
object as the daemon sent it ({"output":...}), and the last line is the
job's final status object.`,
		Example: `  ember job stream llm 0f6c1d2e-e1
  ember job stream llm 0f6c1d2e-e1 --json | jq -r .output`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withEndpoint(cmd, args[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
				_, err := c.FollowStream(ctx, ep.ID, args[1], func(ch client.StreamChunk) error {
					line := ch.Output
					if a.jsonOut {
						line = ch.Raw
					}
					return writeLine(a.stdout, line)
				})
				if err != nil {
					return jobNotFound(err, args[0], args[1])
				}
				st, err := c.Status(ctx, ep.ID, args[1])
				if err != nil {
					return jobNotFound(err, args[0], args[1])
				}
				if a.jsonOut {
					if err := writeLine(a.stdout, st.Raw); err != nil {
						return err
					}
				}
				if st.Status != client.StatusCompleted {
					return jobFailure(st)
				}
				return nil
			})
		},
	}
}

// writeLine prints a JSON value compacted onto one line.
func writeLine(w io.Writer, raw json.RawMessage) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return fmt.Errorf("formatting JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func (a *app) jobCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ENDPOINT JOB",
		Short: "Cancel a queued or running job",
		Long: `Cancel job JOB on ENDPOINT. A queued job is removed from the queue; a
running one ends CANCELLED and its worker is told to stop it. A job that has
already finished keeps its status. Prints the job's status afterwards.`,
		Args: exactArgs(2),
		RunE: a.jobStatusRunE((*client.Client).Cancel),
	}
}

func (a *app) jobRetryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry ENDPOINT JOB",
		Short: "Queue a FAILED or TIMED_OUT job again",
		Long: `Queue job JOB on ENDPOINT again, with the same ID and input. Only a
job that ended FAILED or TIMED_OUT, and is still retained, can be retried.
Follow it with: ember job status ENDPOINT JOB.`,
		Args: exactArgs(2),
		RunE: a.jobStatusRunE((*client.Client).Retry),
	}
}

func (a *app) jobPurgeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "purge ENDPOINT",
		Short: "Cancel every queued job of an endpoint",
		Long: `Cancel every job waiting in ENDPOINT's queue (RunPod's purge-queue).
Running jobs go on; cancel them one by one with "ember job cancel".`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withEndpoint(cmd, args[0], func(ctx context.Context, c *client.Client, ep *client.Endpoint) error {
				res, err := c.PurgeQueue(ctx, ep.ID)
				if err != nil {
					return err
				}
				if a.jsonOut {
					return writeJSON(a.stdout, res.Raw)
				}
				_, err = fmt.Fprintf(a.stdout, "Cancelled %d queued job%s of endpoint %s (%s)\n", res.Removed, plural(res.Removed), ep.ID, ep.Name)
				return err
			})
		},
	}
}
