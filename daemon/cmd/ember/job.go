package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/emberhq/ember/daemon/client"
)

func (a *app) runCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run ENDPOINT JSON",
		Short: "Run a job and wait for its output",
		Long: `Run a job on ENDPOINT (an ID or name) and wait until it finishes.

JSON is the job's input, or a full request body when it is an object with an
"input" key (to pass "webhook" or "policy" too). "-" reads it from stdin.

On COMPLETED the output is printed as JSON. On FAILED, CANCELLED or
TIMED_OUT the status and error go to stderr and ember exits with status 1.
--json prints the final status object instead of the output.`,
		Example: `  ember run echo '{"prompt": "hello"}'
  ember run echo '"just a string"'
  ember run echo - < request.json`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.requestBody(args[1])
			if err != nil {
				return err
			}
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
			st, err := c.Run(ctx, ep.ID, body, a.progressFunc())
			if err != nil {
				var we *client.WaitError
				if errors.As(err, &we) {
					// The job exists and may still finish; say how to find
					// out rather than leaving people to resubmit it.
					return fmt.Errorf("stopped waiting for job %s (last status %s): %w\nCheck on it with: ember status %s %s",
						we.Last.ID, we.Last.Status, a.explain(we.Err), args[0], we.Last.ID)
				}
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

// requestBody reads the JSON argument of "ember run" and wraps it as the
// job input unless it is already a full request body.
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

// progressFunc reports job state changes on a terminal, so that a job stuck
// in the queue behind a cold start does not look like a hung command.
func (a *app) progressFunc() func(*client.JobStatus) {
	if !a.progress {
		return nil
	}
	last := ""
	return func(st *client.JobStatus) {
		if st.Status != last && !st.Terminal() {
			fmt.Fprintf(a.stderr, "job %s: %s\n", st.ID, st.Status)
		}
		last = st.Status
	}
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status ENDPOINT JOB",
		Short: "Show a job's status",
		Long:  "Show the status of job JOB on ENDPOINT (an ID or name), without waiting.",
		Args:  exactArgs(2),
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
			st, err := c.Status(ctx, ep.ID, args[1])
			if err != nil {
				if client.IsNotFound(err) {
					return &hintError{msg: fmt.Sprintf("no job %q on endpoint %s", args[1], args[0]), err: err}
				}
				return err
			}
			if a.jsonOut {
				return writeJSON(a.stdout, st.Raw)
			}
			return writeJobStatus(a.stdout, st)
		},
	}
}
