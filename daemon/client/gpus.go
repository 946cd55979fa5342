package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
)

// GPU is one of the daemon's GPUs (GET /v1/gpus).
type GPU struct {
	// Index is its position in the daemon's inventory (NVML order).
	Index            int    `json:"index"`
	UUID             string `json:"uuid"`
	Name             string `json:"name"`
	MemoryTotalBytes int64  `json:"memoryTotalBytes"`
	// Worker and EndpointID hold it; empty when it is free.
	Worker     string `json:"worker,omitempty"`
	EndpointID string `json:"endpointId,omitempty"`
	// Unhealthy is why the daemon took it out of placement.
	Unhealthy string `json:"unhealthy,omitempty"`
	// The live readings; nil when the daemon sent none (no NVML access,
	// or the reading failed: StatsError says why).
	UtilizationPercent *int   `json:"utilizationPercent,omitempty"`
	MemoryUsedBytes    *int64 `json:"memoryUsedBytes,omitempty"`
	TemperatureC       *int   `json:"temperatureC,omitempty"`
	StatsError         string `json:"statsError,omitempty"`

	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object.
func (g *GPU) UnmarshalJSON(b []byte) error {
	type plain GPU
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*g = GPU(p)
	g.Raw = bytes.Clone(b)
	return nil
}

// ListGPUs lists the daemon's GPUs with their holders, health and live
// readings.
func (c *Client) ListGPUs(ctx context.Context) ([]GPU, error) {
	var out struct {
		GPUs []GPU `json:"gpus"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/gpus", nil, nil, &out); err != nil {
		return nil, err
	}
	if out.GPUs == nil {
		out.GPUs = []GPU{}
	}
	return out.GPUs, nil
}
