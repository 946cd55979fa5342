package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// WorkerStates are the keys of EndpointStats.Workers, in lifecycle order.
// "throttled" counts workers the endpoint wants but cannot place (no free
// GPU); the others count live workers.
var WorkerStates = []string{"initializing", "idle", "running", "draining", "frozen", "parked", "unhealthy", "throttled"}

// DurationSummary summarises durations: the quantiles are over the most
// recent samples (1024), Count and SumSeconds are since the daemon started.
// Count is 0 when nothing was measured yet, and then the quantiles mean
// nothing.
type DurationSummary struct {
	Count      int64   `json:"count"`
	SumSeconds float64 `json:"sumSeconds"`
	P50Seconds float64 `json:"p50Seconds"`
	P90Seconds float64 `json:"p90Seconds"`
	P99Seconds float64 `json:"p99Seconds"`
}

// UnmarshalJSON accepts the protojson forms: int64 as a string, and doubles
// as numbers or as "NaN" and "Infinity".
func (d *DurationSummary) UnmarshalJSON(b []byte) error {
	var aux struct {
		Count      flexInt   `json:"count"`
		SumSeconds flexFloat `json:"sumSeconds"`
		P50Seconds flexFloat `json:"p50Seconds"`
		P90Seconds flexFloat `json:"p90Seconds"`
		P99Seconds flexFloat `json:"p99Seconds"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*d = DurationSummary{
		Count:      int64(aux.Count),
		SumSeconds: float64(aux.SumSeconds),
		P50Seconds: float64(aux.P50Seconds),
		P90Seconds: float64(aux.P90Seconds),
		P99Seconds: float64(aux.P99Seconds),
	}
	return nil
}

// EndpointStats are an endpoint's metrics as the daemon reports them
// (GET /v1/endpoints/{id}/stats): counters since the daemon started, the
// jobs and workers now, and duration summaries.
type EndpointStats struct {
	EndpointID string `json:"endpointId"`
	Name       string `json:"name"`
	// InQueue and InProgress are the jobs now.
	InQueue    int `json:"inQueue"`
	InProgress int `json:"inProgress"`
	// Finished counts terminal jobs by status (StatusCompleted,
	// StatusFailed, StatusTimedOut, StatusCancelled).
	Finished map[string]int64 `json:"finished"`
	// Retried counts jobs put back in the queue: their worker was lost,
	// or a /retry.
	Retried int64 `json:"retried"`
	// Workers counts workers now by state (see WorkerStates).
	Workers map[string]int `json:"workers"`
	// Delay is submission to take; Execution is take to the terminal
	// state; ColdStart is a new worker's start to its first job-take or
	// ping; Revival is a frozen worker's revival until it runs again.
	Delay     DurationSummary `json:"delay"`
	Execution DurationSummary `json:"execution"`
	ColdStart DurationSummary `json:"coldStart"`
	Revival   DurationSummary `json:"revival"`
	// Worker lifecycle events.
	WorkersStarted   int64 `json:"workersStarted"`
	WorkersRevived   int64 `json:"workersRevived"`
	WorkersFrozen    int64 `json:"workersFrozen"`
	WorkersReclaimed int64 `json:"workersReclaimed"`
	// GPU parking: parks done, the time each took, and the host memory
	// the endpoint's parked workers hold now.
	WorkersParked int64           `json:"workersParked"`
	Park          DurationSummary `json:"park"`
	ParkedBytes   int64           `json:"parkedBytes"`

	// Raw is the object exactly as the daemon sent it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the gateway's protojson, where int64 values (the
// counters) are strings, and keeps the raw object.
func (s *EndpointStats) UnmarshalJSON(b []byte) error {
	var aux struct {
		EndpointID       string             `json:"endpointId"`
		Name             string             `json:"name"`
		InQueue          flexInt            `json:"inQueue"`
		InProgress       flexInt            `json:"inProgress"`
		Finished         map[string]flexInt `json:"finished"`
		Retried          flexInt            `json:"retried"`
		Workers          map[string]flexInt `json:"workers"`
		Delay            DurationSummary    `json:"delay"`
		Execution        DurationSummary    `json:"execution"`
		ColdStart        DurationSummary    `json:"coldStart"`
		Revival          DurationSummary    `json:"revival"`
		WorkersStarted   flexInt            `json:"workersStarted"`
		WorkersRevived   flexInt            `json:"workersRevived"`
		WorkersFrozen    flexInt            `json:"workersFrozen"`
		WorkersReclaimed flexInt            `json:"workersReclaimed"`
		WorkersParked    flexInt            `json:"workersParked"`
		Park             DurationSummary    `json:"park"`
		ParkedBytes      flexInt            `json:"parkedBytes"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*s = EndpointStats{
		EndpointID:       aux.EndpointID,
		Name:             aux.Name,
		InQueue:          int(aux.InQueue),
		InProgress:       int(aux.InProgress),
		Finished:         make(map[string]int64, len(aux.Finished)),
		Retried:          int64(aux.Retried),
		Workers:          make(map[string]int, len(aux.Workers)),
		Delay:            aux.Delay,
		Execution:        aux.Execution,
		ColdStart:        aux.ColdStart,
		Revival:          aux.Revival,
		WorkersStarted:   int64(aux.WorkersStarted),
		WorkersRevived:   int64(aux.WorkersRevived),
		WorkersFrozen:    int64(aux.WorkersFrozen),
		WorkersReclaimed: int64(aux.WorkersReclaimed),
		WorkersParked:    int64(aux.WorkersParked),
		Park:             aux.Park,
		ParkedBytes:      int64(aux.ParkedBytes),
		Raw:              bytes.Clone(b),
	}
	for k, v := range aux.Finished {
		s.Finished[k] = int64(v)
	}
	for k, v := range aux.Workers {
		s.Workers[k] = int(v)
	}
	return nil
}

// EndpointStats fetches the metrics of one endpoint by ID. Use
// ResolveEndpoint first to accept names as well.
func (c *Client) EndpointStats(ctx context.Context, id string) (EndpointStats, error) {
	var st EndpointStats
	if _, err := c.do(ctx, http.MethodGet, endpointPath(id)+"/stats", nil, nil, &st); err != nil {
		return EndpointStats{}, fmt.Errorf("getting stats of endpoint %q: %w", id, err)
	}
	return st, nil
}

// flexFloat decodes a float written as a JSON number, a JSON string (the
// protojson form of NaN and the infinities) or null.
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if s == "null" {
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "":
			*f = 0
			return nil
		case "NaN":
			*f = flexFloat(math.NaN())
			return nil
		case "Infinity":
			*f = flexFloat(math.Inf(1))
			return nil
		case "-Infinity":
			*f = flexFloat(math.Inf(-1))
			return nil
		}
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", b)
	}
	*f = flexFloat(x)
	return nil
}
