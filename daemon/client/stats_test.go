package client

import (
	"context"
	"math"
	"net/http"
	"reflect"
	"testing"
)

// gatewayStats is GetEndpointStats as grpc-gateway writes it: protojson
// with EmitUnpopulated, int64 counters as strings, int32 as numbers.
const gatewayStats = `{"endpointId":"ep1","name":"echo","inQueue":3,"inProgress":1,` +
	`"finished":{"CANCELLED":"2","COMPLETED":"1520","FAILED":"4","TIMED_OUT":"0"},"retried":"1",` +
	`"workers":{"draining":0,"frozen":1,"idle":2,"initializing":0,"running":1,"throttled":0,"unhealthy":0},` +
	`"delay":{"count":"1527","sumSeconds":40.5,"p50Seconds":0.012,"p90Seconds":0.048,"p99Seconds":0.31},` +
	`"execution":{"count":"1524","sumSeconds":600,"p50Seconds":0.34,"p90Seconds":1.2,"p99Seconds":5.4},` +
	`"coldStart":{"count":"3","sumSeconds":6.3,"p50Seconds":2.1,"p90Seconds":2.1,"p99Seconds":2.1},` +
	`"revival":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":"NaN","p99Seconds":0},` +
	`"workersStarted":"3","workersRevived":"0","workersFrozen":"1","workersReclaimed":"0"}`

func TestEndpointStats(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/endpoints/{id}/stats", reply(200, gatewayStats))
	mux.Handle("GET /v1/endpoints/nope/stats", reply(404, `{"code":5,"message":"endpoint nope not found","details":[]}`))
	c, rec := serve(t, "k", mux)
	got, err := c.EndpointStats(context.Background(), "ep1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Raw) != gatewayStats {
		t.Errorf("Raw not kept: %s", got.Raw)
	}
	if p90 := got.Revival.P90Seconds; !math.IsNaN(p90) {
		t.Errorf("revival p90 = %v, want NaN", p90)
	}
	got.Raw, got.Revival.P90Seconds = nil, 0
	want := EndpointStats{
		EndpointID: "ep1", Name: "echo", InQueue: 3, InProgress: 1,
		Finished:       map[string]int64{"CANCELLED": 2, "COMPLETED": 1520, "FAILED": 4, "TIMED_OUT": 0},
		Retried:        1,
		Workers:        map[string]int{"draining": 0, "frozen": 1, "idle": 2, "initializing": 0, "running": 1, "throttled": 0, "unhealthy": 0},
		Delay:          DurationSummary{Count: 1527, SumSeconds: 40.5, P50Seconds: 0.012, P90Seconds: 0.048, P99Seconds: 0.31},
		Execution:      DurationSummary{Count: 1524, SumSeconds: 600, P50Seconds: 0.34, P90Seconds: 1.2, P99Seconds: 5.4},
		ColdStart:      DurationSummary{Count: 3, SumSeconds: 6.3, P50Seconds: 2.1, P90Seconds: 2.1, P99Seconds: 2.1},
		WorkersStarted: 3, WorkersFrozen: 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EndpointStats() = %+v\nwant %+v", got, want)
	}
	if p := rec.requests()[0].Path; p != "/v1/endpoints/ep1/stats" {
		t.Errorf("path = %s", p)
	}

	_, err = c.EndpointStats(context.Background(), "nope")
	if !IsNotFound(err) {
		t.Errorf("unknown endpoint: error = %v, want not found", err)
	}
}
