package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
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

// printList prints a listing: with --json the items as the daemon sent them
// (raw gives each one's JSON), as {"<key>": [...]}; otherwise the table that
// write draws, or the hint none on stderr when there are no items. The key is
// printed even for no items, so that `jq '.<key>[]'` always works.
func printList[T any](a *app, key string, items []T, raw func(T) json.RawMessage, write func(io.Writer, []T) error, none string) error {
	if a.jsonOut {
		raws := make([]json.RawMessage, len(items))
		for i, item := range items {
			raws[i] = raw(item)
		}
		return marshalJSON(a.stdout, map[string][]json.RawMessage{key: raws})
	}
	if len(items) == 0 {
		fmt.Fprintln(a.stderr, none)
		return nil
	}
	return write(a.stdout, items)
}

// fieldWriter prints one object a field per line: a name, then its values
// one per line (the name on the first only), "-" when it has none.
type fieldWriter struct{ *tabwriter.Writer }

func newFieldWriter(w io.Writer) fieldWriter { return fieldWriter{newTable(w)} }

func (fw fieldWriter) row(key string, values ...string) {
	if len(values) == 0 {
		values = []string{"-"}
	}
	for i, v := range values {
		if i > 0 {
			key = ""
		}
		fmt.Fprintf(fw, "%s\t%s\n", key, v)
	}
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

// cells is cell of each string.
func cells(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = cell(v)
	}
	return out
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

// writeEndpointDetail prints one endpoint, a field per line.
func writeEndpointDetail(w io.Writer, e *client.Endpoint) error {
	fw := newFieldWriter(w)
	row := fw.row
	orNone := func(n int, none, unit string) string {
		if n == 0 {
			return none
		}
		return strconv.Itoa(n) + unit
	}
	seconds := func(n int) string {
		if n == 0 {
			return "-" // a daemon that predates the field
		}
		return formatDuration(time.Duration(n) * time.Second)
	}
	env := make([]string, 0, len(e.Env))
	for _, k := range slices.Sorted(maps.Keys(e.Env)) {
		env = append(env, cell(k+"="+e.Env[k]))
	}
	gpuTypes := []string{"any"}
	if len(e.GPUTypes) > 0 {
		gpuTypes = cells(e.GPUTypes)
	}
	cpus := "no limit"
	if e.CPUs > 0 {
		cpus = strconv.FormatFloat(e.CPUs, 'f', -1, 64)
	}
	flashboot := "off"
	if e.Flashboot {
		flashboot = "on"
	}
	row("ID:", cell(e.ID))
	row("Name:", cell(e.Name))
	row("Image:", cell(e.Image))
	row("Command:", argv(e.Command))
	row("Env:", env...)
	row("Workers:", fmt.Sprintf("min %d, max %d", e.WorkersMin, e.WorkersMax))
	row("Idle timeout:", formatDuration(time.Duration(e.IdleTimeout)*time.Second))
	row("Execution timeout:", formatMs(e.ExecutionTimeoutMs))
	row("Scaler:", scalerCell(*e))
	row("GPUs:", strconv.Itoa(e.GPUCount))
	row("GPU types:", gpuTypes...)
	row("GPU memory:", orNone(e.GPUMemoryMB, "any", " MiB free per GPU"))
	row("Memory:", orNone(e.MemoryMB, "no limit", " MiB"))
	row("CPUs:", cpus)
	row("Pids limit:", orNone(e.PidsLimit, "no limit", ""))
	row("Network:", cell(e.Network))
	row("Init timeout:", seconds(e.InitTimeout))
	initCell := "on (ember-init is PID 1)"
	if !e.Init {
		initCell = "off (the entrypoint is PID 1)"
	}
	row("Init:", initCell)
	row("FlashBoot:", flashboot)
	row("FlashBoot window:", seconds(e.FlashbootWindow))
	if e.GPUPark != "" {
		park := cell(e.GPUPark)
		if e.GPUPark == "idle" {
			park += " (after " + formatDuration(time.Duration(e.GPUParkDelay)*time.Second) + " frozen)"
		}
		row("GPU park:", park)
	}
	row("Max attempts:", orNone(e.MaxAttempts, "daemon default (--max-attempts)", ""))
	if e.Generation > 0 {
		row("Generation:", strconv.FormatInt(e.Generation, 10))
	}
	if e.Template != "" {
		row("Template:", fmt.Sprintf("%s (version %d)", cell(e.Template), e.TemplateVersion))
	}
	row("Created:", formatTime(e.CreatedAt))
	row("Updated:", formatTime(e.UpdatedAt))
	return fw.Flush()
}

// writeStats prints one row of metrics per endpoint. The duration columns
// are p50/p90/p99 in milliseconds.
func writeStats(w io.Writer, sts []client.EndpointStats) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tQUEUE\tIN_PROGRESS\tCOMPLETED\tFAILED\tTIMED_OUT\tCANCELLED\tWORKERS\tDELAY_MS\tEXECUTION_MS\tCOLD_START_MS\tREVIVAL_MS")
	for _, st := range sts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n",
			cell(st.EndpointID), cell(st.Name), st.InQueue, st.InProgress,
			st.Finished[client.StatusCompleted], st.Finished[client.StatusFailed],
			st.Finished[client.StatusTimedOut], st.Finished[client.StatusCancelled],
			workersCell(st.Workers)+parkedCell(st.ParkedBytes), quantilesCell(st.Delay), quantilesCell(st.Execution),
			quantilesCell(st.ColdStart), quantilesCell(st.Revival))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, "*_MS: p50/p90/p99 in milliseconds over the last 1024 samples; -: no sample yet\n")
	return err
}

// workersCell lists the states that have workers, in lifecycle order, then
// any state this client does not know.
func workersCell(ws map[string]int) string {
	var parts []string
	for _, s := range client.WorkerStates {
		if n := ws[s]; n != 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	for _, s := range slices.Sorted(maps.Keys(ws)) {
		if n := ws[s]; n != 0 && !slices.Contains(client.WorkerStates, s) {
			parts = append(parts, fmt.Sprintf("%d %s", n, cell(s)))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// parkedCell follows the workers cell with the host memory parked
// workers hold, if any.
func parkedCell(n int64) string {
	if n <= 0 {
		return ""
	}
	return " (" + formatBytes(n) + " parked)"
}

// quantilesCell shows p50/p90/p99 in milliseconds, "-" without samples.
func quantilesCell(d client.DurationSummary) string {
	if d.Count == 0 {
		return "-"
	}
	return formatMillis(d.P50Seconds) + "/" + formatMillis(d.P90Seconds) + "/" + formatMillis(d.P99Seconds)
}

// formatMillis prints seconds as milliseconds: whole from 10 ms up, with one
// decimal below ("0.4", "2.5").
func formatMillis(sec float64) string {
	ms := sec * 1000
	switch {
	case math.IsNaN(ms) || math.IsInf(ms, 0):
		return "?"
	case ms >= 10:
		return strconv.FormatFloat(math.Round(ms), 'f', 0, 64)
	}
	return strconv.FormatFloat(math.Round(ms*10)/10, 'f', -1, 64)
}
