package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/emberhq/ember/daemon/client"
)

// writeJSON prints a JSON value indented by two spaces with a trailing
// newline. Every --json output goes through here so that machine output has
// one consistent shape: one indented object per invocation.
func writeJSON(w io.Writer, raw []byte) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("null")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("formatting JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// marshalJSON encodes v for writeJSON.
func marshalJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	return writeJSON(w, b)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeEndpoints prints the endpoint table in the daemon's order (creation
// time), the same order as --json.
func writeEndpoints(w io.Writer, eps []client.Endpoint) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tWORKERS\tIDLE\tSCALER\tGPUS\tIMAGE/COMMAND")
	for _, e := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n",
			cell(e.ID), cell(e.Name), e.WorkersMin, e.WorkersMax,
			formatDuration(time.Duration(e.IdleTimeout)*time.Second),
			scalerCell(e), gpuCell(e), imageCommandCell(e))
	}
	return tw.Flush()
}

func scalerCell(e client.Endpoint) string {
	if e.ScalerType == "" {
		return "-"
	}
	return cell(e.ScalerType) + ":" + strconv.Itoa(e.ScalerValue)
}

func gpuCell(e client.Endpoint) string {
	if e.GPUCount == 0 {
		return "-"
	}
	s := strconv.Itoa(e.GPUCount)
	if len(e.GPUTypes) > 0 {
		s += " (" + cell(strings.Join(e.GPUTypes, ",")) + ")"
	}
	return s
}

// imageCommandCell shows what a worker runs, in the same "IMAGE -- COMMAND"
// shape that "ember endpoint create" takes it in.
func imageCommandCell(e client.Endpoint) string {
	var parts []string
	if e.Image != "" {
		parts = append(parts, cell(e.Image))
	}
	if len(e.Command) > 0 {
		if e.Image != "" {
			parts = append(parts, "--")
		}
		for _, arg := range e.Command {
			parts = append(parts, quoteArg(arg))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// quoteArg quotes an argument only when it would otherwise be ambiguous, so
// common commands stay readable.
func quoteArg(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '\'' || r == '\\' || r == 0x7f
	}) {
		return strconv.Quote(s)
	}
	return s
}

// cell keeps tabs and newlines in daemon-supplied strings from breaking the
// table's columns.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// formatDuration prints whole minutes and hours without the trailing zero
// units of time.Duration.String ("5m" rather than "5m0s").
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// formatMs prints a RunPod millisecond count; 0 means "not measured yet".
func formatMs(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return formatDuration(time.Duration(ms) * time.Millisecond)
}

// writeJobStatus prints a job's status as a one-row table followed by its
// output or error, which are too large for a column.
func writeJobStatus(w io.Writer, st *client.JobStatus) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATUS\tDELAY\tEXECUTION\tWORKER")
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(st.ID), cell(st.Status),
		formatMs(st.DelayTime), formatMs(st.ExecutionTime), cell(st.WorkerID))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Output) > 0 && string(st.Output) != "null" {
		if _, err := io.WriteString(w, "\nOUTPUT\n"); err != nil {
			return err
		}
		if err := writeJSON(w, st.Output); err != nil {
			return err
		}
	}
	if st.Error != "" {
		if _, err := fmt.Fprintf(w, "\nERROR\n%s\n", strings.TrimRight(st.Error, "\n")); err != nil {
			return err
		}
	}
	return nil
}
